"""`train` and `dispatch`: the dispatcher's loop and its single pass, under the workspace lock."""

import time
from collections.abc import Callable

from datarun.dispatch import (
    MAX_ATTEMPTS,
    POLL_INTERVAL,
    Dispatcher,
    Limits,
    PassReport,
    dispatcher_lock,
    selected_open_tasks,
    task_states,
)
from datarun.errors import UsageError
from datarun.hosts import load_hosts

GIVE_UP_FAILURES = 4  # failed syncs in a row on every host, with nothing running: stop


def _check_attempts(max_attempts: int) -> None:
    if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1:
        raise UsageError(f"--max-attempts must be a whole number of at least 1, got {max_attempts!r}")


def _check_selection(db, problem: str | None, submission: int | None) -> None:
    if problem:
        from datarun.problems import get_problem

        get_problem(db, problem)
    if submission is not None:
        from datarun.submissions import get_submission

        get_submission(db, submission)


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
                        lane.failures >= GIVE_UP_FAILURES for lane in dispatcher.lanes.values()):
                    break  # no host takes work: say so rather than spin
                dispatcher.wait(POLL_INTERVAL)
        finally:
            dispatcher.close()
    errors = {name: dispatcher.last_error[name] for name in dispatcher.failing_since
              if name in dispatcher.last_error}
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
    return {"collected": len(report.collected), "launched": len(report.launched),
            "requeued": len(report.requeued), "late": len(report.late),
            "scored_submissions": report.scored_submissions, "host_errors": report.host_errors}
