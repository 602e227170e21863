"""Problems in the database: what other parts read of the registered problems."""

from __future__ import annotations

import json
from typing import Any

from datarun.store.db import Database, transaction


def names(db: Database) -> list[str]:
    """The registered problems' names, sorted."""
    return [row[0] for row in db.execute("SELECT name FROM problems ORDER BY name")]


def exists(db: Database, name: str) -> bool:
    return db.table("problems").count_where("name = ?", [name]) > 0


def fold_numbers(db: Database, problem: str) -> list[int]:
    """The numbers of a problem's frozen folds, in order."""
    return [row[0] for row in db.execute("SELECT fold FROM folds WHERE problem = ? ORDER BY fold", [problem])]


def set_spec_keys(db: Database, name: str, keys: dict[str, Any]) -> None:
    """Set top-level keys of a problem's stored spec (`resources`, `environment`)."""
    with transaction(db):
        row = db.execute("SELECT spec FROM problems WHERE name = ?", [name]).fetchone()
        spec = json.loads(row[0]) if row and row[0] else {}
        spec.update(keys)
        db.execute("UPDATE problems SET spec = ? WHERE name = ?", [json.dumps(spec), name])


def delete(db: Database, name: str) -> dict[str, int]:
    """Remove a problem's rows and its submissions', events', folds' and blends' (its tasks'
    first, through `datarun.store.tasks.delete_of_problem`); how many of each went."""
    gone = {}
    db.execute("DELETE FROM bagged_scores WHERE submission IN (SELECT id FROM submissions WHERE problem = ?)",
               [name])
    for table in ("contributivity", "blends"):
        db.execute(f"DELETE FROM {table} WHERE problem = ?", [name])
    for table in ("submissions", "events", "folds"):
        gone[table] = db.execute(f"DELETE FROM {table} WHERE problem = ?", [name]).rowcount
    db.execute("DELETE FROM problems WHERE name = ?", [name])
    return gone
