"""`train` and `dispatch`: passes of the dispatcher under the workspace lock."""

import time
from collections.abc import Callable

from datarun.dispatch import (
    POLL_INTERVAL,
    Dispatcher,
    Limits,
    dispatcher_lock,
    selected_open_tasks,
    task_states,
)
from datarun.hosts import load_hosts


def _check_selection(db, problem: str | None, submission: int | None) -> None:
    if problem:
        from datarun.problems import get_problem

        get_problem(db, problem)
    if submission is not None:
        from datarun.submissions import get_submission

        get_submission(db, submission)


def train(workspace, db, problem: str | None = None, submission: int | None = None,
          limits: Limits | None = None, on_progress: Callable[[dict], None] | None = None,
          on_wait: Callable[[], None] | None = None) -> dict:
    """Run passes until every selected queued or running task is done or failed."""
    _check_selection(db, problem, submission)
    hosts = load_hosts(workspace.hosts_file)
    with dispatcher_lock(workspace, wait=True, on_wait=on_wait):
        selected = selected_open_tasks(db, problem, submission)
        dispatcher = Dispatcher(workspace, db, hosts, limits)
        host_errors: dict[str, str] = {}
        started = time.time()
        try:
            while True:
                report = dispatcher.run_pass(problem=problem, submission=submission)
                host_errors.update(report.host_errors)
                counts = task_states(db, selected)
                if on_progress:
                    on_progress(dict(counts, total=len(selected), host_errors=dict(report.host_errors)))
                if counts["queued"] + counts["running"] == 0:
                    break
                if not report.launched and not report.collected and counts["running"] == 0 and report.host_errors:
                    # Nothing runs and no host takes work: stop rather than spin.
                    break
                time.sleep(POLL_INTERVAL)
        finally:
            dispatcher.close()
    return {"tasks": len(selected), "wall_time": time.time() - started, **counts,
            "host_errors": host_errors}


def dispatch_once(workspace, db, limits: Limits | None = None) -> dict:
    """One non-blocking pass, for cron: collect, re-queue, launch; Busy if another dispatcher runs."""
    hosts = load_hosts(workspace.hosts_file)
    with dispatcher_lock(workspace, wait=False):
        dispatcher = Dispatcher(workspace, db, hosts, limits)
        try:
            report = dispatcher.run_pass()
        finally:
            dispatcher.close()
    return {"collected": len(report.collected), "launched": len(report.launched),
            "requeued": len(report.requeued), "scored_submissions": report.scored_submissions,
            "host_errors": report.host_errors}
