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


def private_tmp(dest: Path, tag: str = "") -> Path:
    """A new empty file beside dest, readable by its owner only (an empty file is an empty
    SQLite database)."""
    try:
        fd, name = tempfile.mkstemp(prefix=f".{dest.name}{tag}.", suffix=".tmp", dir=dest.parent)
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


# -- the whole workspace ------------------------------------------------------------------------
#
# A workspace's state is its database and its blob store (code, predictions, logs, data
# sets), plus hosts.toml, datarun.toml and the workspace's pinned host keys. The blob store is
# content-addressed and append-only, and every blob is written (to a temporary name, then
# renamed) before the row that names it is committed. So the database is snapshotted first
# and the blob store copied after: every blob the snapshot names is there by then, and a
# blob stored since is merely one more file, named by no row of the copy.

ARCHIVE_FORMAT = "datarun-backup/1"
MANIFEST = "manifest.json"


def backup_workspace(workspace, destination: Path | str, force: bool = False) -> dict:
    """Write the workspace's whole state to `destination`, a tar archive (gzip), taken
    consistently while a dispatcher or `submit` writes; return what it holds."""
    import json
    import tarfile
    import time

    source_path = workspace.db_path
    dest = Path(destination).expanduser().absolute()
    if not source_path.exists():
        raise UsageError(f"{workspace.root} has no database yet: nothing to back up")
    if dest.resolve().is_relative_to(workspace.state_dir.resolve()):
        raise UsageError(f"{dest} is inside the workspace's .datarun/: write the backup elsewhere")
    if dest.is_dir():
        raise UsageError(f"{dest} is a folder: give a file name for the backup")
    if dest.exists() and not force:
        raise UsageError(f"{dest} already exists: remove it, or pass --force to replace it")
    if not dest.parent.is_dir():
        raise UsageError(f"folder {dest.parent} does not exist: create it first")
    snapshot, archive = private_tmp(dest, "-snapshot"), private_tmp(dest)
    try:
        counts = _copy(source_path, snapshot, dest)
        blobs = 0
        with tarfile.open(archive, "w:gz", compresslevel=1) as tar:
            tar.add(snapshot, "datarun.db", recursive=False)
            for path, name in ((workspace.hosts_file, "hosts.toml"),
                               (workspace.root / "datarun.toml", "datarun.toml"),
                               (workspace.known_hosts_path, "known_hosts")):
                if path.is_file():
                    tar.add(path, name, recursive=False)
            for folder, prefix in ((workspace.blobs_dir, "blobs"), (workspace.blobs_dir.parent / "trees", "trees")):
                for path in _stored_files(folder):
                    tar.add(path, f"{prefix}/{path.relative_to(folder).as_posix()}", recursive=False)
                    blobs += prefix == "blobs"
            manifest = {"format": ARCHIVE_FORMAT, "workspace_id": workspace.id, "taken_at": time.time(),
                        "rows": counts, "blobs": blobs}
            data = json.dumps(manifest, indent=2).encode()
            info = tarfile.TarInfo(MANIFEST)
            info.size, info.mtime, info.mode = len(data), int(time.time()), 0o600
            import io

            tar.addfile(info, io.BytesIO(data))
        with open(archive, "rb") as handle:
            os.fsync(handle.fileno())
    except BaseException:
        _remove(archive)
        raise
    finally:
        _remove(snapshot)
    os.replace(archive, dest)
    return {"path": str(dest), "bytes": dest.stat().st_size, "rows": counts, "blobs": blobs,
            "workspace_id": workspace.id}


def _stored_files(folder: Path):
    """The regular files under a blob folder, sorted; temporary ones (`.tmp-*`) left out."""
    if not folder.is_dir():
        return
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".tmp-"))
        for name in sorted(files):
            path = Path(root) / name
            if not name.startswith(".tmp-") and path.is_file() and not path.is_symlink():
                yield path


def _member_target(name: str) -> str | None:
    """Where an archive member goes, relative to the new workspace; None if it is not one
    a backup holds."""
    parts = name.split("/")
    if any(part in ("", ".", "..") for part in parts) or name.startswith("/"):
        return None
    if name == "datarun.db":
        return ".datarun/datarun.db"
    if name == "known_hosts":
        return ".datarun/known_hosts"
    if name in ("hosts.toml", "datarun.toml"):
        return name
    if parts[0] in ("blobs", "trees") and len(parts) > 1:
        return ".datarun/" + name
    return None


def restore_workspace(archive_path: Path | str, folder: Path | str) -> dict:
    """Make a workspace in the empty (or new) `folder` from a `db backup` archive.

    Every member is checked before anything is written (a regular file, at a place a backup
    holds, blobs named by their content's SHA-256); the database is checked and migrated.
    The restored workspace gets an id of its own, so it and the original, if both live,
    never meet on a host; the tasks that were running when the backup was taken go back
    to the queue (no host loss counted): the next `train` or `dispatch` runs them here."""
    import hashlib
    import json
    import shutil
    import tarfile

    source = Path(archive_path).expanduser().absolute()
    root = Path(folder).expanduser().absolute()
    if not source.is_file():
        raise UsageError(f"backup {source} does not exist")
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise UsageError(f"{root} is not an empty folder: restore into a new or empty one")
    if not root.parent.is_dir():
        raise UsageError(f"folder {root.parent} does not exist: create it first")
    try:
        tar = tarfile.open(source, "r:*")
    except (tarfile.TarError, OSError) as error:
        raise UsageError(f"{source.name} is not a datarun backup: {error}") from None
    made = not root.exists()
    try:
        with tar:
            members = tar.getmembers()
            names = {member.name for member in members}
            if MANIFEST not in names or "datarun.db" not in names:
                raise UsageError(f"{source.name} is not a datarun backup (no {MANIFEST} or datarun.db): "
                                 "make one with `datarun db backup`")
            manifest = json.loads(tar.extractfile(MANIFEST).read())  # type: ignore[union-attr]
            if manifest.get("format") != ARCHIVE_FORMAT:
                raise UsageError(f"{source.name}: backup format {manifest.get('format')!r} is not "
                                 f"{ARCHIVE_FORMAT!r}, the one this datarun reads")
            for member in members:
                if member.name == MANIFEST:
                    continue
                if not member.isfile() or _member_target(member.name) is None:
                    raise UsageError(f"{source.name}: unexpected member {member.name!r}: not a "
                                     "datarun backup, nothing restored")
            root.mkdir(exist_ok=True)
            state = root / ".datarun"
            state.mkdir(mode=0o700)
            (state / "blobs").mkdir()
            for member in members:
                target = _member_target(member.name)
                if target is None:
                    continue
                path = root / target
                path.parent.mkdir(parents=True, exist_ok=True)
                data = tar.extractfile(member).read()  # type: ignore[union-attr]
                parts = member.name.split("/")
                if parts[0] == "blobs" and hashlib.sha256(data).hexdigest() != parts[-1]:
                    raise Failed(f"{source.name}: blob {parts[-1][:12]}... does not match its "
                                 "content: the backup is damaged, nothing restored")
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as handle:
                    handle.write(data)
        restored = _reopen(root, source.name)
    except BaseException:
        if made:
            shutil.rmtree(root, ignore_errors=True)
        elif root.is_dir():
            for child in root.iterdir():
                shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
        raise
    return {"root": str(root), "workspace_id": restored["id"], "from_workspace_id": manifest.get("workspace_id"),
            "taken_at": manifest.get("taken_at"), "rows": manifest.get("rows"),
            "blobs": manifest.get("blobs"), "requeued": restored["requeued"]}


def _reopen(root: Path, name: str) -> dict:
    """Check and migrate the restored database, give the workspace its own id, and put the
    tasks that were running back in the queue."""
    from datarun.store import taskqueries, tasks
    from datarun.store.db import open_db, transaction
    from datarun.store.migrations import new_workspace_id
    from datarun.store.workspace import Workspace

    workspace = Workspace(root)
    try:
        conn = sqlite3.connect(workspace.db_path)
        try:
            check = conn.execute("PRAGMA integrity_check").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.Error as error:
        check = str(error)
    if check != "ok":
        raise Failed(f"{name}: its database failed the integrity check ({check.splitlines()[0]}): "
                     "nothing restored")
    db = open_db(workspace)
    try:
        new_id = new_workspace_id()
        with transaction(db):
            db.execute("UPDATE workspace SET id = ?", [new_id])
            running = taskqueries.running(db)
            for task in running:
                tasks.unclaim(db, task)
    finally:
        db.conn.close()
    return {"id": new_id, "requeued": len(running)}
