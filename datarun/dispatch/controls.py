"""Operator controls: retry a submission's failed tasks, cancel its open ones, read a task's
output, clean this workspace's leftovers off a host.

These work beside a running dispatcher. Every state change is a transition of
`datarun.store.tasks`, guarded on the task's state and attempt, as the dispatcher's own
are: a task cancelled here is `cancelled` before any host is contacted, so a dispatcher
can no longer claim it, and a result arriving later for it matches no running attempt and
is dropped. Only then are the hosts asked to kill the cancelled tasks' process trees
(harness `cancel`) and to remove their folders; a host that cannot be reached is
reported, and its task, already cancelled, is never counted whatever it does.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

from datarun.challenge.submissions import get_submission
from datarun.dispatch.lanes import Leftovers
from datarun.dispatch.train import dispatcher_lock
from datarun.errors import DatarunError, HostError, NotFound, UsageError
from datarun.executors import open_executor
from datarun.executors.base import Executor
from datarun.executors.hosts import get_host, load_hosts
from datarun.problems.registered import get_problem
from datarun.store import scores as stored_scores
from datarun.store import taskqueries, tasks
from datarun.store.blobs import BlobStore
from datarun.store.db import Database, transaction
from datarun.store.task_events import events_of
from datarun.store.tasks import TaskState
from datarun.store.workspace import Workspace

T = TypeVar("T")


def _states(db: Database, submission: int) -> str:
    counts: dict[str, int] = {}
    for task in tasks.of_submission(db, submission):
        counts[task.state] = counts.get(task.state, 0) + 1
    return ", ".join(f"{count} {state}" for state, count in sorted(counts.items())) or "no tasks"


def retry_submission(workspace: Workspace, db: Database, submission: int | str) -> dict[str, Any]:
    """Re-queue a submission's failed and cancelled tasks, their error cleared and their loss
    count reset."""
    sub = get_submission(db, submission)
    with transaction(db):
        requeued = tasks.retry(db, sub["id"], time.time())
        if not requeued:
            raise UsageError(f"submission {sub['id']} has no failed or cancelled tasks to retry "
                             f"(its tasks: {_states(db, sub['id'])})")
        # Bagged scores are computed once every fold is done: after the retry, anew.
        stored_scores.forget(db, requeued, sub["id"])
    return {"submission": sub["id"], "requeued": requeued}


def cancel_submission(workspace: Workspace, db: Database, submission: int | str) -> dict[str, Any]:
    """Cancel a submission's queued and running tasks; kill the running ones on their hosts."""
    sub = get_submission(db, submission)
    with transaction(db):
        cancelled = tasks.cancel(db, sub["id"], time.time())
        if not cancelled:
            raise UsageError(f"submission {sub['id']} has no queued or running tasks to cancel "
                             f"(its tasks: {_states(db, sub['id'])})")
    on_hosts: dict[str, list[str]] = {}
    for task in cancelled:
        if task.state == TaskState.RUNNING and task.host:
            on_hosts.setdefault(task.host, []).append(task.key)
    host_errors = {}
    for name, keys in sorted(on_hosts.items()):
        def kill(executor: Executor, keys: list[str] = keys) -> None:
            executor.cancel(keys)
            executor.cleanup(keys)

        try:
            _on_host(workspace, name, kill)
        except DatarunError as error:
            host_errors[name] = (f"{error}; its tasks are marked cancelled and whatever they "
                                 "still produce is ignored")
    return {
        "submission": sub["id"],
        "cancelled": [task.id for task in cancelled],
        "queued": [task.id for task in cancelled if task.state == TaskState.QUEUED],
        "running": [task.id for task in cancelled if task.state == TaskState.RUNNING],
        "host_errors": host_errors,
    }


def _on_host(workspace: Workspace, name: str, action: Callable[[Executor], T]) -> T:
    """Run `action(executor)` on host NAME and close the executor after."""
    hosts = load_hosts(workspace.hosts_file)
    if name not in hosts:
        raise HostError(f"host {name} is no longer in hosts.toml")
    executor = open_executor(workspace, hosts[name])
    try:
        return action(executor)
    except OSError as error:  # executors raise HostError; a bare OSError is still the host's
        raise HostError(f"host {name}: {type(error).__name__}: {error}") from None
    finally:
        executor.close()


def task_log(workspace: Workspace, db: Database, task: int | str) -> dict[str, Any]:
    """A task's captured output: from the blob store once collected, else from its host."""
    try:
        task_id = int(task)
    except (TypeError, ValueError):
        raise UsageError(f"a task id is a number, got {task!r}") from None
    row = taskqueries.get(db, task_id)
    if row is None:
        raise NotFound(f"no task {task_id}: `datarun submission show ID` lists a submission's tasks")
    result = {"task": task_id, "submission": row.submission, "state": str(row.state), "host": row.host,
              "error_kind": row.error_kind, "error": row.error,  # a failed task's traceback
              "events": events_of(db, [task_id])[task_id]}
    problem = get_problem(db, row.problem)
    if problem.get("sensitive"):
        raise UsageError(f"task {task_id} is of sensitive problem {problem['name']}: its output stays on "
                         "the data owner's host (`submission show` gives its scores and error kind)")
    if row.log:
        text = BlobStore(workspace.blobs_dir).get_bytes(row.log).decode("utf-8", "replace")
        return {**result, "source": "store", "log": text}
    if row.state == TaskState.RUNNING and row.host:
        text = _on_host(workspace, row.host, lambda executor: executor.log(row.key))
        return {**result, "source": "host", "log": text}
    if row.state == TaskState.QUEUED:
        raise UsageError(f"task {task_id} is queued: it has no output yet (`datarun train` runs it)")
    return {**result, "source": None, "log": ""}  # it ended without printing anything


def clean_host(workspace: Workspace, db: Database, name: str, force: bool = False) -> dict[str, Any]:
    """Remove this workspace's leftovers on host NAME: every task folder of its own there
    (finished, queued, or left by an attempt given up on), but those of the attempts the
    database has running on that host. An attempt given up on that still runs there is
    kept unless `force`: then it is cancelled (its process tree killed) and removed.

    Only this workspace's folder on the host is touched, never another workspace's. Runs
    under the dispatcher lock, so no task is claimed or shipped meanwhile."""
    get_host(load_hosts(workspace.hosts_file), name)
    with dispatcher_lock(workspace, wait=False):
        live = [task.key for task in taskqueries.running(db, name)]
        result = _on_host(workspace, name, lambda executor: executor.clean(live, force))
        leftovers = Leftovers(workspace.leftovers_path)
        leftovers.forget(name, result.get("removed") or [])
    return {"host": name, "workspace": workspace.id, "removed": result.get("removed") or [],
            "running": result.get("running") or [], "kept": result.get("kept") or [],
            "freed": result.get("freed") or 0}
