"""Moving tasks forward: collect what finished, re-queue what was lost, launch what waits.

One pass (`dispatch_pass`) is what cron's `datarun dispatch` does every minute; `train`
repeats passes until the tasks it was asked for are finished. Only one dispatcher moves
tasks in a workspace at a time (an flock on `.datarun/dispatch.lock`); `submit`, `status`
and `leaderboard` run alongside freely thanks to WAL.

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
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from datarun.blobs import BlobStore
from datarun.errors import Busy, HostError
from datarun.results import ResultRejected, read_result

MAX_ATTEMPTS = 3
LEASE_GRACE = 120.0  # seconds a task may go unheard-of past its wall limit
POLL_INTERVAL = 0.1


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


class Dispatcher:
    def __init__(self, workspace, db, hosts: dict, limits: Limits | None = None,
                 max_attempts: int = MAX_ATTEMPTS):
        self.workspace = workspace
        self.db = db
        self.hosts = hosts
        self.limits = limits or Limits()
        self.max_attempts = max_attempts
        self.store = BlobStore(workspace.blobs_dir)
        self._executors: dict = {}
        self._problems: dict[str, dict] = {}
        self._labels: dict[str, tuple] = {}
        self.scratch = workspace.state_dir / "tmp"
        self.scratch.mkdir(exist_ok=True)

    # -- plumbing ---------------------------------------------------------------------------
    def executor(self, name: str):
        if name not in self._executors:
            from datarun.executors import open_executor

            self._executors[name] = open_executor(self.workspace, self.hosts[name])
        return self._executors[name]

    def close(self) -> None:
        for executor in self._executors.values():
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

    def labels(self, name: str):
        if name not in self._labels:
            from datarun.problems import load_labels

            self._labels[name] = load_labels(self.workspace, self.problem(name))
        return self._labels[name]

    # -- one pass ---------------------------------------------------------------------------
    def run_pass(self, problem: str | None = None, submission: int | None = None) -> PassReport:
        report = PassReport()
        self.collect(report)
        self.launch(report, problem=problem, submission=submission)
        return report

    def collect(self, report: PassReport) -> None:
        running = list(self.db.query(
            "SELECT t.id, t.submission, t.fold, t.attempt, t.host, t.lease_expires, s.problem "
            "FROM tasks t JOIN submissions s ON s.id = t.submission WHERE t.state = 'running'"))
        by_host: dict[str, list[dict]] = {}
        for task in running:
            by_host.setdefault(task["host"], []).append(task)
        now = time.time()
        for host_name, tasks in by_host.items():
            if host_name not in self.hosts:
                self.requeue(tasks, report, f"host {host_name} is no longer in hosts.toml")
                continue
            keys = {task_key(t["id"], t["attempt"]): t for t in tasks}
            try:
                executor = self.executor(host_name)
                poll = executor.poll(list(keys))
            except HostError as error:
                report.host_errors[host_name] = str(error)
                expired = [t for t in tasks if t["lease_expires"] and t["lease_expires"] < now]
                self.requeue(expired, report, f"host {host_name} unreachable: {error}")
                continue
            finished = [k for k, p in poll.tasks.items() if p.state == "finished" and k in keys]
            lost = [keys[k] for k in keys if poll.tasks.get(k) is None or poll.tasks[k].state == "missing"]
            if not poll.runner_alive:
                # A dead runner with tasks it had started: they died with it.
                lost += [keys[k] for k, p in poll.tasks.items() if p.state == "running" and k in keys]
                if any(p.state == "queued" for p in poll.tasks.values()):
                    try:
                        executor.launch([])
                    except HostError as error:
                        report.host_errors[host_name] = str(error)
            self.requeue(lost, report, f"host {host_name} lost the task")
            if finished:
                self.ingest(host_name, executor, [keys[k] for k in finished], report)

    def ingest(self, host_name: str, executor, tasks: list[dict], report: PassReport) -> None:
        dest = Path(tempfile.mkdtemp(dir=self.scratch, prefix="collect-"))
        try:
            try:
                fetched = set(executor.fetch([task_key(t["id"], t["attempt"]) for t in tasks], dest))
            except HostError as error:
                report.host_errors[host_name] = str(error)
                return
            clean = []
            for task in tasks:
                key = task_key(task["id"], task["attempt"])
                if key not in fetched:
                    continue
                if self.record_result(task, host_name, dest / key):
                    report.collected.append(task["id"])
                clean.append(key)
            done_keys = [k for k in clean if self._state_of(k) == "done"]
            if done_keys:
                try:
                    executor.cleanup(done_keys)
                except HostError as error:
                    report.host_errors[host_name] = str(error)
        finally:
            shutil.rmtree(dest, ignore_errors=True)
        for submission in sorted({t["submission"] for t in tasks}):
            if self.finish_submission(submission):
                report.scored_submissions.append(submission)

    def _state_of(self, key: str) -> str | None:
        task_id = int(key[1:].split("-a")[0])
        row = self.db.execute("SELECT state FROM tasks WHERE id = ?", [task_id]).fetchone()
        return row[0] if row else None

    def record_result(self, task: dict, host_name: str, folder: Path) -> bool:
        """Store one task's result; False if it was a late result of an attempt already given up."""
        from datarun.scores import task_scores

        problem = self.problem(task["problem"])
        classes = problem["classes"]
        key = task_key(task["id"], task["attempt"])
        scores = []
        try:
            result = read_result(folder, key, problem["n_train"], problem["n_test"],
                                 len(classes) if classes else None)
        except ResultRejected as error:
            state, kind, text, measures, environment, preds, log = (
                "failed", "harness_error", f"result from host {host_name} rejected: {error}", {}, {}, None, b"")
        else:
            state, kind, text = result.state, result.error_kind, result.error
            measures, environment, log = result.measures, result.environment, result.log
            preds = None
            if state == "done":
                from datarun.problems import load_fold

                y_train, y_test = self.labels(task["problem"])
                train_idx, valid_idx = load_fold(self.workspace, self.db, task["problem"], task["fold"])
                scores = task_scores(problem["kind"], classes, problem["score_names"], y_train, y_test,
                                     train_idx, valid_idx, result.y_pred_train, result.y_pred_test)
                preds = (self.store.put_array(result.y_pred_train), self.store.put_array(result.y_pred_test))
        environment = dict(environment, host=host_name)
        log_hash = self.store.put_bytes(log) if log else None
        with self.db.conn:
            self.db.conn.execute("BEGIN IMMEDIATE")
            cursor = self.db.execute(
                "UPDATE tasks SET state = ?, error_kind = ?, error = ?, finished_at = ?, train_time = ?, "
                "valid_time = ?, test_time = ?, wall_time = ?, cpu_time = ?, peak_memory = ?, "
                "pred_train = ?, pred_test = ?, log = ?, environment = ?, lease_expires = NULL "
                "WHERE id = ? AND state = 'running' AND attempt = ?",
                [state, kind, text, time.time(), measures.get("train_time"), measures.get("valid_time"),
                 measures.get("test_time"), measures.get("wall_time"), measures.get("cpu_time"),
                 int(measures["peak_memory"]) if measures.get("peak_memory") is not None else None,
                 preds[0] if preds else None, preds[1] if preds else None, log_hash,
                 json.dumps(environment), task["id"], task["attempt"]])
            if cursor.rowcount != 1:
                return False
            self.db.execute("DELETE FROM scores WHERE task = ?", [task["id"]])
            self.db.conn.executemany(
                "INSERT INTO scores (task, split, score, value) VALUES (?, ?, ?, ?)",
                [(task["id"], split, name, value) for split, name, value in scores])
        return True

    def finish_submission(self, submission: int) -> bool:
        """Compute bagged scores once every fold is done; True if it was computed now."""
        from datarun.problems import load_fold
        from datarun.scores import bagged_scores

        rows = list(self.db.query(
            "SELECT t.fold, t.state, t.pred_train, t.pred_test, s.problem FROM tasks t "
            "JOIN submissions s ON s.id = t.submission WHERE t.submission = ? ORDER BY t.fold", [submission]))
        if not rows or any(r["state"] != "done" for r in rows):
            return False
        if self.db.execute("SELECT 1 FROM bagged_scores WHERE submission = ?", [submission]).fetchone():
            return False
        name = rows[0]["problem"]
        problem = self.problem(name)
        y_train, y_test = self.labels(name)
        valid_indices = [load_fold(self.workspace, self.db, name, r["fold"])[1] for r in rows]
        preds_train = [self.store.get_array(r["pred_train"]) for r in rows]
        preds_test = [self.store.get_array(r["pred_test"]) for r in rows]
        scores = bagged_scores(problem["kind"], problem["classes"], problem["score_names"], y_train, y_test,
                               valid_indices, preds_train, preds_test)
        with self.db.conn:
            self.db.conn.execute("BEGIN IMMEDIATE")
            self.db.conn.executemany(
                "INSERT OR REPLACE INTO bagged_scores (submission, split, score, value) VALUES (?, ?, ?, ?)",
                [(submission, split, score, value) for split, score, value in scores])
        return True

    def requeue(self, tasks: list[dict], report: PassReport, reason: str) -> None:
        """Put lost tasks back in the queue, or fail them as host_lost after max_attempts."""
        if not tasks:
            return
        with self.db.conn:
            self.db.conn.execute("BEGIN IMMEDIATE")
            for task in tasks:
                if task["attempt"] >= self.max_attempts:
                    self.db.execute(
                        "UPDATE tasks SET state = 'failed', error_kind = 'host_lost', error = ?, "
                        "finished_at = ?, lease_expires = NULL WHERE id = ? AND state = 'running' AND attempt = ?",
                        [f"{reason} (attempt {task['attempt']} of {self.max_attempts})", time.time(),
                         task["id"], task["attempt"]])
                else:
                    self.db.execute(
                        "UPDATE tasks SET state = 'queued', host = NULL, slot = NULL, lease_expires = NULL "
                        "WHERE id = ? AND state = 'running' AND attempt = ?", [task["id"], task["attempt"]])
                report.requeued.append(task["id"])

    # -- launching ----------------------------------------------------------------------------
    def free_slots(self) -> dict[str, list[int]]:
        busy: dict[str, set[int]] = {}
        memory: dict[str, int] = {}
        for row in self.db.query("SELECT host, slot, limits FROM tasks WHERE state = 'running'"):
            busy.setdefault(row["host"], set()).add(row["slot"])
            limits = json.loads(row["limits"]) if row["limits"] else {}
            memory[row["host"]] = memory.get(row["host"], 0) + (limits.get("memory") or 0)
        self._memory_in_use = memory
        return {name: [s for s in range(host.slots) if s not in busy.get(name, set())]
                for name, host in self.hosts.items()}

    def launch(self, report: PassReport, problem: str | None = None, submission: int | None = None) -> None:
        free = self.free_slots()
        capacity = sum(len(v) for v in free.values())
        if not capacity:
            return
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
        queued = list(self.db.query(sql, args + [capacity]))
        plan = self.assign(queued, free)
        for host_name, assigned in plan.items():
            self.launch_on(host_name, assigned, report)

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

    def launch_on(self, host_name: str, assigned: list, report: PassReport) -> None:
        host = self.hosts[host_name]
        now = time.time()
        with self.db.conn:
            self.db.conn.execute("BEGIN IMMEDIATE")
            claimed = []
            for task, slot, limits in assigned:
                lease = now + (limits.get("wall_time") or 3600) + LEASE_GRACE
                cursor = self.db.execute(
                    "UPDATE tasks SET state = 'running', attempt = attempt + 1, host = ?, slot = ?, "
                    "started_at = ?, lease_expires = ?, limits = ?, error_kind = NULL, error = NULL "
                    "WHERE id = ? AND state = 'queued'",
                    [host_name, slot, now, lease, json.dumps(limits), task["id"]])
                if cursor.rowcount == 1:
                    claimed.append((dict(task, attempt=task["attempt"] + 1), limits))
        if not claimed:
            return
        staging = Path(tempfile.mkdtemp(dir=self.scratch, prefix="bundles-"))
        try:
            bundles = [self.build_bundle(staging, task, limits, host) for task, limits in claimed]
            data = {}
            for task, _ in claimed:
                problem = self.problem(task["problem"])
                data[problem["data_hash"]] = self.store.tree_path(problem["data_hash"])
            executor = self.executor(host_name)
            executor.prepare(data)
            executor.launch(bundles)
        except HostError as error:
            report.host_errors[host_name] = str(error)
            with self.db.conn:
                self.db.conn.execute("BEGIN IMMEDIATE")
                for task, _ in claimed:
                    self.db.execute(
                        "UPDATE tasks SET state = 'queued', attempt = attempt - 1, host = NULL, slot = NULL, "
                        "lease_expires = NULL WHERE id = ? AND state = 'running' AND attempt = ?",
                        [task["id"], task["attempt"]])
            return
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        report.launched.extend(task["id"] for task, _ in claimed)

    def build_bundle(self, staging: Path, task: dict, limits: dict, host) -> Path:
        """A task bundle as docs/PROTOCOL.md gives it: task.json, fold indices, submission files."""
        from datarun.problems import load_fold

        problem = self.problem(task["problem"])
        key = task_key(task["id"], task["attempt"])
        folder = staging / key
        (folder / "submission").mkdir(parents=True)
        files = json.loads(task["files"])
        for name, digest in files.items():
            shutil.copyfile(self.store.path(digest), folder / "submission" / name)
        train_idx, valid_idx = load_fold(self.workspace, self.db, task["problem"], task["fold"])
        import numpy as np

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
