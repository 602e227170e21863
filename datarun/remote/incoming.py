"""Data sets arriving on a host: an archive uploaded in pieces, checked, unpacked.

The organiser uploads a data set's archive (a deterministic tar, gzip'd when that pays,
the same bytes every time it is built) to `WORKDIR/data/.incoming-<hash>.tar`,
appending to what an interrupted upload left there, so a transfer resumes rather than
restarts. `accept_data` then checks the archive's SHA-256 against the one the organiser computed (a damaged or
mixed-up archive is deleted, and the next attempt starts over), unpacks it, and checks
the data set's own content hash (the hash of its relative file names and their
contents' hashes, as the organiser's blob store computes it) before marking it complete.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from .archive import unpack
from .common import HarnessError, Layout, check_key

CHUNK = 1 << 20


def incoming_path(layout: Layout, digest: str) -> Path:
    return layout.data / f".incoming-{check_key(digest, 'data hash')}.tar"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def tree_hash(folder: Path) -> str:
    """The content hash of a data set folder, defined as the organiser's blob store defines it."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != Layout.COMPLETE):
        rel = path.relative_to(folder).as_posix()
        digest.update(f"{rel}\0{sha256_file(path)}\n".encode())
    return digest.hexdigest()


def _remove(folder: Path) -> None:
    for root, dirs, _ in os.walk(folder):
        os.chmod(root, 0o700)
        for name in dirs:
            os.chmod(os.path.join(root, name), 0o700)
    shutil.rmtree(folder, ignore_errors=True)


def accept_data(workdir: str | os.PathLike, digest: str, sha256: str, space: str | None = None) -> dict:
    """Check the uploaded archive of data set `digest`, unpack it, check the data set."""
    layout = Layout(workdir, space).make()
    archive = incoming_path(layout, digest)
    final = layout.data_set(digest)
    if layout.is_complete(final):
        archive.unlink(missing_ok=True)
        return {"data": digest, "skipped": True}
    if not archive.is_file():
        raise HarnessError(f"no uploaded archive for data set {digest}")
    got = sha256_file(archive)
    if got != sha256:
        archive.unlink()
        raise HarnessError(f"the archive of data set {digest} arrived damaged (SHA-256 {got[:12]}, "
                           f"expected {sha256[:12]}): it is sent again from the start")
    unpack(layout, archive)
    archive.unlink()
    content = tree_hash(final)
    if content != digest:
        _remove(final)
        raise HarnessError(f"data set {digest} unpacked with content hash {content[:12]}: removed")
    return {"data": digest, "skipped": False, "bytes": sum(p.stat().st_size for p in final.rglob("*") if p.is_file())}
