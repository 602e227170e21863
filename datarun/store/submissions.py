"""Submissions in the database: storing one, and reading them with their tasks and scores.

Rows come back as dicts with `files` decoded ({file name: blob hash}), as `--json` gives
them; a submission's state is derived from its tasks by `datarun.challenge.submissions`.
"""

from __future__ import annotations

import json
from typing import Any

from datarun.store.db import Database, transaction

Row = dict[str, Any]
# The task columns `submission show`, exports and the site read (environment on request).
TASK_COLUMNS = ("id", "fold", "state", "attempt", "host", "train_time", "valid_time", "test_time",
                "wall_time", "cpu_time", "peak_memory", "ran_from", "ran_to", "error_kind", "error")


def _decoded(row: Row) -> Row:
    row = dict(row)
    row["files"] = json.loads(row["files"])
    return row


def get(db: Database, submission: int) -> Row | None:
    rows = [_decoded(row) for row in db.table("submissions").rows_where("id = ?", [submission])]
    return rows[0] if rows else None


def same_code(db: Database, problem: str, team: str, files_hash: str) -> Row | None:
    """The team's earlier submission of exactly these files to the problem, if any."""
    rows = [_decoded(row) for row in db.table("submissions").rows_where(
        "problem = ? AND team = ? AND files_hash = ?", [problem, team, files_hash])]
    return rows[0] if rows else None


def insert(db: Database, problem: str, event: str, team: str, name: str, files_hash: str,
           files: dict[str, str], created_at: float, forced: str | None) -> int:
    """Store a submission row; its id. (Its tasks are `datarun.store.tasks.create`'s.)"""
    with transaction(db):
        table = db.table("submissions").insert({
            "problem": problem, "event": event, "team": team, "name": name, "files_hash": files_hash,
            "files": json.dumps(files), "created_at": created_at, "forced": forced})
    if table.last_rowid is None:
        raise RuntimeError("SQLite gave the new submission no row id")
    return table.last_rowid


def files_of(db: Database, submission: int) -> dict[str, str]:
    """A submission's files: {file name: blob hash}."""
    row = db.execute("SELECT files FROM submissions WHERE id = ?", [submission]).fetchone()
    return dict(json.loads(row[0])) if row else {}


def count_by_problem(db: Database) -> dict[str, int]:
    """{problem: submissions} for every problem that has some."""
    return {problem: count for problem, count in
            db.execute("SELECT problem, count(*) FROM submissions GROUP BY problem")}


def with_task_states(db: Database, problem: str | None = None) -> list[tuple[Row, list[str]]]:
    """Every submission (of `problem`), by id, with its tasks' states."""
    sql = ("SELECT s.id, s.problem, s.event, s.team, s.name, s.created_at, s.hidden_at, s.final_at, "
           "group_concat(t.state) AS states FROM submissions s LEFT JOIN tasks t ON t.submission = s.id")
    args: list[Any] = []
    if problem:
        sql += " WHERE s.problem = ?"
        args.append(problem)
    sql += " GROUP BY s.id ORDER BY s.id"
    found = []
    for row in db.query(sql, args):
        states = row.pop("states")
        found.append((row, states.split(",") if states else []))
    return found


def of_problem(db: Database, problem: str, event: str | None = None) -> list[Row]:
    """A problem's submissions (to one of its events), by id; hidden ones left out."""
    return [_decoded(row) for row in db.query(
        "SELECT * FROM submissions WHERE problem = ? AND (? IS NULL OR event = ?) AND hidden_at IS NULL "
        "ORDER BY id",
        [problem, event, event])]


def attach_details(db: Database, rows: list[Row], splits: tuple[str, ...], problem: str | None = None,
                   event: str | None = None, environment: bool = True) -> None:
    """Add each submission row's tasks (with their scores of `splits`) and bagged scores, in
    bulk: each kind of row is read in one query however many submissions there are.

    `rows` are one submission, or every shown (not hidden) submission of `problem` (to `event`)."""
    by_id = {row["id"]: row for row in rows}
    for row in rows:
        row["tasks"], row["bagged"] = [], {}
    if problem is None:
        where, args = f"s.id IN ({', '.join('?' * len(rows))})", [row["id"] for row in rows]
    else:
        where = "s.problem = ? AND (? IS NULL OR s.event = ?) AND s.hidden_at IS NULL"
        args = [problem, event, event]
    wanted = f"JOIN submissions s ON s.id = t.submission WHERE {where}"
    in_splits = f"({', '.join('?' for _ in splits)})" if splits else "(NULL)"
    columns = TASK_COLUMNS + (("environment",) if environment else ())
    by_task: dict[int, Row] = {}
    for values in db.execute(
            f"SELECT t.submission, {', '.join('t.' + c for c in columns)} "
            f"FROM tasks t {wanted} ORDER BY t.submission, t.fold", args):
        task = dict(zip(columns, values[1:], strict=True))
        task["scores"] = {}
        if environment:
            task["environment"] = json.loads(task["environment"]) if task["environment"] else None
        by_id[values[0]]["tasks"].append(task)
        by_task[task["id"]] = task
    for task_id, split, score, value in db.execute(
            f"SELECT sc.task, sc.split, sc.score, sc.value FROM scores sc JOIN tasks t ON t.id = sc.task "
            f"{wanted} AND sc.split IN {in_splits}", [*args, *splits]):
        by_task[task_id]["scores"].setdefault(split, {})[score] = value
    for sid, split, score, value in db.execute(
            "SELECT b.submission, b.split, b.score, b.value FROM bagged_scores b "
            f"JOIN submissions s ON s.id = b.submission WHERE {where} AND b.split IN {in_splits}",
            [*args, *splits]):
        by_id[sid]["bagged"].setdefault(split, {})[score] = value


def failures(db: Database) -> list[Row]:
    """One failed task of each submission that has some: the submission's id, problem, team
    and name, with the task's fold, error kind and error."""
    return [dict(row) for row in db.query(
        "SELECT s.id, s.problem, s.team, s.name, t.fold, t.error_kind, t.error FROM tasks t "
        "JOIN submissions s ON s.id = t.submission WHERE t.state = 'failed' "
        "GROUP BY s.id ORDER BY s.id")]


def set_hidden(db: Database, submission: int, at: float | None, reason: str | None) -> None:
    """Hide a submission (`at`: when) or show it again (`at` None)."""
    db.execute("UPDATE submissions SET hidden_at = ?, hidden_reason = ? WHERE id = ?",
               [at, reason, submission])


def set_final(db: Database, submissions: list[int], team: str, event: str, at: float) -> None:
    """Make `submissions` the team's final choice in the event (and no other of its own)."""
    db.execute("UPDATE submissions SET final_at = NULL WHERE event = ? AND team = ?", [event, team])
    for submission in submissions:
        db.execute("UPDATE submissions SET final_at = ? WHERE id = ?", [at, submission])


def finals(db: Database, event: str) -> dict[str, list[int]]:
    """{team: the ids it chose as final} in an event (teams that chose)."""
    chosen: dict[str, list[int]] = {}
    for team, sid in db.execute("SELECT team, id FROM submissions WHERE event = ? AND final_at IS NOT NULL "
                                "AND hidden_at IS NULL ORDER BY id", [event]):
        chosen.setdefault(team, []).append(sid)
    return chosen


def count_of_event(db: Database, event: str) -> int:
    return db.execute("SELECT count(*) FROM submissions WHERE event = ?", [event]).fetchone()[0]
