"""Free space: recognising a full disk wherever it shows, and saying so in one line.

A full disk shows as an `OSError` with errno ENOSPC (or EDQUOT, a quota), as SQLite's
"database or disk is full", or as numpy's short write ("N requested and M written",
without an errno). Each is turned into `DiskFull`, whose message names the folder, its
free space and, when known, the space the write needed, so the organiser knows where to
make room. The same check warns ahead of time: `status` and `host check` flag a folder
with less than `LOW_SPACE` free.
"""

from __future__ import annotations

import errno
import os
import shutil
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from datarun.errors import DiskFull
from datarun.sizes import format_size

# Under this much free space, `status` and `host check` warn (a few data sets' copies and
# a few hundred tasks' predictions).
LOW_SPACE = 1 << 30
FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


def free_bytes(path: Path | str) -> int | None:
    """Free space (for an unprivileged writer) of the file system holding `path`, or of its
    nearest existing parent; None if there is none."""
    folder = Path(path).absolute()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        stat = os.statvfs(folder)
    except OSError:
        return None
    return stat.f_bavail * stat.f_frsize


# SQLite says "disk I/O error" when its WAL index (-shm) cannot grow on a full disk.
SQLITE_IOERR_SHMSIZE = 4874
NEARLY_FULL = 1 << 20  # under this, an I/O error of SQLite's is taken for a full disk


def is_disk_full(error: BaseException, folder: Path | str | None = None) -> bool:
    """Whether `error` is a full disk; for SQLite's plain I/O errors, `folder` (where the
    database is) tells, by its free space."""
    if isinstance(error, sqlite3.Error):
        code = getattr(error, "sqlite_errorcode", None)
        if code in (sqlite3.SQLITE_FULL, SQLITE_IOERR_SHMSIZE) or "disk is full" in str(error):
            return True
        if code is not None and code & 0xFF == sqlite3.SQLITE_IOERR and folder is not None:
            free = free_bytes(folder)
            return free is not None and free < NEARLY_FULL
        return False
    if isinstance(error, OSError):
        if error.errno in FULL_ERRNOS:
            return True
    if isinstance(error, shutil.Error):  # copytree gathers its files' errors as text
        return any("[Errno 28]" in str(item) or "No space left" in str(item) for item in error.args[0])
        # numpy's ndarray.tofile on a short write: no errno, only this text.
        text = str(error)
        return error.errno is None and "requested and" in text and "written" in text
    return False


def disk_full_message(folder: Path | str, needed: int | None = None) -> str:
    free = free_bytes(folder)
    figures = [f"{format_size(free)} free" if free is not None else "free space unknown"]
    if needed:
        figures.append(f"{format_size(needed)} needed")
    return (f"no space left on the device of {folder} ({', '.join(figures)}): "
            "free some space there and run the command again")


def disk_full(folder: Path | str, needed: int | None = None) -> DiskFull:
    return DiskFull(disk_full_message(folder, needed))


def folder_of(error: BaseException, default: Path | str) -> Path | str:
    """The folder a failed write was in, from the error when it says, else `default`."""
    name = getattr(error, "filename", None)
    if isinstance(name, (str, bytes, os.PathLike)) and name:
        path = Path(os.fsdecode(name))
        return path if path.is_dir() else path.parent
    return default


@contextmanager
def space_for(folder: Path | str, needed: int | None = None) -> Iterator[None]:
    """Writes into `folder`: a full disk under them leaves as one `DiskFull` naming it."""
    try:
        yield
    except (OSError, sqlite3.Error) as error:
        if is_disk_full(error, folder):
            raise disk_full(folder_of(error, folder), needed) from None
        raise


def low_space_warning(what: str, folder: Path | str, free: int | None, threshold: int = LOW_SPACE) -> str | None:
    """One line when `folder` (of `what`: "the workspace", "host node1") is short of space."""
    if free is None or free >= threshold:
        return None
    return (f"warning: {what} has {format_size(free)} free in {folder} (under {format_size(threshold)}): "
            "tasks fail on a full disk, free some space there")
