"""`datarun db backup`: a consistent copy of the workspace database, taken while others write.

SQLite's online backup API, asked to copy every page in one step, reads them all inside
one read transaction: in WAL mode that is a snapshot, so a dispatcher or `submit` writing
meanwhile neither waits for the copy nor tears it, and the copy never mixes two states.
Copying the file with `cp` would, and would miss what still sits in the `-wal` file.

The copy is written beside FILE under a temporary name, switched out of WAL (one
self-contained file), checked with `PRAGMA integrity_check`, and only then renamed to FILE,
so FILE is either the old file or a whole, checked copy.

The copy holds every team's code hashes, scores and errors: it is created 0600 (mkstemp,
before SQLite opens it; SQLite gives its journal the same mode), so it is never readable
by others, not even for the moment before a chmod.
"""

import os
import sqlite3
import tempfile
from pathlib import Path

from datarun.errors import Failed, UsageError

COUNTED = ("problems", "submissions", "tasks", "scores")


def backup_database(workspace, destination: Path | str, force: bool = False) -> dict:
    """Copy the workspace's database to `destination`; return its path, size and row counts."""
    source_path = workspace.db_path
    dest = Path(destination).expanduser().absolute()
    if not source_path.exists():
        raise UsageError(f"{workspace.root} has no database yet: nothing to back up")
    if dest.exists() and dest.resolve() == source_path.resolve():
        raise UsageError(f"{dest} is the workspace's own database: give another file for the copy")
    if dest.is_dir():
        raise UsageError(f"{dest} is a folder: give a file name for the copy")
    if dest.exists() and not force:
        raise UsageError(f"{dest} already exists: remove it, or pass --force to replace it")
    if not dest.parent.is_dir():
        raise UsageError(f"folder {dest.parent} does not exist: create it first")
    tmp = private_tmp(dest)
    try:
        counts = _copy(source_path, tmp, dest)
    except BaseException:
        _remove(tmp)
        raise
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, dest)
    return {"path": str(dest), "bytes": dest.stat().st_size, "rows": counts}


def private_tmp(dest: Path) -> Path:
    """A new empty file beside dest, readable by its owner only (an empty file is an empty
    SQLite database)."""
    try:
        fd, name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    except OSError as error:
        raise UsageError(f"cannot write the copy at {dest}: {error.strerror or error}") from None
    os.close(fd)
    return Path(name)


def _copy(source_path: Path, tmp: Path, dest: Path) -> dict[str, int]:
    """Back up into tmp, then check the copy: what it holds, or the error that says which failed."""
    try:
        source = sqlite3.connect(source_path, timeout=60)
        try:
            copy = sqlite3.connect(tmp)
            source.backup(copy)  # pages=-1: all of them in one step, from one snapshot
        finally:
            source.close()
    except sqlite3.Error as error:
        raise UsageError(f"cannot write the copy at {dest}: {error}") from None
    try:
        copy.execute("PRAGMA journal_mode = DELETE")  # one self-contained file
        check = copy.execute("PRAGMA integrity_check").fetchone()[0]
        if check == "ok":
            tables = {name for (name,) in copy.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            return {name: copy.execute(f"SELECT count(*) FROM {name}").fetchone()[0]
                    for name in COUNTED if name in tables}
    except sqlite3.Error as error:
        check = str(error)
    finally:
        copy.close()
    raise Failed(f"the copy failed its integrity check ({check.splitlines()[0]}): the workspace "
                 "database is damaged; keep your earlier backups")


def _remove(path: Path) -> None:
    for suffix in ("", "-journal", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
