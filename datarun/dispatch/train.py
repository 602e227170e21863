"""`train` and `dispatch`: the dispatcher's loop and its single pass, under the workspace lock."""

import fcntl
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager

from datarun.dispatch.dispatcher import MAX_ATTEMPTS, POLL_INTERVAL, Dispatcher, Limits, PassReport
from datarun.dispatch.schedule import any_queued, selection
from datarun.errors import Busy, UsageError
from datarun.executors.hosts import load_hosts

GIVE_UP_FAILURES = 4  # failed syncs in a row on every host, with nothing running: stop


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


def selected_open_tasks(db, problem: str | None, submission: int | None) -> list[int]:
    where, args = selection(problem, submission)
    sql = ("SELECT t.id FROM tasks t JOIN submissions s ON s.id = t.submission "
           f"WHERE t.state IN ('queued', 'running'){where}")
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


def _check_attempts(max_attempts: int) -> None:
    if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1:
        raise UsageError(f"--max-attempts must be a whole number of at least 1, got {max_attempts!r}")


def _check_selection(db, problem: str | None, submission: int | None) -> None:
    if problem:
        from datarun.problems.registry import get_problem

        get_problem(db, problem)
    if submission is not None:
        from datarun.challenge.submissions import get_submission

        get_submission(db, submission)


def _preload_ramp_scoring(db, problem: str | None, submission: int | None) -> None:
    """Import ramp-workflow on a thread while the first tasks ship and run, when a RAMP
    kit is among the selected tasks' problems.

    Its score types would otherwise pay ramp-workflow's and scikit-learn's import (~1 s)
    on the dispatcher's critical path, after the hosts' runners have already paid theirs.
    Native kits score with `datarun.scoring.metrics` and need neither.
    """
    where, args = selection(problem, submission)
    ramp = db.execute(
        "SELECT 1 FROM tasks t JOIN submissions s ON s.id = t.submission "
        "JOIN problems p ON p.name = s.problem "
        f"WHERE p.workflow = 'ramp' AND t.state IN ('queued', 'running'){where} LIMIT 1",
        args).fetchone()
    if not ramp:
        return

    def load() -> None:
        try:
            import rampwf.utils.combine  # noqa: F401
        except ImportError:  # scoring will say so itself
            pass

    threading.Thread(target=load, name="datarun-preload", daemon=True).start()


def train(workspace, db, problem: str | None = None, submission: int | None = None,
          limits: Limits | None = None, on_progress: Callable[[dict], None] | None = None,
          on_wait: Callable[[], None] | None = None, max_attempts: int = MAX_ATTEMPTS) -> dict:
    """Run the dispatcher until every selected queued or running task is done or failed.

    A task whose host is lost under it goes back to the queue; the `max_attempts`-th loss
    fails it as `host_lost`.
    """
    _check_attempts(max_attempts)
    _check_selection(db, problem, submission)
    hosts = load_hosts(workspace.hosts_file)
    with dispatcher_lock(workspace, wait=True, on_wait=on_wait):
        selected = selected_open_tasks(db, problem, submission)
        if selected:
            _preload_ramp_scoring(db, problem, submission)
        dispatcher = Dispatcher(workspace, db, hosts, limits, max_attempts=max_attempts)
        report = PassReport()
        started = time.time()
        try:
            while True:
                dispatcher.step(report, problem=problem, submission=submission)
                counts = task_states(db, selected)
                if on_progress:
                    on_progress(dict(counts, total=len(selected)))
                if counts["queued"] + counts["running"] == 0:
                    break
                if counts["running"] == 0 and all(
                        lane.failures >= GIVE_UP_FAILURES or name in dispatcher.unusable
                        for name, lane in dispatcher.lanes.items()):
                    break  # no host takes work: say so rather than spin
                dispatcher.wait(POLL_INTERVAL)
            dispatcher.refresh_blends()
        finally:
            dispatcher.close()
    errors = {name: dispatcher.last_error[name] for name in dispatcher.failing_since
              if name in dispatcher.last_error}
    if counts["queued"]:
        errors.update(dispatcher.unusable_reasons)
    return {"tasks": len(selected), "wall_time": time.time() - started, **counts,
            "requeued": len(report.requeued), "late": len(report.late), "host_errors": errors}


def dispatch_once(workspace, db, limits: Limits | None = None, max_attempts: int = MAX_ATTEMPTS) -> dict:
    """One non-blocking pass, for cron: collect, re-queue, launch; Busy if another dispatcher runs."""
    _check_attempts(max_attempts)
    hosts = load_hosts(workspace.hosts_file)
    with dispatcher_lock(workspace, wait=False):
        dispatcher = Dispatcher(workspace, db, hosts, limits, max_attempts=max_attempts)
        try:
            report = dispatcher.run_pass()
        finally:
            dispatcher.close()
    errors = dict(report.host_errors)
    if dispatcher.unusable_reasons and any_queued(db, None, None):
        errors.update(dispatcher.unusable_reasons)
    return {"collected": len(report.collected), "launched": len(report.launched),
            "requeued": len(report.requeued), "late": len(report.late),
            "scored_submissions": report.scored_submissions, "host_errors": errors}
