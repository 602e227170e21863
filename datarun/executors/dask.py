"""Dask and Slurm/PBS/SGE/LSF hosts: datarun tasks on an existing distributed engine.

A `dask` host is a Dask scheduler (`scheduler = "tcp://..."` or `"tls://..."`); a
`slurm` (`pbs`, `sge`, `lsf`) host is a queue, whose worker jobs dask-jobqueue starts
when tasks are queued and ends when none are left (adaptive), with the scheduler inside
the dispatcher's own process. Both run one Dask task per datarun task: the harness's
`daskjob.run_task` on a worker, through that worker's runner (the same sandbox, limits,
measurement and error kinds as on any host), returning the result files as bytes with
their SHA-256. Here those files are checked (sizes, digests) and written to the sync's
result folder, where the collector reads them exactly as it reads an SSH host's.

What the dispatcher counts, not Dask: the scheduler's `allowed-failures` is set to 0, so
a worker that dies under a task fails that task's future (`KilledWorker`) instead of Dask
running it again quietly; the poll reports it `lost` and the dispatcher re-queues it (a
host loss, `host_lost` after `--max-attempts`). A scheduler that dies loses every future:
they are all reported lost the same way. Each future is also published on the scheduler
under the task's key, so a dispatcher that stops (a cron `dispatch` pass) leaves its tasks
running, and the next one collects them; were the scheduler restarted meanwhile, they are
missing there and re-queued. Results are taken only with their attempt's nonce, so
nothing is ever counted twice.

This module is the task side: submitting, waiting, fetching results, cancelling.
Reaching and checking the cluster, and asking its workers (`host check`, `status`), is
daskconnect.py's; a batch queue's cluster is jobqueue.py's. One sync is one round trip with the scheduler, however many
tasks it carries (see `sync`).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import time
from pathlib import Path
from typing import Any

from datarun.errors import HostError
from datarun.executors.base import PollReport, SyncResult, TaskPoll
from datarun.executors.daskconnect import (
    MAX_RESULT_FILE,
    THREADS_EVERY,
    DaskConnection,
    bundle_files,
    folder_archive,
    harness_archive,
    one_line,
    worker_code,
)
from datarun.remote.common import failed_result


class DaskExecutor(DaskConnection):
    """A Dask scheduler as one host: `slots` tasks at once across its workers."""

    # --- what the dispatcher asks -----------------------------------------------------

    def _harness(self):
        digest, blob = harness_archive()
        if self.harness_future is None:
            self.harness_future = self._hold(blob)
        return digest, self.harness_future

    def _hold(self, blob: bytes):
        """Bytes every task may need, held on the cluster once for this run: the first worker
        that needs them gets them from the scheduler, the others from a peer. (Not a
        `scatter`: that needs a worker now, and a batch queue has none until tasks wait.)"""
        return self.client.submit(worker_code().identity, blob, pure=False, retries=0)

    def prepare(self, data: dict[str, Path]) -> None:
        self._client()
        try:
            self._harness()
            for digest, folder in data.items():
                if self.shared is None and digest not in self.data_futures:
                    self.data_futures[digest] = self._hold(folder_archive(Path(folder)))
        except Exception as error:
            raise HostError(f"host {self.host.name}: could not send the data to the Dask scheduler "
                            f"at {self.address}: {one_line(error)}") from None

    def launch(self, bundles: list[Path]) -> dict[str, str]:
        published = self._submit(bundles)
        if published:
            self.client.publish_dataset(**published, override=True)
        return {}

    def _dataset_name(self, key: str) -> str:
        return f"datarun-{self.space}-{key}"

    def _submit(self, bundles: list[Path]) -> dict[str, Any]:
        """Submit one Dask task per bundle; what to publish under the tasks' names (the
        caller publishes them in its one round with the scheduler)."""
        if not bundles:
            return {}
        daskboot = worker_code()
        client = self._client()
        digest, harness = self._harness()
        published = {}
        for bundle in bundles:
            key = bundle.name
            files = bundle_files(bundle)
            spec = json.loads(files["task.json"])
            data = spec["data"]
            self.nonces[key] = spec.get("nonce")
            data_future = self.data_futures.get(data)
            worker = self._pick_worker()
            where: dict[str, Any] = {"workers": [worker], "allow_other_workers": True} if worker else {}
            future = client.submit(
                daskboot.run_task, harness, digest, self.host.workdir, self.space, key, files, data,
                data_future, self.shared, self.host.threads, self._python(),
                key=self._dataset_name(key), pure=False, retries=0, **where)
            self._hold_future(key, future)
            if worker:
                self.placed[key] = worker
            published[self._dataset_name(key)] = future
        return published

    def _pick_worker(self) -> str | None:
        """The worker for the next task: the one holding the fewest of this host's tasks for
        its threads, if it holds fewer than twice its threads (a task running per thread
        and one waiting in its runner's inbox); None: let the scheduler choose.

        A task hands its worker thread back once it is in the runner's inbox (see daskboot's
        `run_task`), so the scheduler counts it as no load there and, left to itself, may pile
        a host's tasks on one worker (the one holding the harness and the data, first of
        all) while another has none. If that worker has gone meanwhile, the scheduler sends
        the task elsewhere (the choice is loose)."""
        if not self.worker_threads:
            return None
        held: dict[str, int] = {}
        for key in self.futures:
            worker = self.placed.get(key)
            if worker is not None:
                held[worker] = held.get(worker, 0) + 1
        load, worker = min((held.get(address, 0) / threads, address)
                           for address, threads in self.worker_threads.items())
        return worker if load < 2 else None

    def _hold_future(self, key: str, future: Any) -> None:
        self.futures[key] = future
        future.add_done_callback(self._one_done)

    def _one_done(self, _future: Any) -> None:
        self.done.set()

    def _python(self) -> str | None:
        return None if self.host.python in ("python3", "") else self.host.python

    def sync(self, bundles: list[Path], cleanup: list[str], poll: list[str], dest: Path,
             wait: float = 0.0) -> SyncResult:
        """One round with the scheduler, however many tasks: the new tasks submitted (their
        messages go out on Dask's batched stream, unanswered), then their names published,
        the finished tasks' names removed and every finished result fetched, all at once
        (one round trip); with nothing to ship and nothing finished, first a wait of up to
        `wait` seconds for any task to end."""
        self.bundles_sent = False
        try:
            self._client()
        except HostError:
            if not self.futures:
                raise
            # Scheduler gone: its tasks are lost; report them so, and fail the sync for the rest.
        published: dict[str, Any] = {}
        if self.client is not None:
            self.bundles_sent = True
            try:
                published = self._submit(bundles)
            except Exception as error:
                raise HostError(f"host {self.host.name}: could not submit tasks to the Dask scheduler "
                                f"at {self.address}: {one_line(error)}") from None
        published = {**self.publish_later, **published}
        self.publish_later = {}
        unpublish = self._forget(cleanup) + self.unpublish_later
        self.unpublish_later = []
        self._adopt(poll)
        if wait and not bundles and self.client is not None:
            self._wait_for_one(poll, wait)
        finished = [key for key in poll if key in self.futures and self.futures[key].status == "finished"]
        results = self._round(published, unpublish, finished) if self.client is not None else {}
        report = PollReport(runner_alive=True, now=time.time())
        fetched = []
        for key in poll:
            state = self._poll_one(key, dest, results)
            report.tasks[key] = state
            if state.state == "finished":
                fetched.append(key)
        return SyncResult(poll=report, fetched=fetched,
                          slots=self.threads if self.host.slots_from_workers else None)

    def _wait_for_one(self, keys: list[str], wait: float) -> None:
        """Sleep until one of these tasks ends (or `wait` seconds), if none has yet. The event
        is cleared before the futures are looked at, so an end in between still wakes it."""
        self.done.clear()
        known = [self.futures[key] for key in keys if key in self.futures]
        if known and all(future.status == "pending" for future in known):
            self.done.wait(wait)

    def _round(self, publish: dict[str, Any], unpublish: list[str], finished: list[str]) -> dict[str, Any]:
        """Fetch the finished tasks' results in one round trip: {key: the worker's answer}
        (a key missing: fetch it alone, as `_state_of` does). The names published and
        unpublished go in the same moment but are not waited for: the next round (or
        `close`) reads how that went, and publishes again what failed."""
        client = self.client
        futures = [self.futures[key] for key in finished]
        self._settle_names()
        if publish or unpublish:
            async def names():
                calls = []
                if publish:
                    calls.append(client.publish_dataset(override=True, asynchronous=True, **publish))
                if unpublish:
                    calls.append(client.unpublish_dataset(unpublish, asynchronous=True))
                return await asyncio.gather(*calls, return_exceptions=True)

            job = asyncio.run_coroutine_threadsafe(names(), client.loop.asyncio_loop)
            self.names_in_flight.append((job, publish))
        # The workers and their threads (where tasks go, and the slots of a host without
        # `slots`): asked again every THREADS_EVERY seconds (workers come and go).
        ask = time.monotonic() - self.threads_asked > THREADS_EVERY
        if not (ask or futures):
            return {}

        async def together():
            calls = []
            if ask:
                calls.append(client.nthreads(asynchronous=True))
            if futures:
                calls.append(client.gather(futures, asynchronous=True))
            return await asyncio.gather(*calls, return_exceptions=True)

        try:
            outcomes = client.sync(together, callback_timeout=self.host.command_timeout)
        except Exception as error:
            outcomes = [error] * (ask + bool(futures))
        if ask:
            threads, outcomes = outcomes[0], outcomes[1:]
            self.note_workers(threads)
        answers = outcomes[-1] if futures else None
        if isinstance(answers, list) and len(answers) == len(finished):
            return dict(zip(finished, answers, strict=True))
        return {}

    def _adopt(self, keys: list[str]) -> None:
        """Futures published by an earlier dispatcher, for keys this one has not submitted."""
        wanted = [key for key in keys if key not in self.futures]
        if not wanted or self.client is None:
            return
        try:
            names = set(self.client.list_datasets())
        except Exception:
            return
        for key in wanted:
            if self._dataset_name(key) in names:
                try:
                    self._hold_future(key, self.client.get_dataset(self._dataset_name(key)))
                except Exception:
                    continue

    def _poll_one(self, key: str, dest: Path, results: dict[str, Any] | None = None) -> TaskPoll:
        answer = self._state_of(key, dest, results or {})
        if answer.state == "lost":  # reported once; the next poll finds no trace of it
            self.unpublish_later += self._forget([key])
        return answer

    def _state_of(self, key: str, dest: Path, results: dict[str, Any]) -> TaskPoll:
        future = self.futures.get(key)
        if future is None:
            return TaskPoll(state="missing")
        status = future.status
        if status == "pending":
            if self.client is None:
                return TaskPoll(state="lost", reason=f"the Dask scheduler of host {self.host.name} "
                                                     "went away while the task ran")
            return TaskPoll(state="running", heartbeat=time.time())
        if status == "finished":
            try:
                answer = results[key] if key in results else future.result(timeout=self.host.command_timeout)
                self._write_result(key, answer, dest / key)
            except Exception as error:
                self._write_failure(key, dest / key, "harness_error",
                                    f"the task failed on host {self.host.name}: {one_line(error)}")
            return TaskPoll(state="finished")
        if status == "cancelled" and key in self.cancelled:
            self._write_failure(key, dest / key, "cancelled", "cancelled by the organiser")
            return TaskPoll(state="finished")
        if status == "cancelled":
            return TaskPoll(state="lost", reason=f"the Dask scheduler of host {self.host.name} lost "
                                                 "the task (it was restarted, or lost this client)")
        raised = future.exception(timeout=self.host.command_timeout) if status == "error" else None
        if type(raised).__name__ == "KilledWorker":
            worker = getattr(getattr(raised, "last_worker", None), "address", None)
            self.worker_threads.pop(worker or "", None)  # no more tasks sent there
            return TaskPoll(state="lost", reason=f"the Dask worker {worker or ''} of host "
                                                 f"{self.host.name} died while running the task".replace("  ", " "))
        self._write_failure(key, dest / key, "harness_error",
                            f"the task failed on host {self.host.name}: {one_line(raised or RuntimeError(status))}")
        return TaskPoll(state="finished")

    def _write_result(self, key: str, answer: Any, folder: Path) -> None:
        """Check the result files the worker sent (plain bytes, with their digests) and write them."""
        if isinstance(answer, dict) and isinstance(answer.get("error"), str):
            raise ValueError(f"the harness on the worker failed: {answer['error'][:2000]}")
        if not isinstance(answer, dict) or not isinstance(answer.get("files"), dict):
            raise ValueError("the worker's answer is not a dict of files")
        folder.mkdir(parents=True, exist_ok=True)
        for name, value in answer["files"].items():
            if (not isinstance(name, str) or "/" in name or name.startswith(".")
                    or not isinstance(value, list | tuple) or len(value) != 2):
                raise ValueError(f"bad result file entry {name!r}")
            content, digest = value
            if not isinstance(content, bytes) or len(content) > MAX_RESULT_FILE:
                raise ValueError(f"result file {name} is not bytes within {MAX_RESULT_FILE} bytes")
            if hashlib.sha256(content).hexdigest() != digest:
                raise ValueError(f"result file {name} arrived damaged (its SHA-256 differs)")
            (folder / name).write_bytes(content)

    def _write_failure(self, key: str, folder: Path, kind: str, error: str) -> None:
        """A result for a task that failed before the harness could write one (the nonce is
        the attempt's own: this machine sent it)."""
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True, exist_ok=True)
        result = dict(failed_result(key, kind, error), nonce=self.nonces.get(key))
        (folder / "result.json").write_text(json.dumps(result))
        (folder / "output.log").write_text("")

    def poll(self, keys: list[str]) -> PollReport:
        report = PollReport(runner_alive=True, now=time.time())
        self._adopt(keys)
        for key in keys:
            future = self.futures.get(key)
            if future is None:
                report.tasks[key] = TaskPoll(state="missing")
            elif future.status == "pending":
                report.tasks[key] = TaskPoll(state="running", heartbeat=time.time())
            else:
                report.tasks[key] = TaskPoll(state="finished")
        return report

    def fetch(self, keys: list[str], dest: Path) -> list[str]:
        fetched = []
        for key in keys:
            if key in self.futures and self._poll_one(key, dest).state == "finished":
                fetched.append(key)
        return fetched

    def cleanup(self, keys: list[str]) -> None:
        """Forget finished tasks: their futures released, their published names removed."""
        names = self._forget(keys)
        if names and self.client is not None:
            try:
                self.client.unpublish_dataset(names)
            except Exception:
                pass

    def _forget(self, keys: list[str]) -> list[str]:
        """Release these tasks' futures here; the names to unpublish on the scheduler."""
        names = []
        for key in keys:
            future = self.futures.pop(key, None)
            self.nonces.pop(key, None)
            self.placed.pop(key, None)
            self.cancelled.discard(key)
            names.append(self._dataset_name(key))
            if future is not None:
                try:
                    future.release()
                except Exception:
                    pass
        return names

    def cancel(self, keys: list[str]) -> None:
        """Kill the tasks' trees on the workers running them; the rest never start."""
        if not keys:
            return
        client = self._client()
        self._adopt(keys)
        digest, blob = harness_archive()
        try:
            found = self.on_workers(worker_code().call, blob, digest, self.host.workdir, "cancel", self.space,
                                    list(keys), client=client)
        except Exception as error:
            raise HostError(f"host {self.host.name}: could not reach its Dask workers to cancel: "
                            f"{one_line(error)}") from None
        running = {key for keys_there in found.values() if isinstance(keys_there, list) for key in keys_there}
        for key in keys:
            if key in running:
                continue  # its runner ends it as cancelled; the future returns that result
            future = self.futures.get(key)
            if future is not None:
                self.cancelled.add(key)
                client.cancel(future)

    def log(self, key: str) -> str:
        """The task's output so far, from the worker holding it (each is asked: the scheduler
        does not know which worker's runner has the task's folder)."""
        client = self._client()
        digest, blob = harness_archive()
        try:
            found = self.on_workers(worker_code().call, blob, digest, self.host.workdir, "log", self.space, key,
                                    client=client)
        except Exception as error:
            raise HostError(f"host {self.host.name}: could not reach its Dask workers for the task's "
                            f"output: {one_line(error)}") from None
        for answer in found.values():
            if isinstance(answer, dict) and isinstance(answer.get("log"), str):
                return answer["log"]
        return (f"(task {key} is on no worker of host {self.host.name} now: still on the scheduler, or "
                "just finished; its output comes with its result)")

    def setup_environment(self, requirements: list[str]) -> dict[str, Any]:
        raise HostError(f"host {self.host.name} is a {self.host.executor} host: datarun makes no "
                        "environment on its workers; install the problems' requirements in the "
                        "workers' Python environment")

    def usage(self) -> dict[str, Any]:
        """Workers keep no task folders between tasks: nothing of this workspace stays there."""
        return {"workdir": self.host.workdir, "workspace": {"id": self.space, "bytes": 0, "tasks": 0},
                "other_workspaces": 0, "other_bytes": 0, "shared_bytes": 0}

    def gpu_names(self) -> list[str]:
        return []

    def memory_floor(self) -> dict[str, Any] | None:
        """A cluster's workers run one datarun task per engine task, with no runner to run
        an empty task in: its floor is not measured, and the default floor applies."""
        return None

    def clean(self, keep: list[str], force: bool = False) -> dict[str, Any]:
        return {"removed": [], "running": [], "kept": [], "freed": 0}

    def sensitive(self, request: dict[str, Any]) -> dict[str, Any]:
        # A sensitive problem's data lives on its owner's server, reached over SSH (or this
        # machine); a cluster's workers hold no owner's store and send back what they ran.
        raise HostError(f"host {self.host.name} is a {self.host.executor} host: a sensitive problem's "
                        "hosts are its data owner's servers, SSH hosts of hosts.toml")
