"""The workspace's SQLite database: opening it, migrating it, and the one way to write to it.

WAL mode lets `status` and `submit` read and write while a dispatcher works; the busy
timeout turns brief lock contention into a wait instead of an error. The schema is built
by the numbered migrations of `datarun.store.migrations`, applied on open.

Every write runs inside `transaction(db)`: `BEGIN IMMEDIATE` takes the write lock at the
start, so a transaction that reads and then writes never meets another writer half-way
(SQLite would answer "database is locked" at the upgrade instead of waiting). An inner
`transaction` joins the one already open, so a function that writes in a transaction of
its own can also be one step of a caller's larger one (a result and its scores together).
"""

from __future__ import annotations

import sqlite3
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from datarun.store.migrations import MIGRATIONS

if TYPE_CHECKING:
    from sqlite_utils import Database
else:
    def _import_sqlite_utils():
        # sqlite-utils imports pandas and numpy when it can, only to recognise their values
        # on insert, which datarun never passes it (arrays go to the blob store). Those
        # imports cost ~0.4 s on every command, so hide them while sqlite-utils loads
        # (unless something already imported them).
        hidden = [name for name in ("pandas", "numpy") if name not in sys.modules]
        for name in hidden:
            sys.modules[name] = None
        try:
            import sqlite_utils
        finally:
            for name in hidden:
                del sys.modules[name]
        return sqlite_utils

    Database = _import_sqlite_utils().Database

__all__ = ["MIGRATIONS", "Database", "applied_migrations", "connect", "migrate", "open_db",
           "transaction", "workspace_id"]

BUSY_TIMEOUT_MS = 60_000


class HasDatabase(Protocol):
    """Where a database lives: a `datarun.store.workspace.Workspace`."""

    @property
    def db_path(self) -> Path: ...


@contextmanager
def transaction(db: Database) -> Iterator[Database]:
    """Run the block as one write transaction (`BEGIN IMMEDIATE`), committed at its end and
    rolled back if it raises; inside another transaction, the block joins it."""
    conn = db.conn
    if conn.in_transaction:
        yield db
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        conn.rollback()
        raise
    conn.commit()


def applied_migrations(db: Database) -> list[str]:
    if "_migrations" not in db.table_names():  # a blank file: nothing applied yet
        return []
    return [row["name"] for row in db.query("SELECT name FROM _migrations ORDER BY rowid")]


def migrate(db: Database) -> list[str]:
    """Apply the migrations not yet applied, each in its own transaction; return their names."""
    db.execute("CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at REAL)")
    done = set(applied_migrations(db))
    applied = []
    for migration in MIGRATIONS:
        if migration.__name__ in done:
            continue
        with transaction(db):
            # A concurrent opener may have applied it while we waited for the lock.
            if db.execute(
                "SELECT 1 FROM _migrations WHERE name = ?", [migration.__name__]
            ).fetchone():
                continue
            migration(db)
            db.execute(
                "INSERT INTO _migrations (name, applied_at) VALUES (?, ?)",
                [migration.__name__, time.time()],
            )
        applied.append(migration.__name__)
    return applied


def connect(path: str | Path) -> Database:
    # isolation_level=None: we issue BEGIN ourselves, so a write transaction is explicit.
    conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA foreign_keys = ON")
    return Database(conn)


def open_db(workspace: HasDatabase) -> Database:
    db = connect(workspace.db_path)
    migrate(db)
    return db


def workspace_id(db: Database) -> str:
    """The workspace's id (see migrations.m006_workspace_id)."""
    return str(db.execute("SELECT id FROM workspace").fetchone()[0])
