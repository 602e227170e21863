"""Shipping data sets to SSH hosts: packed once, sent to every host, resumed when cut.

A data set travels as a deterministic tar (sorted members, no times or owners), gzip'd
with a fixed header when compression pays on its data, built once per data set and kept
in the workspace's `.datarun/ship/` (every host's lane sends the same file, side by side),
with its SHA-256. The upload appends to the partial file an earlier, interrupted upload
left on the host (`WORKDIR/data/.incoming-<hash>.tar`), so only what is missing travels;
the harness then checks the archive's SHA-256 and the data set's content hash before
using it (`datarun.remote.incoming`).

Whether to compress is decided per data set from a sample (`compression_level`): gzip
level 1 only when the sample shrinks to at most GZIP_BELOW of its size. Compressing costs
the organiser's CPU once and every host's CPU to unpack, and the bytes it saves are what
the SSH layer would otherwise encrypt; on the CSV of bench/ship.py (a ratio of 0.40)
sending it plain was the faster end to end, so moderately compressible data goes plain
and only data that gzip shrinks several-fold is compressed. gzip level 1 was the fastest
level of what every host's Python can unpack; zstd would need a module or tool hosts may
lack.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import tarfile
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

from datarun.executors.sshconn import write_file
from datarun.remote.common import Layout

COMPRESSLEVEL = 1
# Compress a data set when a sample of it shrinks to at most this share of its size.
GZIP_BELOW = 0.25
# The sample: this many slices of SAMPLE_SLICE bytes, spread evenly over the data set's files.
SAMPLE_SLICES = 16
SAMPLE_SLICE = 256 * 1024
BLOCK = 1 << 20
_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()


def _lock(key: str) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault(key, threading.Lock())


def _normalise(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mode = 0o755 if info.isdir() else 0o644
    return info


def sample_ratio(folder: Path) -> float:
    """The compressed size over the raw size of a sample of the data set's bytes (gzip
    level COMPRESSLEVEL); 1.0 for an empty data set."""
    files = sorted(p for p in Path(folder).rglob("*") if p.is_file())
    total = sum(p.stat().st_size for p in files)
    if total == 0:
        return 1.0
    step = max(total // SAMPLE_SLICES, 1)
    sample = bytearray()
    offset = 0  # of the current file's start in the data set's bytes
    wanted = 0  # the next slice's start, in the same bytes
    for path in files:
        size = path.stat().st_size
        with open(path, "rb") as handle:
            while wanted < offset + size and len(sample) < SAMPLE_SLICES * SAMPLE_SLICE:
                handle.seek(wanted - offset)
                sample += handle.read(SAMPLE_SLICE)
                wanted += step
        offset += size
    return len(gzip.compress(bytes(sample), compresslevel=COMPRESSLEVEL, mtime=0)) / max(len(sample), 1)


def compression_level(folder: Path) -> int:
    """COMPRESSLEVEL when a sample of the data set shrinks to at most GZIP_BELOW, else 0 (plain tar)."""
    return COMPRESSLEVEL if sample_ratio(folder) <= GZIP_BELOW else 0


def write_archive(folder: Path, arcname: str, out: Path, level: int | None = None) -> None:
    """A tar of `folder` under `arcname`, gzip'd at `level` (0: plain tar), the same bytes
    for the same content."""
    level = COMPRESSLEVEL if level is None else level
    with open(out, "wb") as raw:
        if level == 0:
            with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
                _add_tree(tar, folder, arcname)
            return
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=level, mtime=0) as gz, \
                tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
            _add_tree(tar, folder, arcname)


def _add_tree(tar: tarfile.TarFile, folder: Path, arcname: str) -> None:
    """Add `folder` to `tar` under `arcname`, members in a sorted order."""
    tar.add(folder, arcname=arcname, recursive=False, filter=_normalise)
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        rel = Path(root).relative_to(folder)
        for name in dirs:
            tar.add(Path(root) / name, arcname=f"{arcname}/{(rel / name).as_posix()}", recursive=False,
                    filter=_normalise)
        for name in sorted(files):
            tar.add(Path(root) / name, arcname=f"{arcname}/{(rel / name).as_posix()}", filter=_normalise)


def data_archive(cache: Path, folder: Path, digest: str, level: int | None = None) -> tuple[Path, str]:
    """The archive of data set `digest` and its SHA-256, built once: gzip'd at `level`, or
    as `compression_level` decides on a sample of the data."""
    cache.mkdir(parents=True, exist_ok=True)
    path = cache / f"{digest}.tar"
    stamp = cache / f"{digest}.tar.sha256"
    with _lock(str(path)):
        if path.exists() and stamp.exists():
            return path, stamp.read_text().strip()
        level = compression_level(Path(folder)) if level is None else level
        fd, tmp = tempfile.mkstemp(dir=cache, prefix=".tmp-")
        os.close(fd)
        try:
            write_archive(Path(folder), f"{Layout.ARCHIVE_FOLDERS[1]}/{digest}", Path(tmp), level)
            digest_of = hashlib.sha256()
            with open(tmp, "rb") as handle:
                for block in iter(lambda: handle.read(BLOCK), b""):
                    digest_of.update(block)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        stamp.write_text(digest_of.hexdigest())
        return path, digest_of.hexdigest()


def send_rest(sftp, local: Path, remote: str, on_bytes: Callable[[int], None] | None = None) -> tuple[int, int]:
    """Append to `remote` what it lacks of `local` (an earlier upload may have left a part);
    (bytes already there, bytes sent). A remote file longer than `local` is started over."""
    size = local.stat().st_size
    try:
        have = sftp.stat(remote).st_size or 0
    except OSError:
        have = 0
    if have > size:
        sftp.remove(remote)
        have = 0
    if have == size:
        return have, 0
    with open(local, "rb") as source:
        source.seek(have)
        sent = write_file(sftp, source, remote, append=bool(have), on_bytes=on_bytes)
    return have, sent
