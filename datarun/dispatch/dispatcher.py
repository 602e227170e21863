"""Moving tasks forward: collect what finished, re-queue what was lost, launch what waits.

One pass (`dispatch_pass`) is what cron's `datarun dispatch` does every minute; `train`
repeats passes until the tasks it was asked for are finished (both in `datarun.dispatch.train`).
Only one dispatcher moves tasks in a workspace at a time (an flock on
`.datarun/dispatch.lock`); `submit`, `status` and `leaderboard` run alongside freely
thanks to WAL.

All talk with hosts happens on per-host lanes (`datarun.dispatch.lanes`): one job at a time per
host, on its own thread, so a hung host holds its own slots and nothing else. A job is one
`sync` with the host (clean up, ship, start, poll, fetch in one round trip); the database
is touched only from the dispatcher's thread, when it takes a lane's finished job.

Task states go `queued -> running -> done | failed`. A task is marked running (with its
attempt number bumped and a new random nonce) *before* its bundle is shipped, so a crash
between the two leaves a task the next pass sees as missing on its host and re-queues,
never a task running somewhere the database does not know of. A result is accepted only
for the attempt the database expects and only with that attempt's nonce, so a late result
of a re-queued attempt is never counted twice, and a result left in the workspace's folder
by anything else (an earlier run, a restored database, a forger) is never counted at all.
A host that already has a folder of a bundle's key refuses the bundle; the task goes back
to the queue and is sent again as a new attempt.

Hosts fail in three ways, each noticed differently: a crashed or unreachable host fails
its syncs (its tasks are re-queued once it has failed for its grace period); a hung one
times out (the same, through the SSH timeouts); a host that answers but whose runner has
stopped beating is `stalled` (no new task at once, its tasks re-queued after the grace).
A host that failed or stalled gets no new task until a sync shows it well again. Every
attempt given up on is a leftover of its host (`datarun.dispatch.lanes.Leftovers`): cancelled
there when the host answers, its late result taken only if it is the task's first
complete one. What the answers mean for the database is `datarun.dispatch.collect`.
"""

import json
import secrets
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from datarun.dispatch.collect import Collecting, PassReport, task_key  # noqa: F401 (re-exported)
from datarun.dispatch.lanes import Lane, Leftovers
from datarun.dispatch.schedule import any_queued, queued_tasks, seats
from datarun.errors import DatarunError
from datarun.store.blobs import BlobStore

MAX_ATTEMPTS = 3  # times a task's host may be lost under it before it fails as host_lost
LEASE_GRACE = 120.0  # seconds a task may go unheard-of past its wall limit
POLL_INTERVAL = 0.1  # the train loop's tick, when no host answers sooner
# A sync with nothing to ship waits on the host up to this long for a task to finish, so a
# freed slot is heard of at once; the lane is busy meanwhile, so keep it well under a grace.
LONG_POLL = 1.0
PASS_DEADLINE = 45.0  # a cron pass waits this long for its hosts, then leaves them be


@dataclass
class Limits:
    """Per-run lowering of the problems' limits (`datarun train --wall-time ...`)."""

    wall_time: float | None = None
    cpu_time: float | None = None
    memory: int | None = None

    def apply(self, limits: dict) -> dict:
        merged = dict(limits)
        for name in ("wall_time", "cpu_time", "memory"):
            mine = getattr(self, name)
            if mine is not None:
                merged[name] = mine if merged.get(name) is None else min(merged[name], mine)
        return merged


class Dispatcher(Collecting):
    def __init__(self, workspace, db, hosts: dict, limits: Limits | None = None,
                 max_attempts: int = MAX_ATTEMPTS):
        self.workspace = workspace
        self.db = db
        self.hosts = hosts
        self.limits = limits or Limits()
        self.max_attempts = max_attempts
        self.store = BlobStore(workspace.blobs_dir)
        self.wake = threading.Event()
        self.lanes = {name: Lane(name, self.wake) for name in hosts}
        self.pending_cleanup: dict[str, set[str]] = {name: set() for name in hosts}
        self.last_sync: dict[str, float] = {}
        self.failing_since: dict[str, float] = {}
        self.last_error: dict[str, str] = {}
        self.to_blend: set[str] = set()  # problems with newly scored submissions
        self._executors: dict = {}
        self._problems: dict[str, dict] = {}
        self._scorers: dict = {}
        self.scratch = workspace.state_dir / "tmp"
        # Scratch of a dispatcher that died: under the lock nobody else can be using it.
        shutil.rmtree(self.scratch, ignore_errors=True)
        self.scratch.mkdir(exist_ok=True)
        self.leftovers = Leftovers(workspace.state_dir / "leftovers.json")
        self.to_cancel: dict[str, set[str]] = {name: set() for name in hosts}
        self.stalled: set[str] = set()  # hosts whose runner holds its lock but has stopped beating
        # Launched by a sync that failed: on the host or not, the next answer will tell.
        self.unconfirmed: dict[str, set[str]] = {name: set() for name in hosts}
        self.unusable = {
            name for name, ok in db.execute("SELECT name, ok FROM hosts").fetchall() if ok == 0
        } if "hosts" in db.table_names() else set()
        # Why a host gets no tasks, when it is not its last check: a local host that
        # cannot sandbox (an SSH host's is found by `host check`, or fails its tasks).
        self.unusable_reasons: dict[str, str] = {}
        for name, host in hosts.items():
            if host.executor == "local":
                from datarun.executors.local import sandbox_problem

                problem = sandbox_problem(host)
                if problem:
                    self.unusable.add(name)
                    self.unusable_reasons[name] = problem

    # -- plumbing ---------------------------------------------------------------------------
    def executor(self, name: str):
        if name not in self._executors:
            from datarun.executors import open_executor

            self._executors[name] = open_executor(self.workspace, self.hosts[name])
        return self._executors[name]

    def close(self) -> None:
        for name, executor in self._executors.items():
            if self.lanes[name].busy:
                continue  # its thread may still use it; the process exit ends both
            try:
                executor.close()
            except Exception:
                pass
        self._executors.clear()

    def problem(self, name: str) -> dict:
        if name not in self._problems:
            from datarun.problems.registry import get_problem

            self._problems[name] = get_problem(self.db, name)
        return self._problems[name]

    def scorer(self, name: str):
        if name not in self._scorers:
            from datarun.board.scorer import scorer_for

            self._scorers[name] = scorer_for(self.workspace, self.db, self.problem(name))
        return self._scorers[name]

    def fold(self, problem: str, fold: int):
        return self.scorer(problem).fold(fold)

    def grace(self, name: str) -> float:
        """How long a host, its runner or a task may go unheard-of before its tasks go to others."""
        return 2 * self.hosts[name].command_timeout + 5

    # -- the loop -----------------------------------------------------------------------------
    def step(self, report: PassReport, problem: str | None = None, submission: int | None = None,
             force: bool = False) -> None:
        """Take the lanes' finished jobs, re-queue what was lost, start jobs on idle lanes."""
        self.take_finished(report)
        self.expire(report)
        self.start_jobs(report, problem, submission, force=force)

    def wait(self, timeout: float) -> None:
        self.wake.wait(timeout)
        self.wake.clear()

    def busy(self) -> bool:
        return any(lane.busy for lane in self.lanes.values())

    def run_pass(self, problem: str | None = None, submission: int | None = None,
                 deadline: float = PASS_DEADLINE) -> PassReport:
        """One pass for cron: sync every host, take the answers, launch on the freed slots."""
        report = PassReport()
        end = time.time() + deadline
        for _ in range(2):  # the second round fills the slots the first one's results freed
            self.step(report, problem, submission, force=True)
            while self.busy() and time.time() < end:
                self.wait(0.05)
                self.take_finished(report)
        self.take_finished(report)
        self.refresh_blends()
        for name, lane in self.lanes.items():
            if lane.busy:
                report.host_errors[name] = f"host {name} did not answer within {deadline:.0f}s"
        return report

    def take_finished(self, report: PassReport) -> None:
        for name, lane in self.lanes.items():
            outcome = lane.take()
            if outcome is None:
                continue
            result, error, context = outcome
            try:
                if error is not None:
                    self.job_failed(name, error, context, report)
                else:
                    self.failing_since.pop(name, None)
                    report.launched.extend(task["id"] for task, _ in context["claimed"]
                                           if task_key(task["id"], task["attempt"]) not in result.refused)
                    self.apply_sync(name, result, context, report)
            finally:
                shutil.rmtree(context["scratch"], ignore_errors=True)
        for problem in sorted(self.to_blend):
            from datarun.board.contrib import update_contributivity

            update_contributivity(self.workspace, self.db, problem)
        self.to_blend.clear()

    def refresh_blends(self) -> None:
        """Bring every problem's blends up to date: a scope's submissions also change without
        a new result (an event's scores become public, a retried submission, a migration)."""
        from datarun.board.contrib import update_contributivity

        for (problem,) in self.db.execute("SELECT name FROM problems ORDER BY name").fetchall():
            update_contributivity(self.workspace, self.db, problem)

    def job_failed(self, name: str, error: BaseException, context: dict, report: PassReport) -> None:
        if isinstance(error, DatarunError):
            message = str(error)
        else:  # a fault of ours or of the host's harness: keep the kind for the operator
            message = f"host {name}: {type(error).__name__}: {error}"
        report.host_errors[name] = message
        self.last_error[name] = message
        self.failing_since.setdefault(name, time.time())
        self.pending_cleanup[name] |= context["cleanup"]
        if not context["claimed"]:
            return
        executor = self._executors.get(name)
        # The SSH executor says whether its failed sync had sent the bundles on; the local
        # one places them before anything can fail, so they are taken as sent.
        if context.get("in_sync") and getattr(executor, "bundles_sent", True):
            # The bundles may be on the host and running: leave them be, and let the next
            # answer tell (gone: back to the queue, no loss counted; there: collected). If
            # the host stays silent past its grace, they are lost as any of its tasks are.
            self.unconfirmed[name].update(task_key(task["id"], task["attempt"]) for task, _ in context["claimed"])
            return
        self.unclaim(name, [task for task, _ in context["claimed"]])

    def unclaim(self, name: str, tasks: list[dict], remember: bool = True) -> None:
        """Back to the queue without counting a loss: the next launch gets a new attempt
        number and nonce, so a bundle that did reach the host can never be mistaken for it,
        and (with `remember`) the host is told to cancel and remove it once it answers again."""
        with self.db.conn:
            self.db.conn.execute("BEGIN IMMEDIATE")
            for task in tasks:
                self.db.execute(
                    "UPDATE tasks SET state = 'queued', host = NULL, slot = NULL, lease_expires = NULL "
                    "WHERE id = ? AND state = 'running' AND attempt = ?", [task["id"], task["attempt"]])
        if remember:
            self.leftovers.add(name, {task_key(task["id"], task["attempt"]): task.get("nonce") for task in tasks})

    def expire(self, report: PassReport) -> None:
        """Re-queue the tasks of hosts silent past their grace, and any task past its lease."""
        now = time.time()
        running = list(self.db.query(
            "SELECT id, submission, attempt, nonce, lost, host, lease_expires FROM tasks WHERE state = 'running'"))
        for task in running:
            name = task["host"]
            if name not in self.hosts:
                self.requeue([task], report, f"host {name} is no longer in hosts.toml")
                continue
            lane = self.lanes[name]
            silent = None
            if lane.busy and now - lane.started_at > self.grace(name):
                silent = now - lane.started_at
            elif name in self.failing_since and now - self.failing_since[name] > self.grace(name):
                silent = now - self.failing_since[name]
            if silent is not None:
                self.requeue([task], report, f"host {name} did not answer for {silent:.0f}s")
            elif task["lease_expires"] and task["lease_expires"] < now:
                self.requeue([task], report, f"no result from host {name} within the task's lease")

    def requeue(self, tasks: list[dict], report: PassReport, reasons: str | list[str]) -> None:
        """Put lost tasks back in the queue, or fail them as host_lost after max_attempts losses.

        The lost attempts are remembered as leftovers of their hosts: if a host comes back,
        it is told to cancel them, and their late results are recognised, never counted twice.
        """
        if not tasks:
            return
        if isinstance(reasons, str):
            reasons = [reasons] * len(tasks)
        given_up: dict[str, dict[str, str | None]] = {}
        with self.db.conn:
            self.db.conn.execute("BEGIN IMMEDIATE")
            for task, reason in zip(tasks, reasons, strict=True):
                lost = self.db.execute("SELECT lost FROM tasks WHERE id = ?", [task["id"]]).fetchone()[0] + 1
                if lost >= self.max_attempts:
                    cursor = self.db.execute(
                        "UPDATE tasks SET state = 'failed', lost = ?, error_kind = 'host_lost', error = ?, "
                        "finished_at = ?, lease_expires = NULL WHERE id = ? AND state = 'running' AND attempt = ?",
                        [lost, f"{reason} (lost {lost} of {self.max_attempts} times)", time.time(),
                         task["id"], task["attempt"]])
                else:
                    cursor = self.db.execute(
                        "UPDATE tasks SET state = 'queued', lost = ?, host = NULL, slot = NULL, "
                        "lease_expires = NULL, error = ? WHERE id = ? AND state = 'running' AND attempt = ?",
                        [lost, reason, task["id"], task["attempt"]])
                if cursor.rowcount:
                    report.requeued.append(task["id"])
                    if task.get("host") in self.hosts:  # a host gone from hosts.toml is not asked
                        given_up.setdefault(task["host"], {})[task_key(task["id"], task["attempt"])] = task.get("nonce")
        for host, keys in given_up.items():
            self.leftovers.add(host, keys)

    # -- launching ----------------------------------------------------------------------------
    def free_slots(self, hosts: list[str]) -> dict[str, list[int]]:
        busy: dict[str, set[int]] = {}
        memory: dict[str, int] = {}
        for row in self.db.query("SELECT host, slot, limits FROM tasks WHERE state = 'running'"):
            busy.setdefault(row["host"], set()).add(row["slot"])
            limits = json.loads(row["limits"]) if row["limits"] else {}
            memory[row["host"]] = memory.get(row["host"], 0) + (limits.get("memory") or 0)
        self._memory_in_use = memory
        return {name: [s for s in range(seats(self.hosts[name])) if s not in busy.get(name, set())]
                for name in hosts}

    def start_jobs(self, report: PassReport, problem: str | None, submission: int | None,
                   force: bool = False) -> None:
        now = time.time()
        idle = [name for name, lane in self.lanes.items()
                if not lane.busy and not (lane.failures and now - lane.last_failure < lane.backoff())]
        if not idle:
            return
        running: dict[str, list[dict]] = {}
        for task in self.db.query(
                "SELECT t.id, t.submission, t.fold, t.attempt, t.nonce, t.host, s.problem FROM tasks t "
                "JOIN submissions s ON s.id = t.submission WHERE t.state = 'running'"):
            running.setdefault(task["host"], []).append(task)
        # A host whose last sync failed gets no new task until a sync succeeds again: its
        # tasks would wait on it (or be claimed and handed back) while others are free.
        takers = [name for name in idle if name not in self.unusable and not self.lanes[name].failures
                  and name not in self.stalled]
        free = self.free_slots(takers)
        capacity = sum(len(slots) for slots in free.values())
        plan = self.assign(queued_tasks(self.db, capacity, problem, submission), free) if capacity else {}
        waiting = None
        for name in idle:
            launches = plan.get(name, [])
            polled = running.get(name, [])
            cleanup = self.pending_cleanup[name]
            probe = False
            if (self.lanes[name].failures or name in self.stalled) and name not in self.unusable:
                # A probe after the back-off: the sync that makes the host a taker again.
                if waiting is None:
                    waiting = any_queued(self.db, problem, submission)
                probe = waiting
            if not (launches or polled or cleanup or probe or self.leftovers.keys(name)):
                continue
            # Nothing to ship: let the host answer when a task finishes (a long poll) instead
            # of asking again and again. A cron pass (force) asks once and leaves.
            wait = LONG_POLL if not (launches or force or cleanup or probe) and polled else 0.0
            self.start_job(name, launches, polled, report, wait)

    def start_job(self, name: str, launches: list, polled: list[dict], report: PassReport,
                  wait: float = 0.0) -> None:
        scratch = Path(tempfile.mkdtemp(dir=self.scratch, prefix=f"{name}-"))
        claimed = self.claim(name, launches)
        try:
            executor = self.executor(name)
            bundles = [self.build_bundle(scratch / "bundles", task, limits, self.hosts[name])
                       for task, limits in claimed]
        except DatarunError as error:
            self.lanes[name].failures += 1
            self.lanes[name].last_failure = time.time()
            self.job_failed(name, error, {"claimed": claimed, "cleanup": set()}, report)
            shutil.rmtree(scratch, ignore_errors=True)
            return
        data = {}
        for task, _ in claimed:
            problem = self.problem(task["problem"])
            data[problem["data_hash"]] = self.store.tree_path(problem["data_hash"])
        keys = {task_key(t["id"], t["attempt"]): dict(t, host=name) for t in polled}
        keys.update({task_key(t["id"], t["attempt"]): t for t, _ in claimed})
        cleanup = set(self.pending_cleanup[name])
        self.pending_cleanup[name] = set()
        leftovers = [key for key in self.leftovers.keys(name) if key not in keys and key not in cleanup]
        cancel = sorted(self.to_cancel[name] & set(leftovers))
        self.to_cancel[name] = set()
        context = {"claimed": claimed, "polled": keys, "cleanup": cleanup, "scratch": scratch,
                   "leftovers": leftovers}

        def job():
            if data:
                executor.prepare(data)
            if cancel:
                # Attempts given up on that still run there: free their slots first. A cancel
                # that fails is asked again after the next answer; the sync still runs.
                try:
                    executor.cancel(cancel)
                except DatarunError:
                    pass
            context["in_sync"] = True
            return executor.sync(bundles, sorted(cleanup), list(keys) + leftovers, scratch / "results",
                                 wait=wait)

        self.last_sync[name] = time.time()
        self.lanes[name].start(job, context)

    def assign(self, queued: list[dict], free: dict[str, list[int]]) -> dict[str, list[tuple[dict, int, dict]]]:
        """Spread tasks over hosts' free slots, most free slots first, within each host's memory cap."""
        plan: dict[str, list] = {}
        for task in queued:
            limits = self.limits.apply(self.problem(task["problem"])["limits"])
            candidates = sorted((h for h in free if free[h]), key=lambda h: (-len(free[h]), h))
            for name in candidates:
                host = self.hosts[name]
                need = limits.get("memory") or 0
                if host.memory and self._memory_in_use.get(name, 0) + need > host.memory:
                    continue
                slot = free[name].pop(0)
                self._memory_in_use[name] = self._memory_in_use.get(name, 0) + need
                plan.setdefault(name, []).append((task, slot, limits))
                break
        return plan

    def claim(self, host_name: str, assigned: list) -> list[tuple[dict, dict]]:
        """Mark tasks running on a host, with a new attempt number and nonce, before anything ships."""
        if not assigned:
            return []
        now = time.time()
        claimed = []
        with self.db.conn:
            self.db.conn.execute("BEGIN IMMEDIATE")
            for task, slot, limits in assigned:
                lease = now + (limits.get("wall_time") or 3600) + LEASE_GRACE
                nonce = secrets.token_hex(16)
                cursor = self.db.execute(
                    "UPDATE tasks SET state = 'running', attempt = attempt + 1, nonce = ?, host = ?, "
                    "slot = ?, started_at = ?, lease_expires = ?, limits = ?, error_kind = NULL, "
                    "error = NULL WHERE id = ? AND state = 'queued'",
                    [nonce, host_name, slot, now, lease, json.dumps(limits), task["id"]])
                if cursor.rowcount == 1:
                    claimed.append((dict(task, attempt=task["attempt"] + 1, nonce=nonce, host=host_name),
                                    limits))
        return claimed

    def build_bundle(self, staging: Path, task: dict, limits: dict, host) -> Path:
        """A task bundle as docs/PROTOCOL.md gives it: task.json, fold indices, submission files."""
        import numpy as np

        problem = self.problem(task["problem"])
        key = task_key(task["id"], task["attempt"])
        folder = staging / key
        (folder / "submission").mkdir(parents=True)
        files = json.loads(task["files"])
        for name, digest in files.items():
            shutil.copyfile(self.store.path(digest), folder / "submission" / name)
        train_idx, valid_idx = self.fold(task["problem"], task["fold"])
        np.save(folder / "train_idx.npy", train_idx, allow_pickle=False)
        np.save(folder / "valid_idx.npy", valid_idx, allow_pickle=False)
        spec = {
            "key": key, "nonce": task["nonce"], "task_id": task["id"], "attempt": task["attempt"],
            "submission": task["submission"],
            "fold": task["fold"], "problem": problem["name"], "data": problem["data_hash"],
            "workflow": problem["workflow"], "kind": problem["kind"], "classes": problem["classes"],
            "files": sorted(files), "limits": limits, "threads": host.threads, "max_output": 1 << 20,
            "isolation": host.isolation,
        }
        (folder / "task.json").write_text(json.dumps(spec, indent=1))
        return folder
