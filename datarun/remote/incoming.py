"""Data sets arriving on a host: uploaded in pieces, checked, put in place.

A data set comes one of two ways, as the organiser decides from a sample of its bytes
(`datarun.executors.shipping`): as its files, each uploaded to
`WORKDIR/data/.incoming-<hash>/` (a data set gzip does not shrink several-fold: no
archive to build, nothing to unpack), or as a gzip'd tar (a deterministic one, the same
bytes every time it is built) uploaded to `WORKDIR/data/.incoming-<hash>.tar`. Either
way each upload appends to what an interrupted one left there, so a transfer resumes
rather than restarts. For files, `accept_data` checks the data set's content hash and
renames the folder into place (a folder whose hash differs is deleted, and the next
attempt starts over). For an archive, it checks the archive's SHA-256 against the one the organiser computed (a damaged or
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
from .common import HarnessError, Layout, check_key, make_read_only

CHUNK = 1 << 20


def incoming_path(layout: Layout, digest: str) -> Path:
    return layout.data / f".incoming-{check_key(digest, 'data hash')}.tar"


def incoming_folder(layout: Layout, digest: str) -> Path:
    return layout.data / f".incoming-{check_key(digest, 'data hash')}"


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


def _accept_files(layout: Layout, digest: str) -> dict:
    """The uploaded folder of data set `digest`, its content hash checked, renamed into place."""
    folder = incoming_folder(layout, digest)
    if not folder.is_dir():
        raise HarnessError(f"no uploaded files for data set {digest}")
    if any(p.is_symlink() or not (p.is_file() or p.is_dir()) for p in folder.rglob("*")):
        _remove(folder)
        raise HarnessError(f"the files of data set {digest} hold something other than files and "
                           "folders: removed, they are sent again from the start")
    content = tree_hash(folder)
    if content != digest:
        _remove(folder)
        raise HarnessError(f"the files of data set {digest} arrived damaged (content hash "
                           f"{content[:12]}): removed, they are sent again from the start")
    final = layout.data_set(digest)
    if final.exists():  # a half-written one of an earlier attempt
        _remove(final)
    layout.mark_complete(folder)
    make_read_only(folder)
    os.rename(folder, final)
    return {"data": digest, "skipped": False, "bytes": sum(p.stat().st_size for p in final.rglob("*") if p.is_file())}


def accept_data(workdir: str | os.PathLike, digest: str, sha256: str | None,
                space: str | None = None) -> dict:
    """Check the uploaded data set `digest` and put it in place: its archive (SHA-256
    `sha256`) unpacked, or (`sha256` None) the folder of its files."""
    layout = Layout(workdir, space).make()
    archive = incoming_path(layout, digest)
    final = layout.data_set(digest)
    if layout.is_complete(final):
        archive.unlink(missing_ok=True)
        _remove(incoming_folder(layout, digest))
        return {"data": digest, "skipped": True}
    if sha256 is None:
        return _accept_files(layout, digest)
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
