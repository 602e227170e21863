"""The record of what an organiser changed after the fact: hiding a submission, editing or
removing an event, removing a problem, a team's final choice. One row per change, never
edited, so a board's history can be explained later (`datarun history`)."""

from __future__ import annotations

import json
import time
from typing import Any

from datarun.store.db import Database


def record(db: Database, action: str, subject: str | int, detail: dict[str, Any] | None = None,
           at: float | None = None) -> None:
    """Add one change to the record (call it in the transaction that makes the change)."""
    db.execute("INSERT INTO actions (at, action, subject, detail) VALUES (?, ?, ?, ?)",
               [time.time() if at is None else at, action, str(subject),
                json.dumps(detail) if detail is not None else None])


def listed(db: Database, subject: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
    """The changes (to `subject`), oldest first (the last `limit` of them)."""
    sql = "SELECT id, at AS recorded_at, action, subject, detail FROM actions"
    args: list[Any] = []
    if subject is not None:
        sql += " WHERE subject = ?"
        args.append(subject)
    sql += " ORDER BY id DESC"
    if limit is not None:
        sql += " LIMIT ?"
        args.append(limit)
    rows = [dict(row) for row in db.query(sql, args)]
    for row in rows:
        row["detail"] = json.loads(row["detail"]) if row["detail"] else None
    return rows[::-1]
