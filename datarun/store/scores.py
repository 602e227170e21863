"""Scores in the database: each task's per split and score type, each submission's bagged ones.

A task's scores are written with its result, in the transaction that records it
(`datarun.store.tasks.finish`); a submission's bagged scores once all its folds are done.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from datarun.store.db import Database, transaction

ScoreRow = tuple[str, str, float | None]  # (split, score name, value)
# (split, score name, value, the bagged score of the first 1, 2, ... folds, why a value is missing)
BaggedRow = tuple[str, str, float | None, list[float | None] | None, str | None]


def replace_task_scores(db: Database, task: int, rows: Iterable[ScoreRow]) -> None:
    with transaction(db):
        db.table("scores").delete_where("task = ?", [task])
        db.table("scores").insert_all(
            [{"task": task, "split": split, "score": name, "value": value} for split, name, value in rows])


def has_bagged(db: Database, submission: int) -> bool:
    return db.execute("SELECT 1 FROM bagged_scores WHERE submission = ? LIMIT 1",
                      [submission]).fetchone() is not None


def set_bagged(db: Database, submission: int, rows: Iterable[BaggedRow]) -> None:
    with transaction(db):
        db.table("bagged_scores").insert_all(
            [{"submission": submission, "split": split, "score": name, "value": value,
              "curve": None if curve is None else json.dumps(curve), "note": note}
             for split, name, value, curve, note in rows], replace=True)


def done_without_bagged(db: Database, problem: str) -> list[int]:
    """The problem's submissions whose tasks are all done but that have no bagged scores."""
    return [row[0] for row in db.execute(
        "SELECT s.id FROM submissions s WHERE s.problem = ? "
        "AND NOT EXISTS (SELECT 1 FROM bagged_scores b WHERE b.submission = s.id) "
        "AND EXISTS (SELECT 1 FROM tasks t WHERE t.submission = s.id) "
        "AND NOT EXISTS (SELECT 1 FROM tasks t WHERE t.submission = s.id AND t.state != 'done')",
        [problem]).fetchall()]


def forget(db: Database, tasks: list[int], submission: int) -> None:
    """Drop these tasks' scores and their submission's bagged ones (computed anew when every
    fold is done again)."""
    with transaction(db):
        for start in range(0, len(tasks), 500):
            chunk = tasks[start:start + 500]
            db.table("scores").delete_where(f"task IN ({','.join('?' * len(chunk))})", chunk)
        db.table("bagged_scores").delete_where("submission = ?", [submission])


def of_submission(db: Database, submission: int) -> dict[int, dict[str, dict[str, float | None]]]:
    """{task: {split: {score: value}}} of a submission's tasks."""
    found: dict[int, dict[str, dict[str, float | None]]] = {}
    for task, split, name, value in db.execute(
            "SELECT sc.task, sc.split, sc.score, sc.value FROM scores sc JOIN tasks t ON t.id = sc.task "
            "WHERE t.submission = ?", [submission]):
        found.setdefault(task, {}).setdefault(split, {})[name] = value
    return found


def bagged_of(db: Database, submission: int) -> dict[str, dict[str, float | None]]:
    """{split: {score: value}} of a submission's bagged scores."""
    found: dict[str, dict[str, float | None]] = {}
    for split, name, value in db.execute(
            "SELECT split, score, value FROM bagged_scores WHERE submission = ?", [submission]):
        found.setdefault(split, {})[name] = value
    return found
