"""Submissions in the database: what the dispatcher and the board read of them."""

from __future__ import annotations

import json

from datarun.store.db import Database


def files_of(db: Database, submission: int) -> dict[str, str]:
    """A submission's files: {file name: blob hash}."""
    row = db.execute("SELECT files FROM submissions WHERE id = ?", [submission]).fetchone()
    return dict(json.loads(row[0])) if row else {}


def count_by_problem(db: Database) -> dict[str, int]:
    """{problem: submissions} for every problem that has some."""
    return {problem: count for problem, count in
            db.execute("SELECT problem, count(*) FROM submissions GROUP BY problem")}
