"""Unpacking what a host sends back, treating it as untrusted data.

A result archive from a host is a tar of `<key>/<file>` members. Only plain files are
taken, only under the keys asked for, only with plain names (no absolute path, no `..`,
no folder below the key), each under a size cap; everything else refuses the archive
whole, before a byte is written. Files land in `dest/<key>/`, so nothing a host sends
can write outside the task's own folder.
"""

import shutil
import tarfile
from pathlib import Path, PurePosixPath
from typing import IO

from datarun.errors import HostError

MAX_MEMBER_BYTES = 512 * 1024**2
MAX_RESULT_JSON_BYTES = 1024**2


def _checked_members(tar: tarfile.TarFile, keys: set[str], where: str,
                     max_member: int) -> list[tuple[tarfile.TarInfo, str, str]]:
    members = []
    for member in tar.getmembers():
        name = member.name
        parts = PurePosixPath(name).parts
        if name.startswith("/") or ".." in parts:
            raise HostError(f"{where}: unsafe member {name!r} in the result archive (absolute or '..')")
        if member.isdir():
            continue
        if not member.isfile():
            raise HostError(f"{where}: member {name!r} of the result archive is not a plain file")
        parts = tuple(p for p in parts if p not in ("", "."))
        if len(parts) != 2 or parts[0] not in keys:
            raise HostError(f"{where}: unexpected member {name!r} in the result archive")
        cap = MAX_RESULT_JSON_BYTES if parts[1] == "result.json" else max_member
        if member.size > cap:
            raise HostError(
                f"{where}: {name} in the result archive is {member.size} bytes, over the "
                f"{cap}-byte cap"
            )
        members.append((member, parts[0], parts[1]))
    return members


def extract_results(
    archive: Path, dest: Path, keys: list[str], where: str = "host",
    max_member: int = MAX_MEMBER_BYTES,
) -> list[str]:
    """Unpack `<key>/<file>` members into dest/<key>/; return the keys that brought a result.json."""
    try:
        tar = tarfile.open(archive, "r:")
    except (OSError, tarfile.TarError) as error:
        raise HostError(f"{where}: the result archive is unreadable: {error}") from None
    fetched = []
    with tar:
        members = _checked_members(tar, set(keys), where, max_member)
        for member, key, filename in members:
            target = Path(dest) / key
            target.mkdir(parents=True, exist_ok=True)
            source = tar.extractfile(member)
            assert source is not None  # a regular file, checked above
            with source, open(target / filename, "wb") as out:
                # Copy at most the declared size: a member cannot grow past its header.
                shutil.copyfileobj(_Limited(source, member.size), out)
            if filename == "result.json":
                fetched.append(key)
    return [key for key in keys if key in fetched]


class _Limited:
    def __init__(self, source: IO[bytes], limit: int) -> None:
        self.source = source
        self.left = limit

    def read(self, size: int = -1) -> bytes:
        if self.left <= 0:
            return b""
        size = self.left if size < 0 else min(size, self.left)
        chunk = self.source.read(size)
        self.left -= len(chunk)
        return chunk
