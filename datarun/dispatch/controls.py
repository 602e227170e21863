"""Operator controls: retry a submission's failed tasks, cancel its open ones, read a task's
output, clean this workspace's leftovers off a host.

These work beside a running dispatcher. Every state change is one `BEGIN IMMEDIATE`
transaction guarded on the task's state, as the dispatcher's own are: a task cancelled
here is `failed` before any host is contacted, so a dispatcher can no longer claim it, and
a result arriving later for it matches no `running` row and is dropped. Only then are the
hosts asked to kill the cancelled tasks' process trees (harness `cancel`) and to remove
their folders; a host that cannot be reached is reported, and its task, already marked
cancelled, is never counted whatever it does.
"""

import time

from datarun.errors import DatarunError, HostError, NotFound, UsageError

CANCELLED = "cancelled by the organiser"
# What a retried task forgets: the previous attempt's outcome and measurements.
_RESET_COLUMNS = (
    "error_kind", "error", "host", "slot", "lease_expires", "started_at", "finished_at",
    "train_time", "valid_time", "test_time", "wall_time", "cpu_time", "peak_memory",
    "pred_train", "pred_test", "log", "environment", "ran_from", "ran_to",
)


def _states(db, submission: int) -> str:
    counts = db.execute(
        "SELECT state, count(*) FROM tasks WHERE submission = ? GROUP BY state ORDER BY state",
        [submission]).fetchall()
    return ", ".join(f"{count} {state}" for state, count in counts) or "no tasks"


def retry_submission(workspace, db, submission: int | str) -> dict:
    """Re-queue a submission's failed tasks, their error cleared and their loss count reset."""
    from datarun.challenge.submissions import get_submission

    sub = get_submission(db, submission)
    with db.conn:
        db.conn.execute("BEGIN IMMEDIATE")
        failed = [row[0] for row in db.execute(
            "SELECT id FROM tasks WHERE submission = ? AND state = 'failed' ORDER BY fold", [sub["id"]])]
        if not failed:
            raise UsageError(f"submission {sub['id']} has no failed tasks to retry "
                             f"(its tasks: {_states(db, sub['id'])})")
        marks = ",".join("?" * len(failed))
        resets = ", ".join(f"{column} = NULL" for column in _RESET_COLUMNS)
        db.execute(f"UPDATE tasks SET state = 'queued', lost = 0, queued_at = ?, {resets} "
                   f"WHERE id IN ({marks}) AND state = 'failed'", [time.time(), *failed])
        db.execute(f"DELETE FROM scores WHERE task IN ({marks})", failed)
        # Bagged scores are computed once every fold is done: after the retry, anew.
        db.execute("DELETE FROM bagged_scores WHERE submission = ?", [sub["id"]])
    return {"submission": sub["id"], "requeued": failed}


def cancel_submission(workspace, db, submission: int | str) -> dict:
    """Fail a submission's queued and running tasks as `cancelled`; kill the running ones on their hosts."""
    from datarun.challenge.submissions import get_submission
    from datarun.dispatch.dispatcher import task_key

    sub = get_submission(db, submission)
    with db.conn:
        db.conn.execute("BEGIN IMMEDIATE")
        rows = [dict(zip(("id", "state", "attempt", "host"), row, strict=True)) for row in db.execute(
            "SELECT id, state, attempt, host FROM tasks WHERE submission = ? "
            "AND state IN ('queued', 'running') ORDER BY fold", [sub["id"]])]
        if not rows:
            raise UsageError(f"submission {sub['id']} has no queued or running tasks to cancel "
                             f"(its tasks: {_states(db, sub['id'])})")
        marks = ",".join("?" * len(rows))
        db.execute(
            "UPDATE tasks SET state = 'failed', error_kind = 'cancelled', error = ?, finished_at = ?, "
            f"lease_expires = NULL WHERE id IN ({marks}) AND state IN ('queued', 'running')",
            [CANCELLED, time.time(), *(row["id"] for row in rows)])
    on_hosts: dict[str, list[str]] = {}
    for row in rows:
        if row["state"] == "running" and row["host"]:
            on_hosts.setdefault(row["host"], []).append(task_key(row["id"], row["attempt"]))
    host_errors = {}
    for name, keys in sorted(on_hosts.items()):
        try:
            _on_host(workspace, name, lambda executor, keys=keys: (executor.cancel(keys),
                                                                   executor.cleanup(keys)))
        except DatarunError as error:
            host_errors[name] = (f"{error}; its tasks are marked cancelled and whatever they "
                                 "still produce is ignored")
    return {
        "submission": sub["id"],
        "cancelled": [row["id"] for row in rows],
        "queued": [row["id"] for row in rows if row["state"] == "queued"],
        "running": [row["id"] for row in rows if row["state"] == "running"],
        "host_errors": host_errors,
    }


def _on_host(workspace, name: str, action):
    """Run `action(executor)` on host NAME, with harness refusals as HostError; close after."""
    from datarun.executors import open_executor
    from datarun.executors.hosts import load_hosts
    from datarun.remote.common import HarnessError

    hosts = load_hosts(workspace.hosts_file)
    if name not in hosts:
        raise HostError(f"host {name} is no longer in hosts.toml")
    executor = open_executor(workspace, hosts[name])
    try:
        return action(executor)
    except HarnessError as error:
        raise HostError(f"host {name}: {error}") from None
    except OSError as error:
        raise HostError(f"host {name}: {type(error).__name__}: {error}") from None
    finally:
        executor.close()


def task_log(workspace, db, task: int | str) -> dict:
    """A task's captured output: from the blob store once collected, else from its host."""
    from datarun.dispatch.dispatcher import task_key
    from datarun.store.blobs import BlobStore

    try:
        task_id = int(task)
    except (TypeError, ValueError):
        raise UsageError(f"a task id is a number, got {task!r}") from None
    row = db.execute("SELECT id, submission, state, attempt, host, log FROM tasks WHERE id = ?",
                     [task_id]).fetchone()
    if row is None:
        raise NotFound(f"no task {task_id}: `datarun submission show ID` lists a submission's tasks")
    from datarun.store.task_events import events_of

    _, submission, state, attempt, host, log_hash = row
    result = {"task": task_id, "submission": submission, "state": state, "host": host,
              "events": events_of(db, [task_id])[task_id]}
    if log_hash:
        text = BlobStore(workspace.blobs_dir).get_bytes(log_hash).decode("utf-8", "replace")
        return {**result, "source": "store", "log": text}
    if state == "running":
        text = _on_host(workspace, host, lambda executor: executor.log(task_key(task_id, attempt)))
        return {**result, "source": "host", "log": text}
    if state == "queued":
        raise UsageError(f"task {task_id} is queued: it has no output yet (`datarun train` runs it)")
    return {**result, "source": None, "log": ""}  # it ended without printing anything


def clean_host(workspace, db, name: str, force: bool = False) -> dict:
    """Remove this workspace's leftovers on host NAME: every task folder of its own there
    (finished, queued, or left by an attempt given up on), but those of the attempts the
    database has running on that host. An attempt given up on that still runs there is
    kept unless `force`: then it is cancelled (its process tree killed) and removed.

    Only this workspace's folder on the host is touched, never another workspace's. Runs
    under the dispatcher lock, so no task is claimed or shipped meanwhile."""
    from datarun.dispatch.collect import task_key
    from datarun.dispatch.lanes import Leftovers
    from datarun.dispatch.train import dispatcher_lock
    from datarun.executors.hosts import get_host, load_hosts

    get_host(load_hosts(workspace.hosts_file), name)
    with dispatcher_lock(workspace, wait=False):
        live = [task_key(task_id, attempt) for task_id, attempt in db.execute(
            "SELECT id, attempt FROM tasks WHERE state = 'running' AND host = ?", [name])]
        result = _on_host(workspace, name, lambda executor: executor.clean(live, force))
        leftovers = Leftovers(workspace.state_dir / "leftovers.json")
        leftovers.forget(name, result.get("removed") or [])
    return {"host": name, "workspace": workspace.id, "removed": result.get("removed") or [],
            "running": result.get("running") or [], "kept": result.get("kept") or [],
            "freed": result.get("freed") or 0}
