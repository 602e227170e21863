"""Moving tasks forward: collect what finished, re-queue what was lost, launch what waits.

One pass (`dispatch_pass`) is what cron's `datarun dispatch` does every minute; `train`
repeats passes until the tasks it was asked for are finished. Only one dispatcher moves
tasks in a workspace at a time (an flock on `.datarun/dispatch.lock`); `submit`, `status`
and `leaderboard` run alongside freely thanks to WAL.

All talk with hosts happens on per-host lanes (`datarun.lanes`): one job at a time per
host, on its own thread, so a hung host holds its own slots and nothing else. A job is one
`sync` with the host (clean up, ship, start, poll, fetch in one round trip); the database
is touched only from the dispatcher's thread, when it takes a lane's finished job.

Task states go `queued -> running -> done | failed`. A task is marked running (with its
attempt number bumped) *before* its bundle is shipped, so a crash between the two leaves
a task the next pass sees as missing on its host and re-queues, never a task running
somewhere the database does not know of. A result is accepted only for the attempt the
database expects, so a late result of a re-queued attempt is never counted twice.
"""

import fcntl
import json
import shutil
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from datarun.blobs import BlobStore
from datarun.errors import Busy, DatarunError
from datarun.lanes import Lane, Leftovers
from datarun.results import ResultRejected, read_result

MAX_ATTEMPTS = 3  # times a task's host may be lost under it before it fails as host_lost
LEASE_GRACE = 120.0  # seconds a task may go unheard-of past its wall limit
POLL_INTERVAL = 0.1  # the train loop's tick, when no host answers sooner
PASS_DEADLINE = 45.0  # a cron pass waits this long for its hosts, then leaves them be
# A runner beats every second; one silent for this long gets no new task until it beats
# again (its tasks are given to others only after the host's grace period).
RUNNER_SLOW = 5.0


def task_key(task_id: int, attempt: int) -> str:
    return f"t{task_id}-a{attempt}"


@contextmanager
def dispatcher_lock(workspace, wait: bool, on_wait=None):
    """Hold the workspace's dispatcher lock; raise Busy if another holds it and wait is False."""
    workspace.state_dir.mkdir(parents=True, exist_ok=True)
    with open(workspace.lock_path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not wait:
                raise Busy("another datarun dispatcher is running in this workspace; try again when it ends") from None
            if on_wait:
                on_wait()
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


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


@dataclass
class PassReport:
    collected: list[int] = field(default_factory=list)
    launched: list[int] = field(default_factory=list)
    requeued: list[int] = field(default_factory=list)
    host_errors: dict[str, str] = field(default_factory=dict)
    scored_submissions: list[int] = field(default_factory=list)
    late: list[int] = field(default_factory=list)  # tasks whose given-up attempt came back


class Dispatcher:
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
        self.unusable = {
            name for name, ok in db.execute("SELECT name, ok FROM hosts").fetchall() if ok == 0
        } if "hosts" in db.table_names() else set()

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
            from datarun.problems import get_problem

            self._problems[name] = get_problem(self.db, name)
        return self._problems[name]

    def scorer(self, name: str):
        if name not in self._scorers:
            from datarun.scoring import scorer_for

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
                    report.launched.extend(task["id"] for task, _ in context["claimed"])
                    self.apply_sync(name, result, context, report)
            finally:
                shutil.rmtree(context["scratch"], ignore_errors=True)
        for problem in sorted(self.to_blend):
            from datarun.contrib import update_contributivity

            update_contributivity(self.workspace, self.db, problem)
        self.to_blend.clear()

    def job_failed(self, name: str, error: BaseException, context: dict, report: PassReport) -> None:
        if isinstance(error, DatarunError):
            message = str(error)
        else:  # a fault of ours or of the host's harness: keep the kind for the operator
            message = f"host {name}: {type(error).__name__}: {error}"
        report.host_errors[name] = message
        self.last_error[name] = message
        self.failing_since.setdefault(name, time.time())
        self.pending_cleanup[name] |= context["cleanup"]
        if context["claimed"]:
            # Back to the queue without counting a loss: the next launch gets a new attempt
            # number, so a bundle that did reach the host can never be mistaken for it, and
            # the host is told to cancel and remove it once it answers again.
            with self.db.conn:
                self.db.conn.execute("BEGIN IMMEDIATE")
                for task, _ in context["claimed"]:
                    self.db.execute(
                        "UPDATE tasks SET state = 'queued', host = NULL, slot = NULL, lease_expires = NULL "
                        "WHERE id = ? AND state = 'running' AND attempt = ?", [task["id"], task["attempt"]])
            self.leftovers.add(name, [task_key(task["id"], task["attempt"]) for task, _ in context["claimed"]])

    def apply_sync(self, name: str, result, context: dict, report: PassReport) -> None:
        poll = result.poll
        fetched = set(result.fetched)
        results = context["scratch"] / "results"
        grace = self.grace(name)
        # A runner that holds its lock but has not written its heartbeat for the grace
        # period is frozen (a stopped or swapping host): its tasks will not move either.
        silent = poll.now - poll.runner_heartbeat if poll.runner_alive and poll.runner_heartbeat else 0.0
        frozen = silent > grace
        if silent > RUNNER_SLOW:
            self.stalled.add(name)
        else:
            self.stalled.discard(name)
        lost, touched = [], {}
        for key, task in context["polled"].items():
            state = poll.tasks.get(key)
            if key in fetched:
                if self.record_result(task, name, results / key):
                    report.collected.append(task["id"])
                    touched[task["submission"]] = task["problem"]
                elif self.take_late(name, key, results / key, report, touched):
                    report.collected.append(task["id"])
                if self._state_of(task["id"]) == "done":
                    self.pending_cleanup[name].add(key)
                continue
            if state is None or state.state == "missing":
                lost.append((task, f"host {name} has no trace of the task"))
            elif state.state in ("running", "queued") and not poll.runner_alive:
                if state.state == "running":
                    lost.append((task, f"the runner on host {name} died"))
            elif state.state in ("running", "queued") and frozen:
                lost.append((task, f"the runner on host {name} has not beaten for "
                                   f"{poll.now - poll.runner_heartbeat:.0f}s"))
            elif state.state == "running" and state.heartbeat and poll.now - state.heartbeat > grace:
                lost.append((task, f"no heartbeat from the task on host {name} for "
                                   f"{poll.now - state.heartbeat:.0f}s"))
        self.requeue([task for task, _ in lost], report, [reason for _, reason in lost])
        self.tidy_leftovers(name, context["leftovers"], poll, fetched, results, report, touched)
        for submission, problem in sorted(touched.items()):
            if self.finish_submission(submission):
                report.scored_submissions.append(submission)
                self.to_blend.add(problem)

    def tidy_leftovers(self, name: str, keys: list[str], poll, fetched: set[str], results: Path,
                       report: PassReport, touched: dict) -> None:
        """Late results are recognised, what still runs is cancelled, what is gone is forgotten."""
        gone = []
        for key in keys:
            state = poll.tasks.get(key)
            if key in fetched:
                self.take_late(name, key, results / key, report, touched)
                self.pending_cleanup[name].add(key)
            elif state is None or state.state == "missing":
                gone.append(key)
            elif state.state == "finished":
                self.pending_cleanup[name].add(key)
            else:
                self.to_cancel[name].add(key)
        self.leftovers.forget(name, gone)

    def take_late(self, name: str, key: str, folder: Path, report: PassReport, touched: dict) -> bool:
        """A result of an attempt given up on: counted only if the task has no result yet."""
        try:
            task_id, attempt = (int(part) for part in key[1:].split("-a"))
        except ValueError:
            return False
        row = self.db.execute(
            "SELECT t.id, t.submission, t.fold, s.problem FROM tasks t JOIN submissions s "
            "ON s.id = t.submission WHERE t.id = ?", [task_id]).fetchone()
        if row is None:
            return False
        report.late.append(row[0])
        task = {"id": row[0], "submission": row[1], "fold": row[2], "problem": row[3], "attempt": attempt}
        if self.record_result(task, name, folder, late=True):
            touched[task["submission"]] = task["problem"]
            return True
        return False

    def expire(self, report: PassReport) -> None:
        """Re-queue the tasks of hosts silent past their grace, and any task past its lease."""
        now = time.time()
        running = list(self.db.query(
            "SELECT id, submission, attempt, lost, host, lease_expires FROM tasks WHERE state = 'running'"))
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

    # -- results ------------------------------------------------------------------------------
    def _state_of(self, task_id: int) -> str | None:
        row = self.db.execute("SELECT state FROM tasks WHERE id = ?", [task_id]).fetchone()
        return row[0] if row else None

    def record_result(self, task: dict, host_name: str, folder: Path, late: bool = False) -> bool:
        """Store one task's result; False if it was a late result of an attempt already given up.

        With `late`, the result of an attempt given up on is taken if it is a success and the
        task has no result yet (first complete result wins); the attempt that replaced it, if
        running, is then left to be cancelled on its host.
        """
        if late and not (folder / "result.json").is_file():
            return False
        scorer = self.scorer(task["problem"])
        key = task_key(task["id"], task["attempt"])
        scores = []
        try:
            result = read_result(folder, key, *scorer.prediction_shapes())
        except ResultRejected as error:
            state, kind, text, measures, environment, preds, log = (
                "failed", "harness_error", f"result from host {host_name} rejected: {error}", {}, {}, None, b"")
        else:
            state, kind, text = result.state, result.error_kind, result.error
            measures, environment, log = result.measures, result.environment, result.log
            preds = None
            if state == "done":
                scores = scorer.task_scores(task["fold"], result.y_pred_train, result.y_pred_test)
                preds = (self.store.put_array(result.y_pred_train), self.store.put_array(result.y_pred_test))
        if late and state != "done":
            return False  # a failure (or our own cancel) of a given-up attempt decides nothing
        environment = dict(environment, host=host_name)
        log_hash = self.store.put_bytes(log) if log else None
        replaced = None
        with self.db.conn:
            self.db.conn.execute("BEGIN IMMEDIATE")
            current = self.db.execute("SELECT state, attempt, host FROM tasks WHERE id = ?",
                                      [task["id"]]).fetchone()
            if late:
                if current is None or current[0] not in ("queued", "running") or (
                        current[0] == "running" and current[1] == task["attempt"]):
                    return False
                if current[0] == "running":
                    replaced = (current[2], task_key(task["id"], current[1]))
                expected = (current[0], current[1])
            else:
                expected = ("running", task["attempt"])
            cursor = self.db.execute(
                "UPDATE tasks SET state = ?, error_kind = ?, error = ?, finished_at = ?, train_time = ?, "
                "valid_time = ?, test_time = ?, wall_time = ?, cpu_time = ?, peak_memory = ?, "
                "pred_train = ?, pred_test = ?, log = ?, environment = ?, lease_expires = NULL, "
                "host = ?, attempt = ? WHERE id = ? AND state = ? AND attempt = ?",
                [state, kind, text, time.time(), measures.get("train_time"), measures.get("valid_time"),
                 measures.get("test_time"), measures.get("wall_time"), measures.get("cpu_time"),
                 int(measures["peak_memory"]) if measures.get("peak_memory") is not None else None,
                 preds[0] if preds else None, preds[1] if preds else None, log_hash,
                 json.dumps(environment), host_name, task["attempt"], task["id"], *expected])
            if cursor.rowcount != 1:
                return False
            self.db.execute("DELETE FROM scores WHERE task = ?", [task["id"]])
            self.db.conn.executemany(
                "INSERT INTO scores (task, split, score, value) VALUES (?, ?, ?, ?)",
                [(task["id"], split, name, value) for split, name, value in scores])
        if replaced and replaced[0] in self.hosts:
            self.leftovers.add(replaced[0], [replaced[1]])
        return True

    def finish_submission(self, submission: int) -> bool:
        """Compute bagged scores once every fold is done; True if it was computed now."""
        rows = list(self.db.query(
            "SELECT t.fold, t.state, t.pred_train, t.pred_test, s.problem FROM tasks t "
            "JOIN submissions s ON s.id = t.submission WHERE t.submission = ? ORDER BY t.fold", [submission]))
        if not rows or any(r["state"] != "done" for r in rows):
            return False
        if self.db.execute("SELECT 1 FROM bagged_scores WHERE submission = ?", [submission]).fetchone():
            return False
        preds_train = [self.store.get_array(r["pred_train"]) for r in rows]
        preds_test = [self.store.get_array(r["pred_test"]) for r in rows]
        scores = self.scorer(rows[0]["problem"]).bagged_scores(
            [r["fold"] for r in rows], preds_train, preds_test)
        with self.db.conn:
            self.db.conn.execute("BEGIN IMMEDIATE")
            self.db.conn.executemany(
                "INSERT OR REPLACE INTO bagged_scores (submission, split, score, value) VALUES (?, ?, ?, ?)",
                [(submission, split, score, value) for split, score, value in scores])
        return True

    def requeue(self, tasks: list[dict], report: PassReport, reasons: str | list[str]) -> None:
        """Put lost tasks back in the queue, or fail them as host_lost after max_attempts losses.

        The lost attempts are remembered as leftovers of their hosts: if a host comes back,
        it is told to cancel them, and their late results are recognised, never counted twice.
        """
        if not tasks:
            return
        if isinstance(reasons, str):
            reasons = [reasons] * len(tasks)
        given_up: dict[str, list[str]] = {}
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
                    if task.get("host"):
                        given_up.setdefault(task["host"], []).append(task_key(task["id"], task["attempt"]))
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
        return {name: [s for s in range(self.hosts[name].slots) if s not in busy.get(name, set())]
                for name in hosts}

    def queued_tasks(self, limit: int, problem: str | None, submission: int | None) -> list[dict]:
        sql = ("SELECT t.id, t.submission, t.fold, t.attempt, s.problem, s.files FROM tasks t "
               "JOIN submissions s ON s.id = t.submission WHERE t.state = 'queued'")
        args: list = []
        if problem:
            sql += " AND s.problem = ?"
            args.append(problem)
        if submission is not None:
            sql += " AND s.id = ?"
            args.append(submission)
        sql += " ORDER BY t.submission, t.fold LIMIT ?"
        return list(self.db.query(sql, args + [limit]))

    def start_jobs(self, report: PassReport, problem: str | None, submission: int | None,
                   force: bool = False) -> None:
        now = time.time()
        idle = [name for name, lane in self.lanes.items()
                if not lane.busy and not (lane.failures and now - lane.last_failure < lane.backoff())]
        if not idle:
            return
        running: dict[str, list[dict]] = {}
        for task in self.db.query(
                "SELECT t.id, t.submission, t.fold, t.attempt, t.host, s.problem FROM tasks t "
                "JOIN submissions s ON s.id = t.submission WHERE t.state = 'running'"):
            running.setdefault(task["host"], []).append(task)
        # A host whose last sync failed gets no new task until a sync succeeds again: its
        # tasks would wait on it (or be claimed and handed back) while others are free.
        takers = [name for name in idle if name not in self.unusable and not self.lanes[name].failures
                  and name not in self.stalled]
        free = self.free_slots(takers)
        capacity = sum(len(slots) for slots in free.values())
        plan = self.assign(self.queued_tasks(capacity, problem, submission), free) if capacity else {}
        waiting = None
        for name in idle:
            launches = plan.get(name, [])
            polled = running.get(name, [])
            cleanup = self.pending_cleanup[name]
            probe = False
            if (self.lanes[name].failures or name in self.stalled) and name not in self.unusable:
                # A probe after the back-off: the sync that makes the host a taker again.
                if waiting is None:
                    waiting = bool(self.queued_tasks(1, problem, submission))
                probe = waiting
            if not (launches or polled or cleanup or probe or self.leftovers.keys(name)):
                continue
            interval = getattr(self.executor_class(name), "poll_interval", POLL_INTERVAL)
            if not launches and not force and now - self.last_sync.get(name, 0.0) < interval:
                continue
            self.start_job(name, launches, polled, report)

    def executor_class(self, name: str):
        return type(self._executors[name]) if name in self._executors else None

    def start_job(self, name: str, launches: list, polled: list[dict], report: PassReport) -> None:
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
                # Attempts given up on that still run there: free their slots first.
                executor.cancel(cancel)
            return executor.sync(bundles, sorted(cleanup), list(keys) + leftovers, scratch / "results")

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
        """Mark tasks running on a host, with a new attempt number, before anything ships."""
        if not assigned:
            return []
        now = time.time()
        claimed = []
        with self.db.conn:
            self.db.conn.execute("BEGIN IMMEDIATE")
            for task, slot, limits in assigned:
                lease = now + (limits.get("wall_time") or 3600) + LEASE_GRACE
                cursor = self.db.execute(
                    "UPDATE tasks SET state = 'running', attempt = attempt + 1, host = ?, slot = ?, "
                    "started_at = ?, lease_expires = ?, limits = ?, error_kind = NULL, error = NULL "
                    "WHERE id = ? AND state = 'queued'",
                    [host_name, slot, now, lease, json.dumps(limits), task["id"]])
                if cursor.rowcount == 1:
                    claimed.append((dict(task, attempt=task["attempt"] + 1, host=host_name), limits))
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
            "key": key, "task_id": task["id"], "attempt": task["attempt"], "submission": task["submission"],
            "fold": task["fold"], "problem": problem["name"], "data": problem["data_hash"],
            "workflow": problem["workflow"], "kind": problem["kind"], "classes": problem["classes"],
            "files": sorted(files), "limits": limits, "threads": host.threads, "max_output": 1 << 20,
        }
        (folder / "task.json").write_text(json.dumps(spec, indent=1))
        return folder


def selected_open_tasks(db, problem: str | None, submission: int | None) -> list[int]:
    sql = ("SELECT t.id FROM tasks t JOIN submissions s ON s.id = t.submission "
           "WHERE t.state IN ('queued', 'running')")
    args: list = []
    if problem:
        sql += " AND s.problem = ?"
        args.append(problem)
    if submission is not None:
        sql += " AND s.id = ?"
        args.append(submission)
    return [row[0] for row in db.execute(sql, args).fetchall()]


def task_states(db, ids: list[int]) -> dict[str, int]:
    counts = {"queued": 0, "running": 0, "done": 0, "failed": 0}
    for chunk_start in range(0, len(ids), 500):
        chunk = ids[chunk_start:chunk_start + 500]
        marks = ",".join("?" * len(chunk))
        for state, count in db.execute(
                f"SELECT state, count(*) FROM tasks WHERE id IN ({marks}) GROUP BY state", chunk):
            counts[state] = counts.get(state, 0) + count
    return counts
