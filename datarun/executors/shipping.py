"""Shipping data sets to SSH hosts: sent to every host side by side, resumed when cut.

Whether to compress is decided per data set from a sample (`compression_level`): gzip
level 1 only when the sample shrinks to at most GZIP_BELOW of its size. Compressing costs
the organiser's CPU once and every host's CPU to unpack, and the bytes it saves are what
the SSH layer would otherwise encrypt; on the CSV of bench/ship.py (a ratio of 0.40)
sending it as it is was the faster end to end, so moderately compressible data goes as
its files and only data that gzip shrinks several-fold is compressed. gzip level 1 was
the fastest level of what every host's Python can unpack; zstd would need a module or
tool hosts may lack.

- As its files (`send_tree`): each file is uploaded to `WORKDIR/data/.incoming-<hash>/`,
  appended to what an interrupted upload left of it, so only what is missing travels;
  nothing is packed here nor unpacked there (packing 1 GB into a tar took 8 s here).
- Compressed (`data_archive`, `send_rest`): a deterministic gzip'd tar (sorted members,
  no times or owners, a fixed gzip header), built once per data set and kept in the
  workspace's `.datarun/ship/` (every host's lane sends the same file), with its SHA-256,
  uploaded to `WORKDIR/data/.incoming-<hash>.tar` and resumed the same way.

The harness then checks the data set's content hash (and an archive's SHA-256) before
using it (`datarun.remote.incoming`).
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

from datarun.errors import HostError
from datarun.executors.sshconn import SSHConnection, write_file
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
    """COMPRESSLEVEL when a sample of the data set shrinks to at most GZIP_BELOW, else 0
    (the data set travels as its files)."""
    return COMPRESSLEVEL if sample_ratio(folder) <= GZIP_BELOW else 0


_decided: dict[str, bool] = {}


def compressed(folder: Path, digest: str) -> bool:
    """Whether data set `digest` travels compressed (decided once per data set and process)."""
    with _locks_guard:
        known = _decided.get(digest)
    if known is None:
        known = compression_level(folder) > 0
        with _locks_guard:
            _decided[digest] = known
    return known


def send_tree(sftp, folder: Path, remote: str) -> tuple[int, int]:
    """Upload the files of `folder` under the folder `remote`, each appended to what an
    earlier upload left of it; (bytes already there, bytes sent)."""
    kept = sent = 0
    made: set[str] = set()
    try:
        sftp.mkdir(remote, 0o700)
    except OSError:
        sftp.stat(remote)  # there already (an earlier upload's); else it raises
    made.add(remote)
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        parts = path.relative_to(folder).parts
        for depth in range(len(parts)):
            where = "/".join([remote, *parts[:depth]])
            if where not in made:
                try:
                    sftp.mkdir(where, 0o700)
                except OSError:
                    sftp.stat(where)  # there already (an earlier upload's); else it raises
                made.add(where)
        have, part = send_rest(sftp, path, "/".join([remote, *parts]))
        kept += have
        sent += part
    return kept, sent


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
    """The archive of data set `digest` and its SHA-256, built once: gzip'd at `level`
    (COMPRESSLEVEL by default; 0: a plain tar)."""
    cache.mkdir(parents=True, exist_ok=True)
    path = cache / f"{digest}.tar"
    stamp = cache / f"{digest}.tar.sha256"
    with _lock(str(path)):
        if path.exists() and stamp.exists():
            return path, stamp.read_text().strip()
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


def send_data(conn: SSHConnection, kind: str, local: Path, remote: str, timeout: float) -> tuple[int, int]:
    """Send a data set on `conn`: `kind` "files" (the folder `local`, `send_tree`) or
    "archive" (the file `local`, `send_rest`), within `timeout`; (bytes already there, sent)."""
    name = conn.target.name
    with conn._watchdog(timeout, "an upload"):
        try:
            sftp = conn.sftp()
            return send_tree(sftp, local, remote) if kind == "files" else send_rest(sftp, local, remote)
        except PermissionError as error:
            raise HostError(f"host {name}: cannot write {remote}: {error.strerror or error}") from None
        except OSError as error:
            if isinstance(error, TimeoutError):
                raise
            raise HostError(f"host {name}: upload to {remote} failed: {error}") from None


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
