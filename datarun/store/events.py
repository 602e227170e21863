"""Events in the database: their rows, the problems' default events, who submitted to them.

Rows come back decoded (`default` a bool, `participants` a list or None), as the rest of
datarun and `--json` use them.
"""

from __future__ import annotations

import json
import sqlite3
import time
from typing import Any

from datarun.store.db import Database, transaction

Event = dict[str, Any]


def _decode(row: dict[str, Any]) -> Event:
    row = dict(row)
    row["default"] = bool(row.pop("is_default"))
    row["participants"] = json.loads(row["participants"]) if row["participants"] else None
    return row


def create_defaults(db: Database, problem: str | None = None) -> None:
    """Give every problem (or `problem`) its default event if it has none yet."""
    # One statement, so it is atomic without a transaction of its own; OR IGNORE makes
    # two concurrent callers harmless (and skips a problem whose name an event took).
    sql = ("INSERT OR IGNORE INTO events (name, problem, is_default, created_at) "
           "SELECT p.name, p.name, 1, ? FROM problems p WHERE NOT EXISTS "
           "(SELECT 1 FROM events e WHERE e.problem = p.name AND e.is_default = 1)")
    args: list[Any] = [time.time()]
    if problem is not None:
        sql += " AND p.name = ?"
        args.append(problem)
    db.execute(sql, args)


def get(db: Database, name: str) -> Event | None:
    rows = list(db.table("events").rows_where("name = ?", [name]))
    return _decode(rows[0]) if rows else None


def names(db: Database) -> list[str]:
    return [row["name"] for row in db.table("events").rows_where(select="name", order_by="name")]


def exists(db: Database, name: str) -> bool:
    return db.table("events").count_where("name = ?", [name]) > 0


def default_of(db: Database, problem: str) -> str | None:
    """The name of the problem's default event, if it has one."""
    row = db.execute("SELECT name FROM events WHERE problem = ? AND is_default = 1", [problem]).fetchone()
    return row[0] if row else None


def insert(db: Database, name: str, problem: str, opens: float | None, closes: float | None,
           public_opens: float | None, participants: list[str] | None, min_interval: float | None,
           max_submissions: int | None, max_final: int | None = None) -> bool:
    """Store a new event; False if an event of that name exists already."""
    try:
        with transaction(db):
            db.table("events").insert({
                "name": name, "problem": problem, "is_default": 0, "opens": opens, "closes": closes,
                "public_opens": public_opens,
                "participants": json.dumps(participants) if participants is not None else None,
                "min_interval": min_interval, "max_submissions": max_submissions,
                "max_final": max_final, "created_at": time.time()})
    except sqlite3.IntegrityError:
        return False
    return True


def update(db: Database, name: str, changes: dict[str, Any]) -> None:
    """Set some of an event's rule columns (`participants` a list or None)."""
    values = dict(changes)
    if "participants" in values and values["participants"] is not None:
        values["participants"] = json.dumps(values["participants"])
    columns = ", ".join(f"{column} = ?" for column in values)
    db.execute(f"UPDATE events SET {columns} WHERE name = ?", [*values.values(), name])


def delete(db: Database, name: str) -> None:
    db.execute("DELETE FROM events WHERE name = ? AND is_default = 0", [name])


def listed(db: Database, problem: str | None = None) -> list[Event]:
    """Every event (of `problem`) with its shown (not hidden) submission and team counts, by
    problem then name."""
    sql = ("SELECT e.*, count(s.id) AS submissions, count(DISTINCT s.team) AS teams "
           "FROM events e LEFT JOIN submissions s ON s.event = e.name AND s.hidden_at IS NULL")
    args: list[Any] = []
    if problem is not None:
        sql += " WHERE e.problem = ?"
        args.append(problem)
    sql += " GROUP BY e.name ORDER BY e.problem, e.is_default DESC, e.name"
    return [_decode(row) for row in db.query(sql, args)]


def by_team(db: Database, event: str) -> list[dict[str, Any]]:
    """Each team's submissions to an event: count, last one, how many forced."""
    return [dict(row) for row in db.query(
        "SELECT team, count(*) AS submissions, max(created_at) AS last_submitted_at, "
        "sum(forced IS NOT NULL) AS forced FROM submissions WHERE event = ? "
        "GROUP BY team ORDER BY team", [event])]


def submission_times(db: Database, event: str, team: str) -> list[float]:
    """When a team submitted to an event (what its rules count)."""
    return [row[0] for row in db.execute(
        "SELECT created_at FROM submissions WHERE event = ? AND team = ?", [event, team])]
