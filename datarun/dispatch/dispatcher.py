"""Moving tasks forward: collect what finished, re-queue what was lost, launch what waits.

One pass (`Dispatcher.run_pass`, through `datarun.dispatch.train.dispatch_once`) is what
cron's `datarun dispatch` does every minute; `train` steps the dispatcher until the tasks
it was asked for are finished. Only one dispatcher moves tasks in a workspace at a time
(an flock on `.datarun/dispatch.lock`); `submit`, `status` and `leaderboard` run
alongside freely thanks to WAL.

The parts, each with its own module:

- `HostState` (`hoststate`): what is known of one host between syncs, and its `Lane`
  (`lanes`): the thread all talk with that host happens on, one job at a time, so a hung
  host holds its own slots and nothing else;
- `SyncJob` (`job`): one sync with a host (clean up, ship, start, poll, fetch in one round
  trip), built here, run on the lane, read back by
- the `Collector` (`collect`): what an answer means for the database;
- placement (`schedule`): which free seat each queued task takes, as plain functions;
- the task life cycle itself is `datarun.store.tasks`: every change of a task row is one
  of its transitions.

The database is touched only from the dispatcher's thread, when it takes a lane's
finished job. A task is claimed (running, with its attempt number bumped and a new random
nonce) *before* its bundle is shipped, so a crash between the two leaves a task the next
pass sees as missing on its host and re-queues, never a task running somewhere the
database does not know of. A result is accepted only for the attempt the database expects
and only with that attempt's nonce, so a late result of a re-queued attempt is never
counted twice, and a result left in the workspace's folder by anything else (an earlier
run, a restored database, a forger) is never counted at all. A host that already has a
folder of a bundle's key refuses the bundle; the task goes back to the queue and is sent
again as a new attempt.

Hosts fail in three ways, each noticed differently: a crashed or unreachable host fails
its syncs (its tasks are re-queued once it has failed for its grace period); a hung one
times out (the same, through the SSH timeouts); a host that answers but whose runner has
stopped beating is `stalled` (no new task at once, its tasks re-queued after the grace).
A host that failed or stalled gets no new task until a sync shows it well again. Every
attempt given up on is a leftover of its host (`datarun.dispatch.lanes.Leftovers`):
cancelled there when the host answers, its late result taken only if it is the task's
first complete one.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from datarun.dispatch.bundles import build_bundle
from datarun.dispatch.collect import Collector, PassReport
from datarun.dispatch.hooks import HookRunner, event_payload
from datarun.dispatch.hoststate import HostState
from datarun.dispatch.job import SyncJob
from datarun.dispatch.lanes import Finished, Lane, Leftovers
from datarun.dispatch.problemcache import ProblemCache
from datarun.dispatch.schedule import Unfit, assign, blocked_hosts, free_seats, unfit
from datarun.errors import DatarunError, DiskFull, HostDiskFull
from datarun.executors import open_executor, unfit_reason
from datarun.executors.base import Executor
from datarun.executors.environments import strict_reason, with_environments
from datarun.executors.hosts import Host
from datarun.problems.resources import Needs, environment_of, needs_of
from datarun.store import environments as stored_envs
from datarun.store import hosts as stored_hosts
from datarun.store import taskqueries, tasks
from datarun.store.blobs import BlobStore
from datarun.store.db import Database, transaction
from datarun.store.space import space_for
from datarun.store.submissions import files_of
from datarun.store.taskqueries import Selection
from datarun.store.tasks import Task
from datarun.store.workspace import Workspace

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

    def apply(self, limits: Mapping[str, Any]) -> dict[str, Any]:
        merged = dict(limits)
        for name in ("wall_time", "cpu_time", "memory"):
            mine = getattr(self, name)
            if mine is not None:
                merged[name] = mine if merged.get(name) is None else min(merged[name], mine)
        return merged


class Dispatcher:
    def __init__(self, workspace: Workspace, db: Database, hosts: Mapping[str, Host],
                 limits: Limits | None = None, max_attempts: int = MAX_ATTEMPTS,
                 hooks: HookRunner | None = None):
        self.workspace = workspace
        self.hooks = hooks
        self.fired: set[tuple[str, int]] = set()
        self.db = db
        self.limits = limits or Limits()
        self.store = BlobStore(workspace.blobs_dir)
        self.wake = threading.Event()
        hosts = with_environments(workspace, hosts)  # a host set up runs its environment's Python
        self.environments = stored_envs.load(workspace.environments_path)
        failed_checks = stored_hosts.unusable(db)
        self.hosts: dict[str, HostState] = {}
        for name, host in hosts.items():
            reason = unfit_reason(host)
            self.hosts[name] = HostState(host, Lane(name, self.wake),
                                         unusable=name in failed_checks or reason is not None,
                                         unusable_reason=reason)
        self.blocked = blocked_hosts(db, hosts, {name: state.unusable_reason for name, state in self.hosts.items()
                                                 if state.unusable_reason})
        self.scratch = workspace.scratch_dir
        # Scratch of a dispatcher that died: under the lock nobody else can be using it.
        shutil.rmtree(self.scratch, ignore_errors=True)
        self.scratch.mkdir(exist_ok=True)
        self.used_scratch: list[Path] = []  # applied jobs' folders, removed after the next launches
        self.leftovers = Leftovers(workspace.leftovers_path)
        self.problems = ProblemCache(workspace, db)
        self.collector = Collector(workspace, db, self.store, self.problems, self.leftovers, self.hosts,
                                   max_attempts)

    # -- plumbing ---------------------------------------------------------------------------
    def executor(self, host: HostState) -> Executor:
        if host.executor is None:
            host.executor = open_executor(self.workspace, host.host)
        return host.executor

    def close(self) -> None:
        self.remove_used_scratch()
        self.collector.close()
        for host in self.hosts.values():
            if host.executor is None or host.lane.busy:
                continue  # a busy lane's thread may still use it; the process exit ends both
            try:
                host.executor.close()
            except Exception:
                pass
            host.executor = None

    def host_errors(self) -> dict[str, str]:
        """The last error of each host whose syncs are failing."""
        errors = {name: host.last_error for name, host in self.hosts.items()
                  if host.failing_since is not None and host.last_error is not None}
        errors.update({name: host.disk_full for name, host in self.hosts.items() if host.disk_full})
        return errors

    def unusable_reasons(self) -> dict[str, str]:
        """Why hosts get no tasks, when it is not their last check (a local host that cannot sandbox)."""
        return {name: host.unusable_reason for name, host in self.hosts.items()
                if host.unusable_reason is not None}

    def none_takes_tasks(self, failures: int) -> bool:
        """Whether every host is unusable, out of disk space, or has failed at least
        `failures` syncs in a row."""
        return all(host.unusable or host.disk_full or host.lane.failures >= failures
                   for host in self.hosts.values())

    # -- the loop -----------------------------------------------------------------------------
    def step(self, report: PassReport, selection: Selection = Selection(), force: bool = False) -> None:
        """Take the lanes' finished jobs, re-queue what was lost, start jobs on idle lanes."""
        self.take_finished(report, defer_removal=True)
        self.expire(report)
        self.start_jobs(report, selection, force=force)
        self.remove_used_scratch()
        self.fire_hooks(report)

    def fire_hooks(self, report: PassReport) -> None:
        """Hand each newly scored or failed submission's news to its hook (which runs on a
        thread of its own: nothing here waits for it)."""
        if self.hooks is None:
            return
        for kind, ids in (("submission_scored", report.scored_submissions),
                          ("submission_failed", report.failed_submissions)):
            for sid in ids:
                if (kind, sid) in self.fired:
                    continue
                self.fired.add((kind, sid))
                try:
                    payload = event_payload(self.db, kind, sid)
                except DatarunError:
                    continue  # removed meanwhile: no news to give
                self.hooks.fire(kind, payload)

    def wait(self, timeout: float) -> None:
        self.wake.wait(timeout)
        self.wake.clear()

    def busy(self) -> bool:
        return any(host.lane.busy for host in self.hosts.values())

    def run_pass(self, selection: Selection = Selection(), deadline: float = PASS_DEADLINE) -> PassReport:
        """One pass for cron: sync every host, take the answers, launch on the freed slots."""
        report = PassReport()
        end = time.time() + deadline
        for _ in range(2):  # the second round fills the slots the first one's results freed
            self.step(report, selection, force=True)
            while self.busy() and time.time() < end:
                self.wait(0.05)
                self.take_finished(report)
        self.take_finished(report)
        self.collector.refresh_blends()
        self.fire_hooks(report)
        for name, host in self.hosts.items():
            if host.lane.busy:
                report.host_errors[name] = f"host {name} did not answer within {deadline:.0f}s"
        return report

    def take_finished(self, report: PassReport, defer_removal: bool = False) -> None:
        """Apply the lanes' finished jobs. Their scratch folders (bundles, fetched results)
        are removed after the next launches when `defer_removal`: removing a job's folder
        took ~15 ms on a loaded machine, between a slot's result and its next task."""
        for host in self.hosts.values():
            finished = host.lane.take()
            if finished is None:
                continue
            try:
                self.apply(host, finished, report)
            finally:
                self.used_scratch.append(finished.job.scratch)
        if not defer_removal:
            self.remove_used_scratch()
        self.collector.blend()

    def remove_used_scratch(self) -> None:
        used, self.used_scratch = self.used_scratch, []
        for folder in used:
            shutil.rmtree(folder, ignore_errors=True)

    def apply(self, host: HostState, finished: Finished, report: PassReport) -> None:
        job = finished.job
        if finished.error is not None or finished.result is None:
            self.job_failed(host, finished.error or RuntimeError("the sync returned nothing"), job, report)
            return
        host.failing_since = None
        if finished.result.slots and host.host.slots_from_workers and finished.result.slots != host.host.slots:
            # A Dask host without `slots`: as many tasks at once as its workers have threads.
            host.host = replace(host.host, slots=finished.result.slots)
        report.launched.extend(task.id for task in job.claimed if task.key not in finished.result.refused)
        self.collector.apply(host, finished.result, job, report)

    def job_failed(self, host: HostState, error: BaseException, job: SyncJob, report: PassReport) -> None:
        if isinstance(error, HostDiskFull):
            host.disk_full = str(error)
        if isinstance(error, DatarunError):
            message = str(error)
        else:  # a fault of ours or of the host's harness: keep the kind for the operator
            message = f"host {host.name}: {type(error).__name__}: {error}"
        report.host_errors[host.name] = message
        host.last_error = message
        if host.failing_since is None:
            host.failing_since = time.time()
        host.cleanup |= job.cleanup
        if not job.claimed:
            return
        if isinstance(error, HostDiskFull):
            # Its disk is full: whatever of these bundles reached it cannot run there. Back to
            # the queue with no loss counted, and remembered, so the host is told to remove
            # (or cancel) them once it answers again: a result of theirs is never counted.
            self.collector.unclaim(host, job.claimed)
            return
        # The executor says whether its failed sync had sent the bundles on.
        if job.in_sync and (host.executor is None or host.executor.bundles_sent):
            # The bundles may be on the host and running: leave them be, and let the next
            # answer tell (gone: back to the queue, no loss counted; there: collected). If
            # the host stays silent past its grace, they are lost as any of its tasks are.
            host.unconfirmed.update(task.key for task in job.claimed)
            return
        self.collector.unclaim(host, job.claimed)

    def expire(self, report: PassReport) -> None:
        """Re-queue the tasks of hosts silent past their grace, and any task past its lease."""
        now = time.time()
        for task in taskqueries.running(self.db):
            host = self.hosts.get(task.host or "")
            if host is None:
                self.collector.lose([task], report, f"host {task.host} is no longer in hosts.toml")
                continue
            silent = host.silent_for(now)
            if silent is not None:
                self.collector.lose([task], report, f"host {host.name} did not answer for {silent:.0f}s")
            elif task.lease_expires and task.lease_expires < now:
                self.collector.lose([task], report, f"no result from host {host.name} within the task's lease")

    # -- launching ----------------------------------------------------------------------------
    def start_jobs(self, report: PassReport, selection: Selection, force: bool = False) -> None:
        now = time.time()
        idle = [host for host in self.hosts.values() if not host.lane.busy and not host.lane.backing_off(now)]
        if not idle:
            return
        running = taskqueries.running(self.db)
        on_host: dict[str, list[Task]] = {}
        for task in running:
            on_host.setdefault(task.host or "", []).append(task)
        takers = [host.name for host in idle if host.takes_tasks()]
        registry = {name: host.host for name, host in self.hosts.items()}
        free = free_seats(registry, running, takers)
        plan = self.place(free, registry, selection) if free.count else {}
        waiting: bool | None = None
        for host in idle:
            launches = plan.get(host.name, [])
            polled = on_host.get(host.name, [])
            probe = False
            if host.wants_probe():
                # A probe after the back-off: the sync that makes the host a taker again.
                if waiting is None:
                    waiting = taskqueries.any_queued(self.db, selection)
                probe = waiting
            if not (launches or polled or host.cleanup or probe or self.leftovers.keys(host.name)):
                continue
            # Nothing to ship: let the host answer when a task finishes (a long poll) instead
            # of asking again and again. A cron pass (force) asks once and leaves.
            wait = LONG_POLL if not (launches or force or host.cleanup or probe) and polled else 0.0
            self.start_job(host, launches, polled, report, wait)

    def place(self, free, registry: Mapping[str, Host], selection: Selection) -> dict:
        """The plan for the free seats. Queued tasks that cannot go where seats are free (a
        GPU problem's while the GPU hosts are full, an unfit one's) must not hide those
        behind them that can: look further down the queue until the seats are used."""
        limit = free.count
        while True:
            queued = taskqueries.next_queued(self.db, limit, selection)
            plan = assign(queued, free, registry, self.limits_of, self.needs_of, self.refuse)
            if sum(map(len, plan.values())) >= free.count or len(queued) < limit:
                return plan
            limit *= 4

    def needs_of(self, task: Task) -> Needs:
        return needs_of(self.problems.problem(task.problem))

    def unfit(self, selection: Selection = Selection()) -> list[Unfit]:
        """The selected queued tasks that no host can take, and why (one line each)."""
        return unfit(taskqueries.next_queued(self.db, -1, selection), {name: h.host for name, h in self.hosts.items()},
                     self.blocked, self.limits_of, self.needs_of, self.refuse)

    def refuse(self, host: str, task: Task) -> str | None:
        """A sensitive problem's tasks go only to the hosts holding its data; a strict problem's
        only to hosts whose environment has its recorded versions."""
        problem = self.problems.problem(task.problem)
        sensitive = problem.get("sensitive")
        if sensitive and host not in sensitive["hosts"]:
            return (f"problem {problem['name']} is sensitive: its data is on "
                    f"{', '.join(sensitive['hosts'])} only")
        return strict_reason(self.environments.get(host), environment_of(problem))

    def limits_of(self, task: Task) -> dict[str, Any]:
        """The task's limits for this run: its problem's, lowered by `train --wall-time ...`."""
        return self.limits.apply(self.problems.problem(task.problem)["limits"])

    def start_job(self, host: HostState, launches: list[tuple[Task, int, dict[str, Any]]],
                  polled: list[Task], report: PassReport, wait: float = 0.0) -> None:
        with space_for(self.scratch):
            job = SyncJob(host.name, Path(tempfile.mkdtemp(dir=self.scratch, prefix=f"{host.name}-")), wait=wait)
        job.claimed = self.claim(host.name, launches)
        try:
            executor = self.executor(host)
            with space_for(job.scratch):
                for task in job.claimed:
                    problem = self.problems.problem(task.problem)
                    # A sensitive problem's data and folds are on its host already, and only there.
                    sensitive = bool(problem.get("sensitive"))
                    fold = None if sensitive else self.problems.fold(task.problem, task.fold)
                    job.bundles.append(build_bundle(job.scratch / "bundles", task, problem,
                                                    files_of(self.db, task.submission), fold,
                                                    host.host, self.store))
                    if not sensitive:
                        job.data[problem["data_hash"]] = self.store.tree_path(problem["data_hash"])
        except DiskFull:
            # The workspace's disk, not the host's: nothing was sent, so the tasks go back
            # to the queue as they were, and the run stops here with the one line that says so.
            shutil.rmtree(job.scratch, ignore_errors=True)
            self.collector.unclaim(host, job.claimed, remember=False)
            raise
        except DatarunError as error:
            host.lane.note_failure()
            self.job_failed(host, error, job, report)
            shutil.rmtree(job.scratch, ignore_errors=True)
            return
        job.polled = {task.key: task for task in polled}
        job.polled.update({task.key: task for task in job.claimed})
        job.cleanup, host.cleanup = set(host.cleanup), set()
        job.leftovers = [key for key in self.leftovers.keys(host.name)
                         if key not in job.polled and key not in job.cleanup]
        job.cancel = sorted(host.to_cancel & set(job.leftovers))
        host.to_cancel = set()
        host.lane.start(job, executor)

    def claim(self, host: str, assigned: list[tuple[Task, int, dict[str, Any]]]) -> list[Task]:
        """Mark tasks running on a host, with a new attempt number and nonce, before anything ships."""
        now = time.time()
        claimed = []
        with transaction(self.db):
            for task, seat, limits in assigned:
                lease = now + (limits.get("wall_time") or 3600) + LEASE_GRACE
                mine = tasks.claim(self.db, task, host, seat, limits, lease, now)
                if mine is not None:
                    claimed.append(mine)
        return claimed
