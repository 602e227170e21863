"""Shipping data sets to SSH hosts: compressed once, sent to every host, resumed when cut.

A data set travels as a deterministic gzip'd tar (sorted members, no times or owners, a
fixed gzip header), built once per data set and kept in the workspace's
`.datarun/ship/` (every host's lane sends the same file, side by side), with its SHA-256.
The upload appends to the partial file an earlier, interrupted upload left on the host
(`WORKDIR/data/.incoming-<hash>.tar.gz`), so only what is missing travels; the harness
then checks the archive's SHA-256 and the data set's content hash before using it
(`datarun.remote.incoming`). gzip level 1 was the fastest end to end of what every host's
Python can unpack (bench/ship.py); zstd would need a module or tool hosts may lack.
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

from datarun.remote.common import Layout

COMPRESSLEVEL = 1
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


def write_archive(folder: Path, arcname: str, out: Path, level: int | None = None) -> None:
    """A tar.gz of `folder` under `arcname`, the same bytes for the same content."""
    level = COMPRESSLEVEL if level is None else level
    with open(out, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=level,
                                               mtime=0) as gz, tarfile.open(fileobj=gz, mode="w",
                                                                            format=tarfile.PAX_FORMAT) as tar:
        tar.add(folder, arcname=arcname, recursive=False, filter=_normalise)
        for root, dirs, files in os.walk(folder):
            dirs.sort()
            rel = Path(root).relative_to(folder)
            for name in dirs:
                tar.add(Path(root) / name, arcname=f"{arcname}/{(rel / name).as_posix()}", recursive=False,
                        filter=_normalise)
            for name in sorted(files):
                tar.add(Path(root) / name, arcname=f"{arcname}/{(rel / name).as_posix()}", filter=_normalise)


def data_archive(cache: Path, folder: Path, digest: str) -> tuple[Path, str]:
    """The compressed archive of data set `digest` and its SHA-256, built once."""
    cache.mkdir(parents=True, exist_ok=True)
    path = cache / f"{digest}.tar.gz"
    stamp = cache / f"{digest}.tar.gz.sha256"
    with _lock(str(path)):
        if path.exists() and stamp.exists():
            return path, stamp.read_text().strip()
        fd, tmp = tempfile.mkstemp(dir=cache, prefix=".tmp-")
        os.close(fd)
        try:
            write_archive(Path(folder), f"{Layout.ARCHIVE_FOLDERS[1]}/{digest}", Path(tmp))
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
    sent = 0
    with open(local, "rb") as source, sftp.open(remote, "ab" if have else "wb") as target:
        target.set_pipelined(True)
        source.seek(have)
        for block in iter(lambda: source.read(BLOCK), b""):
            target.write(block)
            sent += len(block)
            if on_bytes is not None:
                on_bytes(len(block))
    return have, sent
