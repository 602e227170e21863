"""The task life cycle: one table of transitions, one function that changes a task row.

A task is one submission on one fold, the unit of scheduling, measurement and retry. This
module is the only one that writes a task row (a test scans the sources, another watches
every statement SQLite runs): every change is one of the `TRANSITIONS` below, made by
`_move`, which refuses a transition the table does not list and writes the change guarded
by the state and attempt the caller expects, in one transaction. A row that moved
meanwhile (a newer attempt was claimed, the organiser cancelled the task) is left alone
and the caller is told so: that is how a result is recorded once, for the attempt the
database expects, and never for a task given up on or cancelled. Here too: the row type
(`Task`) and the read of a submission's tasks that `cancel` and `retry` act on; every other
query of tasks is `datarun.store.taskqueries`, which builds on this module and is never
imported by it.

::

                     +----------- unclaim -----------+
                     v                               |
    submit ---> queued ---------- claim ---------> running --- result ---> done | failed | cancelled
                 ^  ^                               |   |
                 |  +----------- lose --------------+   +-- lose (the last try) --> failed (host_lost)
                 |
                 +--- retry --- failed | cancelled
    queued | running --- late result ---> done        (a given-up attempt's, the task's first)
    queued | running --- cancel ---> cancelled

An attempt is one launch: `claim` numbers it (`attempt + 1`) and gives it a random nonce
that its result must carry back (`datarun.dispatch.results`). `lost` counts the attempts
whose host was lost under them; the `max_attempts`-th loss fails the task as `host_lost`.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from datarun.store.db import Database, transaction

CANCELLED_BY_ORGANISER = "cancelled by the organiser"


class TaskState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


OPEN = (TaskState.QUEUED, TaskState.RUNNING)
FINISHED = (TaskState.DONE, TaskState.FAILED, TaskState.CANCELLED)


class Event(StrEnum):
    """Why a task changes state."""

    SUBMIT = "submit"
    CLAIM = "claim"
    UNCLAIM = "unclaim"
    LOSE = "lose"
    RESULT = "result"
    LATE_RESULT = "late result"
    CANCEL = "cancel"
    RETRY = "retry"


# The error kinds the organiser's side gives (the harness's own are
# datarun.remote.common.ERROR_KINDS): a task lost `max_attempts` times, a task cancelled.
HOST_LOST = "host_lost"
CANCELLED = "cancelled"


@dataclass(frozen=True)
class Transition:
    start: TaskState | None  # None: the task does not exist yet
    end: TaskState
    event: Event
    why: str


TRANSITIONS: tuple[Transition, ...] = (
    Transition(None, TaskState.QUEUED, Event.SUBMIT, "a submission queues one task per fold"),
    Transition(TaskState.QUEUED, TaskState.RUNNING, Event.CLAIM,
               "a dispatcher gives it a host's slot, a new attempt number and nonce, before "
               "anything ships"),
    Transition(TaskState.RUNNING, TaskState.QUEUED, Event.UNCLAIM,
               "its bundle never reached the host, or the host refused it: no loss counted"),
    Transition(TaskState.RUNNING, TaskState.QUEUED, Event.LOSE,
               "its host was lost under it (crashed, silent past its grace, no trace of the "
               "task, a result not the attempt's own): a loss counted, tries left"),
    Transition(TaskState.RUNNING, TaskState.FAILED, Event.LOSE,
               "its host was lost under it for the max_attempts-th time: host_lost"),
    Transition(TaskState.RUNNING, TaskState.DONE, Event.RESULT, "the attempt's result: predictions"),
    Transition(TaskState.RUNNING, TaskState.FAILED, Event.RESULT,
               "the attempt's result: an error, a limit hit, or a result that fails its checks"),
    Transition(TaskState.RUNNING, TaskState.CANCELLED, Event.RESULT,
               "the attempt's result: it was cancelled on its host"),
    Transition(TaskState.QUEUED, TaskState.DONE, Event.LATE_RESULT,
               "an attempt given up on came back with the task's first complete result"),
    Transition(TaskState.RUNNING, TaskState.DONE, Event.LATE_RESULT,
               "the same while a newer attempt runs, which is then cancelled on its host"),
    Transition(TaskState.QUEUED, TaskState.CANCELLED, Event.CANCEL, "the organiser cancelled it"),
    Transition(TaskState.RUNNING, TaskState.CANCELLED, Event.CANCEL,
               "the organiser cancelled it; its host is then told to kill it"),
    Transition(TaskState.FAILED, TaskState.QUEUED, Event.RETRY,
               "the organiser retries it: its error, losses and measurements forgotten"),
    Transition(TaskState.CANCELLED, TaskState.QUEUED, Event.RETRY, "the same for a cancelled task"),
)
ALLOWED = frozenset((t.start, t.end, t.event) for t in TRANSITIONS)


class IllegalTransition(RuntimeError):
    """A change the transition table does not allow: a fault of datarun, never written."""


def check_transition(start: TaskState | None, end: TaskState, event: Event) -> None:
    if (start, end, event) not in ALLOWED:
        raise IllegalTransition(f"a task may not go from {start or 'nothing'} to {end} on {event}")


def task_key(task_id: int, attempt: int) -> str:
    """An attempt's name on its host: `t42-a3`."""
    return f"t{task_id}-a{attempt}"


def parse_key(key: str) -> tuple[int, int] | None:
    """(task id, attempt) of a key made by `task_key`, or None."""
    if not key.startswith("t") or "-a" not in key:
        return None
    try:
        task_id, attempt = (int(part) for part in key[1:].split("-a", 1))
    except ValueError:
        return None
    return task_id, attempt


@dataclass(frozen=True)
class Task:
    """A task row, with its submission's problem."""

    id: int
    submission: int
    fold: int
    problem: str
    state: TaskState
    attempt: int = 0
    lost: int = 0
    nonce: str | None = None
    host: str | None = None
    slot: int | None = None
    limits: dict[str, Any] | None = None
    lease_expires: float | None = None
    queued_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    train_time: float | None = None
    valid_time: float | None = None
    test_time: float | None = None
    wall_time: float | None = None
    cpu_time: float | None = None
    peak_memory: int | None = None
    ran_from: float | None = None
    ran_to: float | None = None
    error_kind: str | None = None
    error: str | None = None
    pred_train: str | None = None
    pred_test: str | None = None
    log: str | None = None
    environment: dict[str, Any] | None = None

    @property
    def key(self) -> str:
        return task_key(self.id, self.attempt)


# A task row's columns, and the query that reads them with the submission's problem (the
# read side, datarun.store.taskqueries, builds on them).
COLUMNS = tuple(name for name in Task.__dataclass_fields__ if name != "problem")
SELECT_TASKS = ("SELECT " + ", ".join(f"t.{name}" for name in COLUMNS)
                + ", s.problem FROM tasks t JOIN submissions s ON s.id = t.submission")


def task_of_row(row: Mapping[str, Any]) -> Task:
    """A row of `SELECT_TASKS` as a `Task`."""
    values = dict(row)
    values["state"] = TaskState(values["state"])
    for name in ("limits", "environment"):
        values[name] = json.loads(values[name]) if values[name] else None
    return Task(**values)


def of_submission(db: Database, submission: int) -> list[Task]:
    """A submission's tasks, by fold (what `cancel` and `retry` act on)."""
    return [task_of_row(row) for row in db.query(
        f"{SELECT_TASKS} WHERE t.submission = ? ORDER BY t.fold", [submission])]


@dataclass(frozen=True)
class Outcome:
    """What an attempt's result says, as its task row keeps it."""

    state: TaskState  # done | failed | cancelled
    finished_at: float
    error_kind: str | None = None
    error: str | None = None
    train_time: float | None = None
    valid_time: float | None = None
    test_time: float | None = None
    wall_time: float | None = None
    cpu_time: float | None = None
    peak_memory: int | None = None
    ran_from: float | None = None  # when it ran, by its host's clock
    ran_to: float | None = None
    pred_train: str | None = None  # blob hashes
    pred_test: str | None = None
    log: str | None = None
    environment: dict[str, Any] = field(default_factory=dict)

    @staticmethod
    def state_of(state: str, error_kind: str | None) -> TaskState:
        """The task state a result's `state` and `error_kind` stand for."""
        if state == "done":
            return TaskState.DONE
        return TaskState.CANCELLED if error_kind == CANCELLED else TaskState.FAILED

    def columns(self) -> dict[str, Any]:
        values = {name: getattr(self, name) for name in self.__dataclass_fields__ if name != "state"}
        values["environment"] = json.dumps(self.environment)
        return values


# -- the one function that changes a task row ------------------------------------------------

def _move(db: Database, task_id: int, start: TaskState, attempt: int, event: Event, end: TaskState,
          changes: Mapping[str, Any] | None = None) -> bool:
    """Move task `task_id` from `start` at `attempt` to `end`, setting `changes`; False (and
    nothing written) if the row is no longer in that state at that attempt."""
    check_transition(start, end, event)
    values = {"state": str(end), **(changes or {})}
    unknown = set(values) - set(COLUMNS)
    if unknown:
        raise IllegalTransition(f"a task has no column {sorted(unknown)[0]}")
    assignments = ", ".join(f"{name} = ?" for name in values)
    with transaction(db):
        cursor = db.execute(f"UPDATE tasks SET {assignments} WHERE id = ? AND state = ? AND attempt = ?",
                            [*values.values(), task_id, str(start), attempt])
    return cursor.rowcount == 1


def create(db: Database, submission: int, folds: Iterable[int], now: float) -> None:
    """Queue one task per fold of a new submission."""
    check_transition(None, TaskState.QUEUED, Event.SUBMIT)
    with transaction(db):
        db.table("tasks").insert_all([{"submission": submission, "fold": fold, "state": str(TaskState.QUEUED),
                                 "attempt": 0, "queued_at": now} for fold in folds])


def claim(db: Database, task: Task, host: str, slot: int, limits: dict[str, Any], lease_expires: float,
          now: float) -> Task | None:
    """Mark a queued task running on `host`'s `slot` as its next attempt, with a new nonce,
    before anything ships; the claimed task, or None if it is no longer queued."""
    nonce = secrets.token_hex(16)
    claimed = _move(db, task.id, TaskState.QUEUED, task.attempt, Event.CLAIM, TaskState.RUNNING, {
        "attempt": task.attempt + 1, "nonce": nonce, "host": host, "slot": slot, "started_at": now,
        "lease_expires": lease_expires, "limits": json.dumps(limits), "error_kind": None, "error": None})
    if not claimed:
        return None
    return replace(task, state=TaskState.RUNNING, attempt=task.attempt + 1, nonce=nonce, host=host,
                    slot=slot, started_at=now, lease_expires=lease_expires, limits=dict(limits),
                    error_kind=None, error=None)


def unclaim(db: Database, task: Task) -> bool:
    """Back to the queue without counting a loss (its bundle never reached the host, or the
    host refused it); the next launch is a new attempt with a new nonce."""
    return _move(db, task.id, TaskState.RUNNING, task.attempt, Event.UNCLAIM, TaskState.QUEUED,
                 {"host": None, "slot": None, "lease_expires": None})


def lose(db: Database, task: Task, reason: str, max_attempts: int, now: float) -> TaskState | None:
    """Count a loss of the task's host under its attempt: back to the queue, or failed as
    `host_lost` at the `max_attempts`-th loss. The state it went to, or None if the attempt
    was no longer running."""
    with transaction(db):
        row = db.execute("SELECT lost FROM tasks WHERE id = ?", [task.id]).fetchone()
        if row is None:
            return None
        lost = row[0] + 1
        if lost >= max_attempts:
            moved = _move(db, task.id, TaskState.RUNNING, task.attempt, Event.LOSE, TaskState.FAILED, {
                "lost": lost, "error_kind": HOST_LOST, "finished_at": now, "lease_expires": None,
                "error": f"{reason} (lost {lost} of {max_attempts} times)"})
            return TaskState.FAILED if moved else None
        moved = _move(db, task.id, TaskState.RUNNING, task.attempt, Event.LOSE, TaskState.QUEUED, {
            "lost": lost, "host": None, "slot": None, "lease_expires": None, "error": reason})
        return TaskState.QUEUED if moved else None


def finish(db: Database, task: Task, host: str, outcome: Outcome) -> bool:
    """Record the result of the running attempt `task.attempt`; False if that attempt is no
    longer the task's running one (it was given up on, or the task cancelled)."""
    return _move(db, task.id, TaskState.RUNNING, task.attempt, Event.RESULT, outcome.state,
                 {**outcome.columns(), "host": host, "lease_expires": None})


@dataclass(frozen=True)
class Replaced:
    """The attempt a late result made redundant: cancel and remove it on its host."""

    host: str | None
    key: str
    nonce: str | None


def finish_late(db: Database, task_id: int, attempt: int, host: str, outcome: Outcome) -> Replaced | bool:
    """Record a complete result of an attempt given up on, if the task has none yet: the
    first complete result wins. False if it is not taken; else the attempt it replaced, if
    one was running (a `Replaced`), or True."""
    if outcome.state != TaskState.DONE:
        return False  # a failure (or our own cancel) of a given-up attempt decides nothing
    with transaction(db):
        row = db.execute("SELECT state, attempt, host, nonce FROM tasks WHERE id = ?", [task_id]).fetchone()
        if row is None:
            return False
        state, current, current_host, current_nonce = TaskState(row[0]), row[1], row[2], row[3]
        if state not in OPEN or (state == TaskState.RUNNING and current == attempt):
            return False
        if not _move(db, task_id, state, current, Event.LATE_RESULT, TaskState.DONE,
                     {**outcome.columns(), "host": host, "attempt": attempt, "lease_expires": None}):
            return False
    if state == TaskState.RUNNING:
        return Replaced(current_host, task_key(task_id, current), current_nonce)
    return True


def cancel(db: Database, submission: int, now: float, reason: str = CANCELLED_BY_ORGANISER) -> list[Task]:
    """Cancel a submission's queued and running tasks; those cancelled, as they were."""
    with transaction(db):
        tasks = [task for task in of_submission(db, submission) if task.state in OPEN]
        for task in tasks:
            _move(db, task.id, task.state, task.attempt, Event.CANCEL, TaskState.CANCELLED, {
                "error_kind": CANCELLED, "error": reason, "finished_at": now, "lease_expires": None})
    return tasks


# What a retried task forgets: the previous attempts' outcome and measurements.
_RESET = ("error_kind", "error", "host", "slot", "lease_expires", "started_at", "finished_at",
          "train_time", "valid_time", "test_time", "wall_time", "cpu_time", "peak_memory",
          "pred_train", "pred_test", "log", "environment", "ran_from", "ran_to")


def retry(db: Database, submission: int, now: float) -> list[int]:
    """Queue a submission's failed and cancelled tasks again, their losses forgotten; their ids."""
    changes: dict[str, Any] = {**dict.fromkeys(_RESET), "lost": 0, "queued_at": now}
    with transaction(db):
        tasks = [task for task in of_submission(db, submission)
                 if task.state in (TaskState.FAILED, TaskState.CANCELLED)]
        for task in tasks:
            _move(db, task.id, task.state, task.attempt, Event.RETRY, TaskState.QUEUED, changes)
    return [task.id for task in tasks]


# -- removing a problem's tasks --------------------------------------------------------------

def delete_of_problem(db: Database, problem: str) -> int:
    """Remove the task rows of a problem none of whose tasks runs (`problem remove --force`),
    with what hangs on them (scores, task events); how many tasks went. Call it in the
    transaction that removes the problem, after `taskqueries.running_of_problem` said 0."""
    ids = "SELECT t.id FROM tasks t JOIN submissions s ON s.id = t.submission WHERE s.problem = ?"
    db.execute(f"DELETE FROM scores WHERE task IN ({ids})", [problem])
    db.execute(f"DELETE FROM task_events WHERE task IN ({ids})", [problem])
    cursor = db.execute(f"DELETE FROM tasks WHERE id IN ({ids}) AND state != 'running'", [problem])
    return cursor.rowcount


# -- what migrations ask of the life cycle (datarun.store.migrations) ------------------------

def requeue_running_without_nonce(db: Database) -> None:
    """m007: attempts launched before nonces ran in the host's shared folder and could not be
    accepted without a nonce: back to the queue, no host loss counted."""
    db.execute("UPDATE tasks SET state = 'queued', host = NULL, slot = NULL, lease_expires = NULL "
               "WHERE state = 'running'")


def cancelled_failures_become_cancelled(db: Database) -> None:
    """m008: a task the organiser cancelled was `failed` with the error kind `cancelled`."""
    db.execute("UPDATE tasks SET state = 'cancelled' WHERE state = 'failed' AND error_kind = 'cancelled'")
