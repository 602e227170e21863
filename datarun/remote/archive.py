"""Tar archives in and out of a host: bundles unpacked safely, results packed for the organiser.

An archive arriving on a host is checked whole before anything is written: every member
must be a plain file or folder under `tasks/<key>/` or `data/<hash>/`, with no absolute
path, no `..`, no link and no device. Each task and data folder is then written under a
temporary name and renamed into place, so the runner never sees half a bundle.
"""

import errno
import hashlib
import os
import shutil
import tarfile
import uuid
from pathlib import Path, PurePosixPath
from typing import Any

from .common import KEY_PATTERN, HarnessError, Layout, make_read_only
from .sensitive import result_files

TOP_FOLDERS = Layout.ARCHIVE_FOLDERS


def _member_parts(member: tarfile.TarInfo) -> tuple[str, ...]:
    name = member.name
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise HarnessError(f"unsafe archive: absolute path {name!r}")
    parts = tuple(p for p in PurePosixPath(name).parts if p not in ("", "."))
    if ".." in parts:
        raise HarnessError(f"unsafe archive: {name!r} climbs out with '..'")
    if member.issym() or member.islnk():
        raise HarnessError(f"unsafe archive: {name!r} is a link")
    if not (member.isfile() or member.isdir()):
        raise HarnessError(f"unsafe archive: {name!r} is not a plain file or folder")
    if not parts:
        return parts
    if parts[0] not in TOP_FOLDERS:
        raise HarnessError(f"unexpected archive member {name!r}: only tasks/<key>/ and data/<hash>/")
    if len(parts) >= 2 and not KEY_PATTERN.match(parts[1]):
        raise HarnessError(f"bad name {parts[1]!r} in archive member {name!r}")
    if len(parts) == 2 and member.isfile():
        raise HarnessError(f"unexpected archive member {name!r}: a file where a folder belongs")
    return parts


def _extract_group(tar: tarfile.TarFile, members: list, final: Path, replace: bool) -> None:
    """Write one tasks/<key> or data/<hash> folder under a temporary name, then rename it
    (over an older folder only with `replace`: else OSError if one appeared meanwhile)."""
    tmp = final.parent / f".tmp-{final.name}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    try:
        for member, rest in members:
            target = tmp.joinpath(*rest) if rest else tmp
            if member.isdir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            source = tar.extractfile(member)
            if source is None:  # a plain file always has its data; _member_parts checked that
                raise HarnessError(f"archive member {member.name!r} has no data")
            with source, open(target, "wb") as out:
                shutil.copyfileobj(source, out)
        if replace and final.exists():
            shutil.rmtree(final)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def refusal(layout: Layout, key: str) -> str:
    """Why a bundle for `key` is not taken: its folder is there already, in some state."""
    folder = layout.task(key)
    if (folder / "result.json").exists():
        state = "finished"
    elif (folder / "status.json").exists():
        state = "running"
    elif layout.marker(key).exists():
        state = "queued"
    else:
        state = "left over"
    return (f"task folder {key} already exists on the host ({state}): a bundle is never "
            "merged into an older one; send the task again under a new key")


def unpack(layout: Layout, archive: Path) -> dict:
    """Unpack a bundle archive into WORKDIR; return {"tasks": [...], "data": [...],
    "skipped": ["data/<hash>"], "refused": {key: reason}}."""
    try:
        tar = tarfile.open(archive, "r:*")
    except (OSError, tarfile.TarError) as error:
        raise HarnessError(f"cannot read archive {archive}: {error}") from None
    with tar:
        groups: dict[tuple[str, str], list] = {}
        for member in tar.getmembers():
            parts = _member_parts(member)
            if len(parts) < 2:
                continue
            groups.setdefault((parts[0], parts[1]), []).append((member, parts[2:]))
        for (top, name), members in groups.items():
            if top == "tasks" and not any(rest == ("task.json",) for _, rest in members):
                raise HarnessError(f"task {name} in the archive has no task.json")
        result: dict[str, Any] = {"tasks": [], "data": [], "skipped": [], "refused": {}}
        # Data first: a task marked runnable must find its data complete.
        for (top, name), members in sorted(groups.items(), key=lambda item: item[0][0] != "data"):
            if top == "data":
                final = layout.data_set(name)
                if layout.is_complete(final):
                    result["skipped"].append(f"data/{name}")
                    continue
                _extract_group(tar, members, final, replace=True)  # a half-written one
                layout.mark_complete(final)
                make_read_only(final)
                result["data"].append(name)
            else:
                final = layout.task(name)
                if final.exists() or layout.marker(name).exists():
                    # Each attempt is sent once under a key of its own: a folder already there
                    # is another attempt's (an earlier run, a restored database), never ours
                    # to run again or to merge into.
                    result["refused"][name] = refusal(layout, name)
                    continue
                try:
                    _extract_group(tar, members, final, replace=False)
                except OSError as error:
                    if error.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                        raise
                    result["refused"][name] = refusal(layout, name)  # arrived meanwhile
                    continue
                layout.marker(name).touch()
                result["tasks"].append(name)
    return result


def pack(layout: Layout, out: Path, keys: list[str]) -> dict:
    """A tar at OUT of finished tasks' result.json, predictions and output.log, as <key>/...

    Its size and SHA-256 are taken from the descriptor that wrote it, before it is renamed
    into place: whatever is appended to OUT or swapped in afterwards (a task can reach
    WORKDIR when it runs unsandboxed) is not in what the organiser is told to fetch, so
    the organiser reads exactly `size` bytes and refuses any other content. Only regular
    files are packed: a link left in a task folder would make the organiser refuse the
    whole archive, every other task's results with it."""
    packed, missing = [], []
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "w+b") as handle:
            with tarfile.open(fileobj=handle, mode="w") as tar:
                for key in keys:
                    if not layout.has_result(key):
                        missing.append(key)
                        continue
                    for path in result_files(layout, key):
                        tar.add(path, arcname=f"{key}/{path.name}", recursive=False)
                    packed.append(key)
            size = handle.tell()
            handle.flush()
            handle.seek(0)
            digest, left = hashlib.sha256(), size
            while left:
                chunk = handle.read(min(left, 1 << 20))
                if not chunk:
                    break
                digest.update(chunk)
                left -= len(chunk)
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return {"archive": str(out), "packed": packed, "missing": missing, "size": size,
            "sha256": digest.hexdigest()}

