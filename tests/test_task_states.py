"""The task life cycle is one table, one function, one module (datarun/store/tasks.py).

The table is tested as data: every transition it lists moves a real row, every other
(start, end, event) raises without writing. Every move is guarded by the state and
attempt the caller expects. And no other module writes a task row: a scan of the sources
finds no statement writing `tasks` elsewhere, and a SQLite authorizer watching a whole
run (submit, train, a failure, cancel, retry, dispatch) sees every write of a task row
come from the life-cycle module.
"""

import re
import sqlite3
import traceback
from dataclasses import replace
from itertools import product
from pathlib import Path

import pytest
from test_operator import FAILS_UNTIL, GOOD, flowers, submit, tasks_of  # noqa: F401

import datarun
from datarun.store import taskqueries, tasks
from datarun.store.db import connect, migrate
from datarun.store.migrations import MIGRATIONS, m008_cancelled_state
from datarun.store.tasks import (
    ALLOWED,
    TRANSITIONS,
    Event,
    IllegalTransition,
    Outcome,
    Replaced,
    TaskState,
    check_transition,
)

PACKAGE = Path(datarun.__file__).resolve().parent
OWNERS = {PACKAGE / "store" / "tasks.py"}
STARTS = [None, *TaskState]


@pytest.fixture
def db(tmp_path):
    db = connect(tmp_path / "t.db")
    migrate(db)
    db.execute("INSERT INTO problems (name, title, kind, workflow, spec, data_hash, labels_hash, "
               "n_train, n_test, n_features, classes, score_names, limits, kit_path, created_at) "
               "VALUES ('p', 't', 'classification', 'estimator', '{}', 'd', 'l', "
               "10, 5, 4, NULL, '[]', '{}', '/kit', 0)")
    db.execute("INSERT INTO submissions (id, problem, event, team, name, files_hash, files, created_at) "
               "VALUES (1, 'p', 'p', 'team', 'sub', 'h', '{}', 0)")
    tasks.create(db, 1, [0, 1, 2], now=1.0)
    yield db
    db.conn.close()


def put(db, task_id: int, state: TaskState, attempt: int = 1, lost: int = 0) -> tasks.Task:
    """Set a row's state by hand (a test may; datarun may not) and read it back."""
    db.execute("UPDATE tasks SET state = ?, attempt = ?, lost = ?, host = 'h', nonce = 'n' WHERE id = ?",
               [str(state), attempt, lost, task_id])
    task = taskqueries.get(db, task_id)
    assert task is not None
    return task


def test_the_table_allows_its_rows_and_nothing_else():
    assert len(ALLOWED) == len(TRANSITIONS)  # no row listed twice
    for start, end, event in product(STARTS, TaskState, Event):
        if (start, end, event) in ALLOWED:
            check_transition(start, end, event)
        else:
            with pytest.raises(IllegalTransition, match=f"may not go from {start or 'nothing'} to {end}"):
                check_transition(start, end, event)


def test_the_table_covers_the_life_cycle():
    pairs = {(t.start, t.end) for t in TRANSITIONS}
    assert pairs == {
        (None, "queued"), ("queued", "running"), ("running", "queued"), ("running", "done"),
        ("running", "failed"), ("running", "cancelled"), ("queued", "done"), ("queued", "cancelled"),
        ("failed", "queued"), ("cancelled", "queued")}
    # Nothing leaves done: a result, once counted, stays.
    assert not [t for t in TRANSITIONS if t.start == TaskState.DONE]


@pytest.mark.parametrize("transition", [t for t in TRANSITIONS if t.start is not None],
                         ids=lambda t: f"{t.start}-{t.event}-{t.end}".replace(" ", "_"))
def test_every_allowed_transition_moves_a_row(db, transition):
    task = put(db, 1, transition.start, attempt=2)
    assert tasks._move(db, task.id, transition.start, 2, transition.event, transition.end)
    assert taskqueries.state_of(db, task.id) == transition.end


@pytest.mark.parametrize("start,end,event", [
    (start, end, event) for start, end, event in product(TaskState, TaskState, Event)
    if (start, end, event) not in ALLOWED])
def test_every_forbidden_transition_raises_and_writes_nothing(db, start, end, event):
    task = put(db, 1, start, attempt=2)
    with pytest.raises(IllegalTransition):
        tasks._move(db, task.id, start, 2, event, end)
    assert taskqueries.get(db, task.id) == task


def test_a_move_is_guarded_by_the_state_and_attempt_it_expects(db):
    task = put(db, 1, TaskState.RUNNING, attempt=3)
    # Another attempt's result: nothing is written.
    assert not tasks.finish(db, replace(task, attempt=2), "h", Outcome(TaskState.DONE, 5.0))
    assert taskqueries.get(db, 1) == task
    assert tasks.finish(db, task, "h", Outcome(TaskState.DONE, 5.0, wall_time=1.5))
    assert taskqueries.get(db, 1).state == TaskState.DONE and taskqueries.get(db, 1).wall_time == 1.5
    # The row moved meanwhile: the attempt's second result, or a late unclaim, write nothing.
    assert not tasks.finish(db, task, "h", Outcome(TaskState.FAILED, 6.0))
    assert not tasks.unclaim(db, task)
    assert taskqueries.get(db, 1).state == TaskState.DONE


def test_a_claim_is_a_new_attempt_with_a_new_nonce_and_only_once(db):
    queued = taskqueries.get(db, 1)
    first = tasks.claim(db, queued, "h", 0, {"memory": 5}, lease_expires=100.0, now=1.0)
    assert first is not None and (first.state, first.attempt, first.host, first.slot) == ("running", 1, "h", 0)
    assert first == taskqueries.get(db, 1) and first.limits == {"memory": 5} and len(first.nonce) == 32
    assert tasks.claim(db, queued, "h", 1, {}, 100.0, 1.0) is None  # no longer queued
    assert tasks.unclaim(db, first)
    second = tasks.claim(db, taskqueries.get(db, 1), "h", 0, {}, 100.0, 2.0)
    assert second.attempt == 2 and second.nonce != first.nonce


def test_a_lost_task_is_queued_again_until_its_last_try_fails_it_as_host_lost(db):
    task = put(db, 1, TaskState.RUNNING, attempt=1, lost=1)
    assert tasks.lose(db, task, "host h crashed", max_attempts=3, now=2.0) == TaskState.QUEUED
    assert (taskqueries.get(db, 1).lost, taskqueries.get(db, 1).host, taskqueries.get(db, 1).error) == (2, None, "host h crashed")
    task = put(db, 1, TaskState.RUNNING, attempt=2, lost=2)
    assert tasks.lose(db, task, "host h crashed", max_attempts=3, now=3.0) == TaskState.FAILED
    row = taskqueries.get(db, 1)
    assert (row.state, row.error_kind, row.error) == ("failed", "host_lost", "host h crashed (lost 3 of 3 times)")
    assert tasks.lose(db, task, "again", 3, 4.0) is None  # the attempt no longer runs


def test_a_late_result_is_the_first_complete_one_or_nothing(db):
    queued = put(db, 1, TaskState.QUEUED, attempt=1)
    assert tasks.finish_late(db, 1, 1, "h", Outcome(TaskState.FAILED, 5.0)) is False  # decides nothing
    assert tasks.finish_late(db, 1, 1, "h", Outcome(TaskState.DONE, 5.0)) is True
    assert (taskqueries.get(db, 1).state, taskqueries.get(db, 1).attempt) == ("done", 1)
    assert tasks.finish_late(db, 1, 1, "h", Outcome(TaskState.DONE, 6.0)) is False  # never twice
    assert queued.state == "queued"
    # While a newer attempt runs: the late result wins, and the newer attempt is named to cancel.
    put(db, 2, TaskState.RUNNING, attempt=3)
    assert tasks.finish_late(db, 2, 2, "h2", Outcome(TaskState.DONE, 7.0)) == Replaced("h", "t2-a3", "n")
    assert (taskqueries.get(db, 2).state, taskqueries.get(db, 2).attempt, taskqueries.get(db, 2).host) == ("done", 2, "h2")
    # A late result of the attempt that runs is no late result; a finished task takes none.
    put(db, 3, TaskState.RUNNING, attempt=1)
    assert tasks.finish_late(db, 3, 1, "h", Outcome(TaskState.DONE, 8.0)) is False
    put(db, 3, TaskState.FAILED, attempt=1)
    assert tasks.finish_late(db, 3, 1, "h", Outcome(TaskState.DONE, 8.0)) is False


def test_cancel_and_retry(db):
    put(db, 2, TaskState.RUNNING)
    put(db, 3, TaskState.DONE)
    cancelled = tasks.cancel(db, 1, now=9.0)
    assert [(t.id, t.state) for t in cancelled] == [(1, "queued"), (2, "running")]  # as they were
    assert [(t.state, t.error_kind) for t in tasks.of_submission(db, 1)] == [
        ("cancelled", "cancelled"), ("cancelled", "cancelled"), ("done", None)]
    put(db, 3, TaskState.FAILED, lost=2)
    assert tasks.retry(db, 1, now=10.0) == [1, 2, 3]
    assert {(t.state, t.lost, t.error, t.host) for t in tasks.of_submission(db, 1)} == {("queued", 0, None, None)}


def test_a_cancelled_task_of_an_older_workspace_becomes_cancelled(tmp_path):
    db = connect(tmp_path / "old.db")
    db.execute("CREATE TABLE _migrations (name TEXT PRIMARY KEY, applied_at REAL)")
    for migration in MIGRATIONS[:MIGRATIONS.index(m008_cancelled_state)]:
        migration(db)
        db.execute("INSERT INTO _migrations VALUES (?, 0)", [migration.__name__])
    db.execute("INSERT INTO problems VALUES ('p', 't', 'classification', 'estimator', '{}', 'd', 'l', "
               "10, 5, 4, NULL, '[]', '{}', '/kit', 0)")
    db.execute("INSERT INTO submissions (id, problem, event, team, name, files_hash, files, created_at) "
               "VALUES (1, 'p', 'p', 'team', 'sub', 'h', '{}', 0)")
    for task_id, state, kind in ((1, "failed", "cancelled"), (2, "failed", "fit_error"),
                                 (3, "failed", "host_lost"), (4, "done", None)):
        db.execute("INSERT INTO tasks (id, submission, fold, state, error_kind, queued_at) "
                   "VALUES (?, 1, ?, ?, ?, 0)", [task_id, task_id, state, kind])
    assert migrate(db) == [m.__name__ for m in MIGRATIONS[MIGRATIONS.index(m008_cancelled_state):]]
    assert db.execute("SELECT id, state, error_kind FROM tasks ORDER BY id").fetchall() == [
        (1, "cancelled", "cancelled"), (2, "failed", "fit_error"), (3, "failed", "host_lost"), (4, "done", None)]


# -- nobody else writes a task row ---------------------------------------------------------

# SQL writing the tasks table, or the table taken as a sqlite-utils Table (db["tasks"]).
WRITES = re.compile(r"""UPDATE\s+tasks\b|INSERT\s+(?:OR\s+\w+\s+)?INTO\s+tasks\b|DELETE\s+FROM\s+tasks\b|"""
                    r"""REPLACE\s+INTO\s+tasks\b|\.table\(\s*["']tasks["']|\bdb\s*\[\s*["']tasks["']\s*\]""",
                    re.IGNORECASE)


def writes_in(path: Path) -> list[str]:
    return [match.group(0) for match in WRITES.finditer(path.read_text())]


def test_no_module_but_the_life_cycle_writes_a_task_row():
    offenders = {str(path.relative_to(PACKAGE)): writes_in(path) for path in PACKAGE.rglob("*.py")
                 if path not in OWNERS and writes_in(path)}
    assert offenders == {}
    # The scan sees writes where they are: the life cycle's own (migrations ask it too).
    assert writes_in(PACKAGE / "store" / "tasks.py")


class Watch:
    """A SQLite authorizer noting which datarun module prepared each write of a task row."""

    def __init__(self):
        self.writers: dict[str, set[str]] = {}

    def __call__(self, action, table, column, database, trigger):
        if table == "tasks" and action in (sqlite3.SQLITE_INSERT, sqlite3.SQLITE_UPDATE, sqlite3.SQLITE_DELETE):
            what = {sqlite3.SQLITE_INSERT: "insert", sqlite3.SQLITE_DELETE: "delete"}.get(action, column)
            for frame in reversed(traceback.extract_stack()):
                path = Path(frame.filename).resolve()
                if path.is_relative_to(PACKAGE) and path.name != "db.py":
                    self.writers.setdefault(str(path.relative_to(PACKAGE)), set()).add(what)
                    break
        return sqlite3.SQLITE_OK


def test_a_whole_run_writes_task_rows_only_through_the_life_cycle(flowers, cli, tmp_path, monkeypatch):  # noqa: F811
    import datarun.store.db as store_db

    watch = Watch()
    plain_connect = store_db.connect

    def watched(path):
        db = plain_connect(path)
        db.conn.set_authorizer(watch)
        return db

    monkeypatch.setattr(store_db, "connect", watched)
    good = submit(cli, tmp_path, "good", GOOD)
    moody = submit(cli, tmp_path, "moody", FAILS_UNTIL.format(flag=str(tmp_path / "never")))
    assert cli("train").exit_code == 1  # moody fails
    assert cli("retry", moody).exit_code == 0
    assert cli("cancel", moody).exit_code == 0
    assert cli("retry", moody).exit_code == 0
    assert cli("dispatch", "--json").exit_code == 0
    assert cli("train").exit_code == 1
    assert {t["state"] for t in tasks_of(cli, good)} == {"done"}
    assert watch.writers.keys() == {"store/tasks.py"}
    # It saw the writes it should: tasks created, states moved.
    assert {"insert", "state", "attempt", "nonce"} <= watch.writers["store/tasks.py"]


def test_error_kinds_are_defined_once_for_both_sides():
    """The harness's kinds are the ones a result may carry; the organiser adds host_lost."""
    from datarun.dispatch import results
    from datarun.remote import common

    assert results.ERROR_KINDS is common.ERROR_KINDS
    assert tasks.CANCELLED in common.ERROR_KINDS and tasks.HOST_LOST not in common.ERROR_KINDS
    readme = (PACKAGE.parent / "README.md").read_text()
    listed = readme[readme.index("Task errors:"):].split(";")[0]
    assert set(re.findall(r"`(\w+)`", listed)) == {*common.ERROR_KINDS, tasks.HOST_LOST}
