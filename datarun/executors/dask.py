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
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import re
import shutil
import ssl
import subprocess
import tarfile
import threading
import time
from functools import cache
from pathlib import Path
from typing import Any

from datarun.errors import HostError
from datarun.executors.base import PollReport, SyncResult, TaskPoll
from datarun.executors.hosts import Host
from datarun.remote.common import Layout, failed_result

MAX_RESULT_FILE = 4 * 1024**3
# What every task imports on a worker ({module: the package to install}).
WORKER_PACKAGES = {"numpy": "numpy", "pandas": "pandas", "sklearn": "scikit-learn", "psutil": "psutil"}
THREADS_EVERY = 10.0  # seconds between asks of the workers' threads (hosts without `slots`)
CLUSTER_EXECUTORS = ("dask", "slurm", "pbs", "sge", "lsf")
JOBQUEUE_CLASSES = {"slurm": "SLURMCluster", "pbs": "PBSCluster", "sge": "SGECluster", "lsf": "LSFCluster"}
SUBMIT_COMMANDS = {"slurm": "sbatch", "pbs": "qsub", "sge": "qsub", "lsf": "bsub"}


def _distributed():
    try:
        import distributed
    except ImportError:
        raise HostError("Dask hosts need the `distributed` package on the organiser's machine: "
                        "pip install 'datarun[cluster]'") from None
    return distributed


@cache
def harness_archive() -> tuple[list[str], bytes]:
    """The harness as a tar of `datarun_remote/...`, and where a worker keeps it: its folder in
    the workdir (by its tree hash, as on SSH hosts) and the file that marks it whole."""
    from datarun.executors.ssh import HARNESS_PACKAGE, staged_harness

    digest, stage = staged_harness()
    place = [Layout("/").harness_copy(digest).relative_to("/").as_posix(), Layout.COMPLETE]
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.add(stage, arcname=HARNESS_PACKAGE)
    return place, buffer.getvalue()


def folder_archive(folder: Path) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for path in sorted(folder.rglob("*")):
            if path.is_file() and not path.is_symlink():
                tar.add(path, arcname=path.relative_to(folder).as_posix())
    return buffer.getvalue()


def bundle_files(folder: Path) -> dict[str, bytes]:
    return {path.relative_to(folder).as_posix(): path.read_bytes()
            for path in sorted(folder.rglob("*")) if path.is_file() and not path.is_symlink()}


def _ssl_reason(error: ssl.SSLError) -> str:
    """OpenSSL's reason, without the place in CPython's source it was raised at."""
    text = " ".join(str(error.args[-1] if error.args else error).split())
    return re.sub(r"\s*\(_ssl\.c:\d+\)$", "", text)


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


@cache
def _boot():
    """daskboot, sent to the workers by value: they need not have datarun installed."""
    import cloudpickle  # type: ignore[import-untyped]

    from datarun.executors import daskboot

    cloudpickle.register_pickle_by_value(daskboot)
    return daskboot


class DaskExecutor:
    """A Dask scheduler as one host: `slots` tasks at once across its workers."""

    def __init__(self, workspace, host: Host):
        self.host = host
        self.space = workspace.id if workspace is not None else "none"
        self.bundles_sent = False
        self.client: Any = None
        self.cluster: Any = None
        self.futures: dict[str, Any] = {}  # task key -> its future
        self.nonces: dict[str, str | None] = {}
        self.cancelled: set[str] = set()
        self.data_futures: dict[str, Any] = {}
        self.harness_future: Any = None
        # Set (on Dask's callback thread) whenever one of our futures ends: a sync with
        # nothing to ship sleeps on it instead of asking the scheduler again and again.
        self.done = threading.Event()
        self.unpublish_later: list[str] = []  # names of lost tasks, removed with the next round
        self.publish_later: dict[str, Any] = {}  # names whose publication failed, tried again
        self.threads: int | None = None  # the workers' threads in all, as last asked
        self.threads_asked = 0.0
        shared = host.data or ""
        self.shared = shared.removeprefix("shared:") if shared.startswith("shared:") else None

    # --- reaching the cluster -------------------------------------------------------

    @property
    def address(self) -> str:
        return self.host.scheduler or "(no scheduler)"

    def security(self):
        host = self.host
        if not (host.tls_ca or host.tls_cert or host.tls_key):
            return None
        from distributed.security import Security

        missing = [name for name in ("tls_ca", "tls_cert", "tls_key") if not getattr(host, name)]
        if missing:
            raise HostError(f"host {host.name}: TLS needs tls_ca, tls_cert and tls_key in hosts.toml "
                            f"(missing: {', '.join(missing)})")
        paths = {name: Path(getattr(host, name)).expanduser() for name in ("tls_ca", "tls_cert", "tls_key")}
        for name, path in paths.items():
            if not path.is_file():
                raise HostError(f"host {host.name}: {name} {path} is not a file")
            try:
                path.open("rb").close()
            except OSError as error:
                raise HostError(f"host {host.name}: {name} {path} cannot be read: {error.strerror}") from None
        # Said here, in one line, rather than as a failed handshake with the scheduler.
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        try:
            context.load_verify_locations(cafile=str(paths["tls_ca"]))
        except ssl.SSLError as error:
            raise HostError(f"host {host.name}: tls_ca {paths['tls_ca']} is not a PEM CA certificate: "
                            f"{_ssl_reason(error)}") from None
        try:
            context.load_cert_chain(str(paths["tls_cert"]), str(paths["tls_key"]))
        except ssl.SSLError as error:
            raise HostError(f"host {host.name}: tls_cert {paths['tls_cert']} and tls_key {paths['tls_key']} "
                            f"are not a PEM certificate and its private key: {_ssl_reason(error)}") from None
        return Security(tls_ca_file=str(Path(host.tls_ca).expanduser()),
                        tls_client_cert=str(Path(host.tls_cert).expanduser()),
                        tls_client_key=str(Path(host.tls_key).expanduser()), require_encryption=True)

    def connect(self) -> str | None:
        self._client()
        return None

    def _start_cluster(self):
        """The client of this host's scheduler (a `dask` host)."""
        distributed = _distributed()
        host = self.host
        if not host.scheduler:
            raise HostError(f"host {host.name}: a dask host needs scheduler = \"tcp://HOST:PORT\" in hosts.toml")
        if host.scheduler.startswith("tls://") and not host.tls_cert:
            raise HostError(f"host {host.name}: scheduler {host.scheduler} speaks TLS: give tls_ca, "
                            "tls_cert and tls_key in hosts.toml")
        try:
            return distributed.Client(host.scheduler, security=self.security(),
                                      timeout=host.connect_timeout, set_as_default=False)
        except HostError:
            raise
        except Exception as error:  # OSError, TimeoutError, CommClosedError, TypeError (TLS) ...
            raise HostError(f"host {host.name}: cannot reach the Dask scheduler at {host.scheduler}: "
                            f"{_one_line(error)}") from None

    def _client(self):
        if self.client is not None and self.client.status == "running":
            return self.client
        if self.client is not None:
            # The scheduler went away: every future it held is lost (reported by the next poll).
            self._drop_client()
        self.client = self._start_cluster()
        self._check_versions()
        try:
            self.client.run_on_scheduler(_boot().set_allowed_failures, 0)
        except Exception as error:
            self._drop_client()
            raise HostError(f"host {self.host.name}: the Dask scheduler at {self.address} refused a "
                            f"setting datarun needs (allowed-failures = 0): {_one_line(error)}") from None
        self._check_workers()
        return self.client

    def _check_workers(self) -> None:
        """Each worker there now has what every task needs, or the host takes no task: one
        line naming the worker and what to install or fix. (Workers that join later, a batch
        queue's, are the same job script's: `host check` asks them.)"""
        try:
            found = self.client.run(_boot().preflight, WORKER_PACKAGES, self.shared)
        except Exception as error:
            self._drop_client()
            raise HostError(f"host {self.host.name}: could not ask the Dask workers of {self.address} "
                            f"what they have: {_one_line(error)}") from None
        for address, problems in sorted(found.items()):
            if problems:
                self._drop_client()
                raise HostError(f"host {self.host.name}: the Dask worker {address}: {'; '.join(problems)}")

    def _check_versions(self) -> None:
        distributed = _distributed()
        try:
            versions = self.client.get_versions()
            theirs = (versions.get("scheduler") or {}).get("packages", {}).get("distributed")
        except Exception as error:
            self._drop_client()
            raise HostError(f"host {self.host.name}: the Dask scheduler at {self.address} did not say "
                            f"its version: {_one_line(error)}") from None
        if theirs != distributed.__version__:
            self._drop_client()
            raise HostError(f"host {self.host.name}: the Dask scheduler at {self.address} runs "
                            f"distributed {theirs}, this machine {distributed.__version__}: install the "
                            "same version on both")

    def _drop_client(self) -> None:
        client, self.client = self.client, None
        lost = {key: future for key, future in self.futures.items()}
        self.harness_future = None
        self.data_futures = {}
        self.publish_later = {}  # futures of that scheduler: nothing to publish on the next
        if client is not None:
            try:
                client.close(timeout=2)
            except Exception:
                pass
        # The futures of a lost client are kept so the next poll reports their tasks lost.
        self.futures = lost

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
        return self.client.submit(_boot().identity, blob, pure=False, retries=0)

    def prepare(self, data: dict[str, Path]) -> None:
        self._client()
        try:
            self._harness()
            for digest, folder in data.items():
                if self.shared is None and digest not in self.data_futures:
                    self.data_futures[digest] = self._hold(folder_archive(Path(folder)))
        except Exception as error:
            raise HostError(f"host {self.host.name}: could not send the data to the Dask scheduler "
                            f"at {self.address}: {_one_line(error)}") from None

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
        daskboot = _boot()
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
            future = client.submit(
                daskboot.run_task, harness, digest, self.host.workdir, self.space, key, files, data,
                data_future, self.shared, self.host.threads, self._python(),
                key=self._dataset_name(key), pure=False, retries=0)
            self._hold_future(key, future)
            published[self._dataset_name(key)] = future
        return published

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
                                f"at {self.address}: {_one_line(error)}") from None
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
        """Publish, unpublish and fetch results in one round trip: {key: the worker's answer}
        for the finished tasks fetched (a key missing: fetch it alone, as `_state_of` does)."""
        client = self.client
        futures = [self.futures[key] for key in finished]
        # A host without `slots` runs as many tasks as its workers have threads: asked with
        # the first round, then every THREADS_EVERY seconds (workers come and go).
        ask = self.host.slots_from_workers and time.monotonic() - self.threads_asked > THREADS_EVERY
        if not (ask or publish or unpublish or futures):
            return {}

        async def together():
            calls = []
            if ask:
                calls.append(client.nthreads(asynchronous=True))
            if publish:
                calls.append(client.publish_dataset(override=True, asynchronous=True, **publish))
            if unpublish:
                calls.append(client.unpublish_dataset(unpublish, asynchronous=True))
            if futures:
                calls.append(client.gather(futures, asynchronous=True))
            return await asyncio.gather(*calls, return_exceptions=True)

        try:
            outcomes = client.sync(together, callback_timeout=self.host.command_timeout)
        except Exception as error:
            outcomes = [error] * (ask + bool(publish) + bool(unpublish) + bool(futures))
        if ask:
            threads, outcomes = outcomes[0], outcomes[1:]
            if isinstance(threads, dict):
                self.threads_asked = time.monotonic()
                self.threads = sum(n for n in threads.values() if isinstance(n, int)) or None
        if publish and isinstance(outcomes[0], BaseException):
            # Not published, the tasks would not outlive this dispatcher: the sync fails, and
            # the next one publishes them again (their futures are held meanwhile).
            self.publish_later.update(publish)
            raise HostError(f"host {self.host.name}: could not submit tasks to the Dask scheduler "
                            f"at {self.address}: {_one_line(outcomes[0])}") from None
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
                                    f"the task failed on host {self.host.name}: {_one_line(error)}")
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
            return TaskPoll(state="lost", reason=f"the Dask worker {worker or ''} of host "
                                                 f"{self.host.name} died while running the task".replace("  ", " "))
        self._write_failure(key, dest / key, "harness_error",
                            f"the task failed on host {self.host.name}: {_one_line(raised or RuntimeError(status))}")
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
            found = client.run(_boot().call, blob, digest, self.host.workdir, "cancel", self.space, list(keys))
        except Exception as error:
            raise HostError(f"host {self.host.name}: could not reach its Dask workers to cancel: "
                            f"{_one_line(error)}") from None
        running = {key for keys_there in found.values() if isinstance(keys_there, list) for key in keys_there}
        for key in keys:
            if key in running:
                continue  # its runner ends it as cancelled; the future returns that result
            future = self.futures.get(key)
            if future is not None:
                self.cancelled.add(key)
                client.cancel(future)

    def log(self, key: str) -> str:
        return (f"(host {self.host.name} is a {self.host.executor} host: a task's output comes back "
                "with its result)")

    def worker_reports(self) -> dict[str, Any]:
        """`info` from every worker ({address: report}), and the scheduler's view of them."""
        client = self._client()
        digest, blob = harness_archive()
        return client.run(_boot().call, blob, digest, self.host.workdir, "info")

    def info(self) -> dict[str, Any]:
        reports = self.worker_reports()
        broken = {address: report for address, report in reports.items() if "error" in report}
        if not reports:
            raise HostError(f"host {self.host.name}: the Dask scheduler at {self.address} has no workers")
        usable = [report for report in reports.values() if "error" not in report]
        first = dict(usable[0]) if usable else {}
        first["workers"] = {address: broken[address] if address in broken else _worker_summary(report)
                            for address, report in sorted(reports.items())}
        first["cpus"] = sum(report.get("usable_cpus") or 0 for report in reports.values())
        first["memory"] = sum(report.get("memory") or 0 for report in reports.values())
        return first

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

    def clean(self, keep: list[str], force: bool = False) -> dict[str, Any]:
        return {"removed": [], "running": [], "kept": [], "freed": 0}

    def status(self) -> dict[str, Any]:
        """The workers and what the scheduler holds, for `datarun status`."""
        client = self._client()
        info = client.scheduler_info(n_workers=-1)
        workers = info.get("workers") or {}
        processing = client.processing()
        return {
            "scheduler": info.get("address"),
            "workers": [{"address": address, "name": str(worker.get("name")),
                         "threads": worker.get("nthreads"), "memory_limit": worker.get("memory_limit"),
                         "tasks": len(processing.get(address, ()))}
                        for address, worker in sorted(workers.items())],
            "tasks_on_scheduler": sum(len(v) for v in processing.values()),
        }

    def sensitive(self, request: dict[str, Any]) -> dict[str, Any]:
        # A sensitive problem's data lives on its owner's server, reached over SSH (or this
        # machine); a cluster's workers hold no owner's store and send back what they ran.
        raise HostError(f"host {self.host.name} is a {self.host.executor} host: a sensitive problem's "
                        "hosts are its data owner's servers, SSH hosts of hosts.toml")

    def close(self) -> None:
        client, self.client = self.client, None
        if client is not None:
            try:
                client.close(timeout=5)
            except Exception:
                pass
        cluster, self.cluster = self.cluster, None
        if cluster is not None:
            try:
                cluster.close(timeout=10)
            except Exception:
                pass


def _worker_summary(report: dict[str, Any]) -> dict[str, Any]:
    return {key: report.get(key) for key in ("hostname", "python", "usable_cpus", "memory", "gpus",
                                              "numpy", "sklearn", "harness", "missing", "worker_pid")} | {
        "sandbox": (report.get("sandbox") or {}).get("ok")}


def import_jobqueue():
    """dask_jobqueue, imported without the SIGINT handler it installs on import (a
    `sys.exit()` that would replace datarun's own Ctrl-C handling, and that fails outright
    off the main thread: hosts are checked and synced on threads of their own)."""
    import signal
    import sys

    if "dask_jobqueue" in sys.modules:
        return sys.modules["dask_jobqueue"]
    original = signal.signal
    signal.signal = lambda *_args, **_kwargs: None  # type: ignore[assignment]
    try:
        import dask_jobqueue
    finally:
        signal.signal = original
    return dask_jobqueue


class JobQueueExecutor(DaskExecutor):
    """A batch queue (Slurm, PBS, SGE, LSF) through dask-jobqueue: worker jobs started when
    tasks are queued and ended when none are left; the scheduler runs in this process."""

    @property
    def address(self) -> str:
        return f"{self.host.executor} queue {self.host.queue or '(default)'}"

    def preflight(self) -> None:
        """What dask-jobqueue would only log, in the background, for ever: said here in one line."""
        host = self.host
        command = SUBMIT_COMMANDS[host.executor]
        if shutil.which(command) is None:
            raise HostError(f"host {host.name}: `{command}` is not on PATH on this machine: install the "
                            f"{host.executor} client commands here, or fix PATH")
        if host.executor == "slurm":
            test = ["sbatch", "--test-only", "--wrap", "true"]
            if host.queue:
                test[2:2] = ["-p", host.queue]
            if host.account:
                test[2:2] = ["-A", host.account]
            try:
                done = subprocess.run(test, capture_output=True, text=True, timeout=host.connect_timeout + 5)
            except subprocess.TimeoutExpired:
                raise HostError(f"host {host.name}: `sbatch --test-only` did not answer within "
                                f"{host.connect_timeout + 5:.0f}s: is slurmctld running?") from None
            if done.returncode != 0:
                lines = [line for line in done.stderr.splitlines() if line.strip()]
                raise HostError(f"host {host.name}: Slurm refuses its jobs: "
                                f"{lines[-1].strip() if lines else 'sbatch --test-only failed'}; "
                                "check queue and account in hosts.toml")

    def _start_cluster(self):
        distributed = _distributed()
        try:
            import dask

            dask_jobqueue = import_jobqueue()
        except ImportError:
            raise HostError("Slurm/PBS/SGE/LSF hosts need dask-jobqueue on the organiser's machine: "
                            "pip install 'datarun[cluster]'") from None
        host = self.host
        self.preflight()
        # The scheduler runs here: Dask's own re-runs after a worker death are off from the start.
        dask.config.set({"distributed.scheduler.allowed-failures": 0})
        options: dict[str, Any] = {
            "cores": host.cores or host.threads, "processes": 1,
            "memory": f"{(host.memory or 2 * 1024**3) // (host.max_jobs or 1) // 1024**2}MiB",
            "walltime": host.walltime or "01:00:00", "job_name": "datarun-worker",
            "python": host.python if host.python not in ("python3", "") else __import__("sys").executable,
            "nanny": False, "death_timeout": 60,
            "scheduler_options": {"dashboard_address": "127.0.0.1:0" if host.interface == "lo" else ":0"},
            "job_extra_directives": list(host.job_extra),
        }
        if host.queue:
            options["queue"] = host.queue
        if host.account:
            options["account"] = host.account
        if host.interface:
            options["interface"] = host.interface
        # Workers' scratch beside the harness, not /tmp/dask-scratch-space (shared by everyone).
        options["local_directory"] = str(Path(host.workdir).expanduser() / "dask-scratch")
        if host.log_directory:
            options["log_directory"] = str(Path(host.log_directory).expanduser())
        security = self.security()
        if security is not None:
            options["security"] = security
            options["protocol"] = "tls://"
        cls = getattr(dask_jobqueue, JOBQUEUE_CLASSES[host.executor])
        try:
            self.cluster = cls(**options)
            self.adaptive = False
            return distributed.Client(self.cluster, set_as_default=False, timeout=host.connect_timeout)
        except HostError:
            raise
        except Exception as error:
            raise HostError(f"host {host.name}: could not start the {host.executor} cluster: "
                            f"{_one_line(error)}") from None

    def _check_versions(self) -> None:
        pass  # the scheduler is this process's own

    def _submit(self, bundles: list[Path]) -> None:
        if bundles and self.cluster is not None and not getattr(self, "adaptive", False):
            # Worker jobs start when tasks wait and end when none are left: an idle
            # challenge holds no allocation. (target_duration 1 s: every waiting task asks
            # for a worker at once, not one worker per 5 s of estimated work.)
            self.cluster.adapt(minimum=0, maximum=self.host.max_jobs or 1, wait_count=1,
                               interval="500ms", target_duration="1s")
            self.adaptive = True
        super()._submit(bundles)

    def worker_reports(self) -> dict[str, Any]:
        """`host check` starts one worker job (none run while the queue is idle) and asks it."""
        client = self._client()
        if not client.scheduler_info(n_workers=-1).get("workers") and not getattr(self, "adaptive", False):
            self.cluster.scale(1)
            try:
                client.wait_for_workers(1, timeout=max(60.0, self.host.connect_timeout))
            except Exception:
                raise HostError(f"host {self.host.name}: no worker job of the {self.host.executor} queue "
                                f"{self.host.queue or '(default)'} started within 60s: see "
                                f"{self.host.log_directory or 'the job logs'}") from None
        return super().worker_reports()



def cluster_status(workspace, host: Host) -> dict[str, Any]:
    """What `datarun status` shows of a Dask or batch-queue host: its workers (or worker jobs)
    and the tasks they hold. Asked live; a host that does not answer gives {"error": ...}."""
    if host.executor in JOBQUEUE_CLASSES:
        return _queue_jobs(host)
    executor = DaskExecutor(workspace, host)
    try:
        return executor.status()
    except HostError as error:
        return {"error": str(error)}
    finally:
        executor.close()


def _queue_jobs(host: Host) -> dict[str, Any]:
    """The worker jobs in the queue (Slurm's squeue; the scheduler lives in the dispatcher)."""
    if host.executor != "slurm" or shutil.which("squeue") is None:
        return {"jobs": None}
    try:
        done = subprocess.run(["squeue", "-h", "-n", "datarun-worker", "-o", "%i %T %M"],
                              capture_output=True, text=True, timeout=host.connect_timeout + 5)
    except subprocess.TimeoutExpired:
        return {"error": f"host {host.name}: squeue did not answer within {host.connect_timeout + 5:.0f}s"}
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        return {"error": f"host {host.name}: squeue failed: {lines[-1] if lines else done.returncode}"}
    jobs = []
    for line in done.stdout.splitlines():
        parts = line.split()
        if len(parts) == 3:
            jobs.append({"job": parts[0], "state": parts[1], "time": parts[2]})
    return {"jobs": jobs}
