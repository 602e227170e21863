"""Host keys: checked against known_hosts, never added on the quiet, pinned on request.

Keys are read from `~/.ssh/known_hosts` and the workspace's `.datarun/known_hosts`. An
unknown key is refused with its fingerprint and the command that pins it; a changed key
is refused with how to drop the old one. Pinning writes only the workspace's file and
never replaces a key already there.
"""

import base64
import hashlib
import os
from pathlib import Path

import paramiko

from datarun.errors import HostError
from datarun.executors.sshtarget import Target


def fingerprint(key: paramiko.PKey) -> str:
    """The SHA256 fingerprint OpenSSH prints: `SHA256:` and unpadded base64."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def changed_key_message(target: Target, key: paramiko.PKey, files: list[Path]) -> str:
    return (
        f"host {target.name}: the host key of {target.known_hosts_name} has CHANGED (now "
        f"{key.get_name()} {fingerprint(key)}): if the change is expected, remove the old key "
        f"with `ssh-keygen -R '{target.known_hosts_name}' -f FILE` (FILE: "
        f"{' or '.join(str(p) for p in files)}), then run `datarun host trust {target.name}`"
    )


class UnknownHostKey(Exception):
    def __init__(self, name: str, key: paramiko.PKey):
        super().__init__(name)
        self.known_hosts_name = name
        self.key = key


class RefuseUnknown(paramiko.MissingHostKeyPolicy):
    """Like RejectPolicy, but carries the key so the message can name its fingerprint."""

    def missing_host_key(self, client, hostname, key):
        raise UnknownHostKey(hostname, key)


def known_hosts_files(workspace_known_hosts: Path | None) -> list[Path]:
    files = [Path(os.path.expanduser("~/.ssh/known_hosts"))]
    if workspace_known_hosts is not None:
        files.append(workspace_known_hosts)
    return [path for path in files if path.is_file()]


def scan_host_key(target: Target, known_hosts: Path | None = None,
                  ssh_config: paramiko.SSHConfig | None = None) -> paramiko.PKey:
    """The key the server proves it holds (the key exchange signs with it); no login."""
    from datarun.executors.sshconn import SSHConnection

    conn = SSHConnection(target, known_hosts, ssh_config)
    sock = conn._socket()
    transport = paramiko.Transport(sock)
    transport.banner_timeout = target.connect_timeout
    try:
        transport.start_client(timeout=target.connect_timeout)
        return transport.get_remote_server_key()
    except (paramiko.SSHException, EOFError, OSError) as error:
        detail = str(error) or type(error).__name__
        if detail == "No existing session":
            detail = "no SSH banner"  # paramiko's words for a port that stays silent
        raise HostError(
            f"host {target.name}: no SSH server answered at {target.hostname}:{target.port} "
            f"within {target.connect_timeout:g}s ({detail}): wrong port, or the host hangs"
        ) from None
    finally:
        transport.close()
        conn.close()


def known_keys(name: str, files: list[Path]) -> list[paramiko.PKey]:
    keys = paramiko.HostKeys()
    for path in files:
        keys.load(str(path))
    entry = keys.lookup(name)
    return list(entry.values()) if entry else []


def pin_host_key(target: Target, known_hosts: Path, ssh_config: paramiko.SSHConfig | None = None) -> str:
    """Write the host's key to the workspace's known_hosts; return its fingerprint.

    A key already pinned is kept; a different key already known is refused (the same
    message as a changed key at connect time), so `trust` never overwrites a pin.
    """
    key = scan_host_key(target, known_hosts, ssh_config)
    files = known_hosts_files(known_hosts)
    known = known_keys(target.known_hosts_name, files)
    if any(k == key for k in known):
        return fingerprint(key)
    if any(k.get_name() == key.get_name() for k in known):
        raise HostError(changed_key_message(target, key, files))
    known_hosts.parent.mkdir(parents=True, exist_ok=True)
    with open(known_hosts, "a") as f:
        f.write(f"{target.known_hosts_name} {key.get_name()} {key.get_base64()}\n")
    return fingerprint(key)
