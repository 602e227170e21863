"""Submissions in the database: what the dispatcher and the board read of them."""

from __future__ import annotations

import json
from typing import Any

from datarun.store.db import Database


def files_of(db: Database, submission: int) -> dict[str, str]:
    """A submission's files: {file name: blob hash}."""
    row = db.execute("SELECT files FROM submissions WHERE id = ?", [submission]).fetchone()
    return dict(json.loads(row[0])) if row else {}


def count_by_problem(db: Database) -> dict[str, int]:
    """{problem: submissions} for every problem that has some."""
    return {problem: count for problem, count in
            db.execute("SELECT problem, count(*) FROM submissions GROUP BY problem")}


def failures(db: Database) -> list[dict[str, Any]]:
    """One failed task of each submission that has some: the submission's id, problem, team
    and name, with the task's fold, error kind and error."""
    return [dict(row) for row in db.query(
        "SELECT s.id, s.problem, s.team, s.name, t.fold, t.error_kind, t.error FROM tasks t "
        "JOIN submissions s ON s.id = t.submission WHERE t.state = 'failed' "
        "GROUP BY s.id ORDER BY s.id")]
