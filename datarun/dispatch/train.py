"""`train` and `dispatch`: the dispatcher's loop and its single pass, under the workspace lock."""

from __future__ import annotations

import fcntl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from datarun.challenge.submissions import get_submission
from datarun.dispatch.dispatcher import MAX_ATTEMPTS, POLL_INTERVAL, Dispatcher, Limits, PassReport
from datarun.dispatch.hooks import HookRunner, load_hooks
from datarun.errors import Busy, UsageError
from datarun.executors.hosts import load_hosts
from datarun.problems.registered import get_problem
from datarun.store import taskqueries
from datarun.store.db import Database
from datarun.store.taskqueries import Selection
from datarun.store.tasks import Task
from datarun.store.workspace import Workspace

GIVE_UP_FAILURES = 4  # failed syncs in a row on every host, with nothing running: stop


@contextmanager
def dispatcher_lock(workspace: Workspace, wait: bool, on_wait: Callable[[], None] | None = None) -> Iterator[None]:
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


def _hook_runner(workspace: Workspace) -> HookRunner:
    """The workspace's hooks (datarun.toml), read before anything moves: a bad file stops
    the command at once (exit 2) rather than after a pass."""
    return HookRunner(workspace.root, workspace.state_dir / "hooks.log", load_hooks(workspace.root))


def _check_attempts(max_attempts: int) -> None:
    if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1:
        raise UsageError(f"--max-attempts must be a whole number of at least 1, got {max_attempts!r}")


def _check_selection(db: Database, selection: Selection) -> None:
    if selection.problem:
        get_problem(db, selection.problem)
    if selection.submission is not None:
        get_submission(db, selection.submission)


def _preload_ramp_scoring(db: Database, selection: Selection) -> None:
    """Import ramp-workflow on a thread while the first tasks ship and run, when a RAMP
    kit is among the selected tasks' problems.

    Its score types would otherwise pay ramp-workflow's and scikit-learn's import (~1 s)
    on the dispatcher's critical path, after the hosts' runners have already paid theirs.
    Native kits score with `datarun.remote.scoring.metrics` and need neither.
    """
    if not taskqueries.any_open_of_workflow(db, "ramp", selection):
        return

    def load() -> None:
        try:
            import rampwf.utils.combine  # noqa: F401
        except ImportError:  # scoring will say so itself
            pass

    threading.Thread(target=load, name="datarun-preload", daemon=True).start()


def train(workspace: Workspace, db: Database, problem: str | None = None, submission: int | None = None,
          limits: Limits | None = None, on_progress: Callable[[dict[str, int]], None] | None = None,
          on_wait: Callable[[], None] | None = None, max_attempts: int = MAX_ATTEMPTS,
          on_unfit: Callable[[list[str]], None] | None = None) -> dict[str, Any]:
    """Run the dispatcher until every selected queued or running task has finished, or
    until what is left fits no host.

    A task whose host is lost under it goes back to the queue; the `max_attempts`-th loss
    fails it as `host_lost`. Tasks that fit no host (a requirement no host meets, a memory
    limit over every cap, every fitting host unusable) are told to `on_unfit` at once, one
    line each; the others run, then `train` stops with them still queued.
    """
    _check_attempts(max_attempts)
    selection = Selection(problem, submission)
    _check_selection(db, selection)
    hosts = load_hosts(workspace.hosts_file)
    hooks = _hook_runner(workspace)
    with dispatcher_lock(workspace, wait=True, on_wait=on_wait):
        selected = taskqueries.open_ids(db, selection)
        if selected:
            _preload_ramp_scoring(db, selection)
        dispatcher = Dispatcher(workspace, db, hosts, limits, max_attempts=max_attempts, hooks=hooks)
        report = PassReport()
        started = time.time()
        unfit = dispatcher.unfit(selection)
        if unfit and on_unfit:
            on_unfit([u.line for u in unfit])
        try:
            while True:
                dispatcher.step(report, selection)
                counts = taskqueries.count_states(db, selected)
                if on_progress:
                    on_progress(dict(counts, total=len(selected)))
                if counts["queued"] + counts["running"] == 0:
                    break
                if counts["running"] == 0:
                    unfit = dispatcher.unfit(selection)
                    if sum(len(u.tasks) for u in unfit) >= counts["queued"]:
                        break  # what is left can never run: said above, and in the summary
                    if dispatcher.none_takes_tasks(GIVE_UP_FAILURES):
                        break  # no host takes work: say so rather than spin
                dispatcher.wait(POLL_INTERVAL)
            dispatcher.collector.refresh_blends()
        finally:
            dispatcher.close()
    errors = dispatcher.host_errors()
    if counts["queued"] and not unfit:  # an unfit task's report names its hosts' reasons
        errors.update(dispatcher.unusable_reasons())
    return {"tasks": len(selected), "wall_time": time.time() - started, **counts,
            "requeued": len(report.requeued), "late": len(report.late),
            "scored_submissions": report.scored_submissions,
            "failed_submissions": report.failed_submissions, "host_errors": errors,
            "unfit": [u.to_dict() for u in unfit] if counts["queued"] else [],
            "hook_failures": hooks.wait()}


def dispatch_once(workspace: Workspace, db: Database, limits: Limits | None = None,
                  max_attempts: int = MAX_ATTEMPTS) -> dict[str, Any]:
    """One non-blocking pass, for cron: collect, re-queue, launch; Busy if another dispatcher runs."""
    _check_attempts(max_attempts)
    hosts = load_hosts(workspace.hosts_file)
    hooks = _hook_runner(workspace)
    with dispatcher_lock(workspace, wait=False):
        dispatcher = Dispatcher(workspace, db, hosts, limits, max_attempts=max_attempts, hooks=hooks)
        try:
            report = dispatcher.run_pass()
            unfit = dispatcher.unfit()
        finally:
            dispatcher.close()
    errors = dict(report.host_errors)
    if dispatcher.unusable_reasons() and taskqueries.any_queued(db) and not unfit:
        errors.update(dispatcher.unusable_reasons())
    return {"collected": len(report.collected), "launched": len(report.launched),
            "requeued": len(report.requeued), "late": len(report.late),
            "scored_submissions": report.scored_submissions,
            "failed_submissions": report.failed_submissions, "host_errors": errors,
            "unfit": [u.to_dict() for u in unfit], "hook_failures": hooks.wait()}


def left_running(db: Database) -> dict[str, list[Task]]:
    """The tasks still running on each host, for an interrupted `train` to name: they go on
    there (a runner is detached) until collected by the next `train` or `dispatch`, or
    stopped by `cancel`."""
    by_host: dict[str, list[Task]] = {}
    for task in taskqueries.running(db):
        by_host.setdefault(task.host or "?", []).append(task)
    return by_host


def interrupted_lines(by_host: dict[str, list[Task]], queued: int) -> list[str]:
    """What an interrupted `train` says: what keeps running where, and how to stop it."""
    if not by_host:
        return ["interrupted: no task is running on any host"
                + (f"; {queued} queued wait for the next `datarun train`" if queued else "")]
    count = sum(len(running) for running in by_host.values())
    lines = [f"interrupted: {count} task{'s' if count != 1 else ''} keep running on "
             f"{len(by_host)} host{'s' if len(by_host) != 1 else ''}:"]
    submissions: set[int] = set()
    for host, running in sorted(by_host.items()):
        named = ", ".join(f"submission {task.submission} fold {task.fold}" for task in running[:8])
        more = f" and {len(running) - 8} more" if len(running) > 8 else ""
        lines.append(f"  host {host}: {named}{more}")
        submissions.update(task.submission for task in running)
    ids = " ".join(str(s) for s in sorted(submissions))
    lines.append("the next `datarun train` (or `datarun dispatch`) collects their results"
                 + (f", {queued} queued wait for it" if queued else "")
                 + f"; to stop them: `datarun cancel SUBMISSION` for each of {ids}")
    return lines
