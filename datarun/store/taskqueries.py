"""What the tasks are: the read side of the task life cycle.

Queries of task rows for the dispatcher, `status`, `train` and the store: one task, the
running ones, the queued ones in the order they should start, counts by state. They
read and never write: every change of a task row goes through `datarun.store.tasks`,
which owns the row type and the transition table this module reads by.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from datarun.store.db import Database
from datarun.store.tasks import COLUMNS, SELECT_TASKS, Task, TaskState, task_of_row


def get(db: Database, task_id: int) -> Task | None:
    rows = [task_of_row(row) for row in db.query(f"{SELECT_TASKS} WHERE t.id = ?", [task_id])]
    return rows[0] if rows else None


def state_of(db: Database, task_id: int) -> TaskState | None:
    row = db.execute("SELECT state FROM tasks WHERE id = ?", [task_id]).fetchone()
    return TaskState(row[0]) if row else None


def running(db: Database, host: str | None = None) -> list[Task]:
    """The running tasks (on `host`), oldest claim first."""
    where, args = "t.state = ?", [str(TaskState.RUNNING)]
    if host is not None:
        where, args = where + " AND t.host = ?", [*args, host]
    return [task_of_row(row) for row in db.query(f"{SELECT_TASKS} WHERE {where} ORDER BY t.id", args)]


@dataclass(frozen=True)
class Selection:
    """The tasks a command acts on: every task, a problem's, or a submission's."""

    problem: str | None = None
    submission: int | None = None

    def where(self) -> tuple[str, list[Any]]:
        """SQL narrowing a query of tasks `t` joined to submissions `s` (" AND ...")."""
        where, args = "", list[Any]()
        if self.problem:
            where += " AND s.problem = ?"
            args.append(self.problem)
        if self.submission is not None:
            where += " AND s.id = ?"
            args.append(self.submission)
        return where, args


def next_queued(db: Database, limit: int, selection: Selection = Selection()) -> list[Task]:
    """The next queued tasks, in the order they should start.

    First one fold of each submission that has not run yet, oldest submission first: a
    participant hears early whether their code runs, and the fold's time tells how long
    the others will take. Then the tasks whose submission has a finished fold, the
    longest expected first, so the short ones fill the slots at the end of a batch
    instead of a long one starting last. Then the rest, by submission and fold.
    """
    where, args = selection.where()
    columns = ", ".join(f"t.{name}" for name in COLUMNS)
    sql = f"""
        WITH waiting AS (
            SELECT t.submission, MIN(t.fold) AS first_fold FROM tasks t
            JOIN submissions s ON s.id = t.submission
            WHERE t.state = 'queued'{where} GROUP BY t.submission),
        seen AS (
            SELECT t.submission, SUM(t.state != 'queued') AS tried,
                   AVG(CASE WHEN t.state IN ('done', 'failed') THEN t.wall_time END) AS expected
            FROM tasks t JOIN waiting w ON w.submission = t.submission GROUP BY t.submission)
        SELECT {columns}, s.problem FROM tasks t
        JOIN submissions s ON s.id = t.submission
        JOIN waiting w ON w.submission = t.submission
        JOIN seen ON seen.submission = t.submission
        WHERE t.state = 'queued'
        ORDER BY CASE WHEN seen.tried = 0 AND t.fold = w.first_fold THEN 0
                      WHEN seen.expected IS NOT NULL THEN 1 ELSE 2 END,
                 -COALESCE(seen.expected, 0), t.submission, t.fold
        LIMIT ?"""
    return [task_of_row(row) for row in db.query(sql, [*args, limit])]


def any_queued(db: Database, selection: Selection = Selection()) -> bool:
    where, args = selection.where()
    return db.execute("SELECT 1 FROM tasks t JOIN submissions s ON s.id = t.submission "
                      f"WHERE t.state = 'queued'{where} LIMIT 1", args).fetchone() is not None


def count_queued(db: Database) -> int:
    return db.execute("SELECT count(*) FROM tasks WHERE state = 'queued'").fetchone()[0]


def open_ids(db: Database, selection: Selection = Selection()) -> list[int]:
    """The ids of the selected queued and running tasks."""
    where, args = selection.where()
    return [row[0] for row in db.execute(
        "SELECT t.id FROM tasks t JOIN submissions s ON s.id = t.submission "
        f"WHERE t.state IN ('queued', 'running'){where}", args)]


def any_open_of_workflow(db: Database, workflow: str, selection: Selection = Selection()) -> bool:
    """Whether a selected queued or running task belongs to a problem of `workflow`."""
    where, args = selection.where()
    return db.execute(
        "SELECT 1 FROM tasks t JOIN submissions s ON s.id = t.submission "
        "JOIN problems p ON p.name = s.problem "
        f"WHERE p.workflow = ? AND t.state IN ('queued', 'running'){where} LIMIT 1",
        [workflow, *args]).fetchone() is not None


def no_counts() -> dict[str, int]:
    return dict.fromkeys(map(str, TaskState), 0)


def count_states(db: Database, ids: list[int]) -> dict[str, int]:
    """How many of these tasks are in each state."""
    counts = no_counts()
    for start in range(0, len(ids), 500):
        chunk = ids[start:start + 500]
        marks = ",".join("?" * len(chunk))
        for state, count in db.execute(
                f"SELECT state, count(*) FROM tasks WHERE id IN ({marks}) GROUP BY state", chunk):
            counts[state] += count
    return counts


def counts_by_problem(db: Database) -> dict[str, dict[str, int]]:
    """{problem: {state: tasks}} for every problem that has tasks."""
    found: dict[str, dict[str, int]] = {}
    for problem, state, count in db.execute(
            "SELECT s.problem, t.state, count(*) FROM tasks t JOIN submissions s ON s.id = t.submission "
            "GROUP BY s.problem, t.state"):
        found.setdefault(problem, no_counts())[state] = count
    return found


def counts_by_host(db: Database) -> dict[str, dict[str, int]]:
    """{host: {state: tasks}} over the tasks that have a host (running, or finished there)."""
    found: dict[str, dict[str, int]] = {}
    for host, state, count in db.execute(
            "SELECT host, state, count(*) FROM tasks WHERE host IS NOT NULL GROUP BY host, state"):
        found.setdefault(host, no_counts())[state] = count
    return found


def running_of_problem(db: Database, problem: str) -> int:
    """How many of a problem's tasks are running on some host."""
    return db.execute("SELECT count(*) FROM tasks t JOIN submissions s ON s.id = t.submission "
                      "WHERE s.problem = ? AND t.state = 'running'", [problem]).fetchone()[0]
