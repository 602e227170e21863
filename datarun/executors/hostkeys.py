"""Host keys: checked against known_hosts, never added on the quiet, pinned on request.

Keys are read from `~/.ssh/known_hosts` and the workspace's `.datarun/known_hosts`. An
unknown key is refused with its fingerprint and the command that pins it; a changed key
(of the same type or not) is refused naming both fingerprints. Pinning writes only the
workspace's file: beside a different key already known for the host it refuses, unless
told to replace (`host trust --replace`), which drops that host's old pins from the
workspace's file (and nothing else) and pins the new key. `~/.ssh/known_hosts` is the
user's and is never edited: a stale key there is named with the `ssh-keygen -R` that
removes it.

This module knows keys, files and names only; it opens no connection. What the host
shows is read by the caller (`sshconn.scan_host_key`) and handed in, so the connection
layer imports this module and never the other way round.
"""

import base64
import hashlib
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import paramiko

from datarun.errors import HostError


def fingerprint(key: paramiko.PKey) -> str:
    """The SHA256 fingerprint OpenSSH prints: `SHA256:` and unpadded base64."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def describe(key: paramiko.PKey) -> str:
    return f"{key.get_name()} {fingerprint(key)}"


def unknown_key_message(name: str, known_hosts_name: str, key: paramiko.PKey) -> str:
    return (f"host {name}: unknown host key {describe(key)} for {known_hosts_name}: if it is "
            f"right, pin it with `datarun host trust {name}`")


def changed_key_message(name: str, known_hosts_name: str, key: paramiko.PKey,
                        old: list[paramiko.PKey]) -> str:
    """One line naming the key the host shows now and the pinned one(s) it differs from."""
    pinned = " and ".join(describe(k) for k in old) or "another key"
    return (
        f"host {name}: the host key of {known_hosts_name} has CHANGED: it is now "
        f"{describe(key)}, {pinned} is pinned: if the change is expected, run "
        f"`datarun host trust {name} --replace`"
    )


class UnknownHostKey(Exception):
    def __init__(self, name: str, key: paramiko.PKey):
        super().__init__(name)
        self.known_hosts_name = name
        self.key = key


class RefuseUnknown(paramiko.MissingHostKeyPolicy):
    """Like RejectPolicy, but carries the key so the message can name its fingerprint.

    It stands where Fabric puts its AutoAddPolicy: a key nobody pinned is never taken."""

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str,
                         key: paramiko.PKey) -> None:
        raise UnknownHostKey(hostname, key)


def known_hosts_files(workspace_known_hosts: Path | None) -> list[Path]:
    files = [Path(os.path.expanduser("~/.ssh/known_hosts"))]
    if workspace_known_hosts is not None:
        files.append(workspace_known_hosts)
    return [path for path in files if path.is_file()]


def known_keys(name: str, files: list[Path]) -> list[paramiko.PKey]:
    keys: list[paramiko.PKey] = []
    for path in files:
        found = paramiko.HostKeys(str(path)).lookup(name)
        keys += [key for key in (found.values() if found else []) if key not in keys]
    return keys


def other_pins(known: list[paramiko.PKey], key: paramiko.PKey) -> list[paramiko.PKey]:
    """The pinned keys that are not `key`: of any type, since a host that no longer shows
    its pinned type is as changed as one that shows another key of that type."""
    return [k for k in known if k != key]


@dataclass
class Pin:
    fingerprint: str
    replaced: list[str] = field(default_factory=list)  # the pins it replaced, "TYPE SHA256:..."


# What the host shows, asked for with the key types to prefer first (those already pinned).
Scan = Callable[[list[str]], paramiko.PKey]


def pin_key(name: str, known_hosts_name: str, known_hosts: Path, scan: Scan,
            replace: bool = False) -> Pin:
    """Pin the key `scan` reads from the host in the workspace's known_hosts.

    A key already pinned is kept (with `replace`, as the host's only pin). A different key
    known for the host is refused with both fingerprints, unless `replace`: then the
    host's other pins in the workspace's file go, and only the host's."""
    files = known_hosts_files(known_hosts)
    known = known_keys(known_hosts_name, files)
    key = scan([k.get_name() for k in known])
    others = other_pins(known, key)
    if others and not replace:
        raise HostError(
            f"host {name}: the host key of {known_hosts_name} is now {describe(key)}, "
            f"but {' and '.join(describe(k) for k in others)} is pinned for it: if the change is "
            f"expected, run `datarun host trust {name} --replace`")
    users = [path for path in files if path != known_hosts]
    in_user_file = [k for k in others if k in known_keys(known_hosts_name, users)]
    if in_user_file:
        raise HostError(
            f"host {name}: the old key {describe(in_user_file[0])} of "
            f"{known_hosts_name} is in {users[0]}, which datarun does not edit: remove it "
            f"with `ssh-keygen -R '{known_hosts_name}' -f {users[0]}`, then run "
            f"`datarun host trust {name}`")
    if others or key not in known:
        _write_pins(known_hosts, known_hosts_name, key, drop=bool(others))
    return Pin(fingerprint(key), [describe(k) for k in others])


def _names_host(hostname: str, entry_name: str) -> bool:
    if entry_name.startswith("|1|"):
        salt = entry_name.split("|")[2]
        return bool(paramiko.HostKeys.hash_host(hostname, salt) == entry_name)
    return entry_name == hostname


def _write_pins(path: Path, hostname: str, key: paramiko.PKey, drop: bool) -> None:
    """Add `hostname key` to the file; with `drop`, first take every other pin of that host
    out of it (a line naming other hosts too keeps them). Written whole, then renamed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = path.read_text().splitlines(keepends=True) if path.exists() else []
    kept = []
    for line in lines:
        fields = line.split()
        if not drop or not fields or line.lstrip().startswith(("#", "@")):
            kept.append(line)
            continue
        names = fields[0].split(",")
        remaining = [name for name in names if not _names_host(hostname, name)]
        if len(remaining) == len(names):
            kept.append(line)
        elif remaining:
            kept.append(" ".join([",".join(remaining), *fields[1:]]) + "\n")
    if kept and not kept[-1].endswith("\n"):
        kept[-1] += "\n"
    kept.append(f"{hostname} {key.get_name()} {key.get_base64()}\n")
    fd, tmp = tempfile.mkstemp(prefix=".known_hosts.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.writelines(kept)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
