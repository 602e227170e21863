"""Problems in the database: what other parts read of the registered problems."""

from __future__ import annotations

from datarun.store.db import Database


def names(db: Database) -> list[str]:
    """The registered problems' names, sorted."""
    return [row[0] for row in db.execute("SELECT name FROM problems ORDER BY name")]


def exists(db: Database, name: str) -> bool:
    return db.table("problems").count_where("name = ?", [name]) > 0


def fold_numbers(db: Database, problem: str) -> list[int]:
    """The numbers of a problem's frozen folds, in order."""
    return [row[0] for row in db.execute("SELECT fold FROM folds WHERE problem = ? ORDER BY fold", [problem])]
