"""Sending a big data set to one host through OpenSSH's own `ssh` client.

paramiko frames, encrypts and checks every SSH packet in Python; even with a process of
its own per host (`datarun.executors.shipsend`) that costs about 1.5x what OpenSSH's C
client costs for the same bytes. When the organiser's machine has `ssh` on PATH, a data
set of at least `shipsend.PROCESS_FROM` bytes is sent to each host by an `ssh` process
of its own, with the rules of the paramiko path:

- host keys: a temporary known_hosts holding exactly the keys the workspace (and
  ~/.ssh/known_hosts, as for the paramiko path) pins for the host, StrictHostKeyChecking
  yes, no global known_hosts, no key learnt or updated; no ssh_config read (`-F none`):
  the host's user, port and identity are the ones datarun resolved (`sshtarget.Target`);
- no agent or X11 forwarding, no port forwarding, no control master, BatchMode (no
  prompt), an explicit identity the only key offered, as the paramiko path does;
- timeouts: ConnectTimeout, ServerAliveInterval, and the transfer's own time limit, after
  which the process is killed;
- resume: each file is appended to from the size already on the host (`cat >>`, fed from
  that offset here); a remote file longer than the local one is started over;
- the harness checks the data set's content hash on arrival, as for any upload.

ProxyJump hops are each an `ssh -W` of the same kind (ProxyCommand), with the keys
pinned for each hop. A host this path cannot reach as the paramiko path would (no key
pinned for it or a hop, no `ssh` binary), or a data set of more than MAX_FILES files (each file
is a connection of its own), is sent over paramiko; `unusable` says why, and the
log says which path each data set took.
"""

from __future__ import annotations

import math
import posixpath
import shlex
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from datarun.errors import HostError
from datarun.executors.hostkeys import known_hosts_files, known_keys
from datarun.executors.sshconnect import load_identity
from datarun.executors.sshtarget import Target

SSH_BINARY = "ssh"
ALIVE_SECONDS = 15
ALIVE_COUNT = 3
# AES-GCM first, as the paramiko path asks (AES-NI makes it the cheapest per byte here),
# then OpenSSH's own default ciphers: a server that offers only those is still reached.
CIPHERS = "aes128-gcm@openssh.com,aes256-gcm@openssh.com,chacha20-poly1305@openssh.com,aes128-ctr,aes192-ctr,aes256-ctr"
# "yes" always; a test turns it off to show that its refused connection is this setting's doing.
STRICT_HOST_KEY_CHECKING = "yes"
# Each file the host lacks is one `ssh` connection (about 0.1 s of handshake on loopback):
# a data set of more files than this goes over paramiko's single connection instead.
MAX_FILES = 64

# Makes the folders (the count of them, then each) and prints the size on the host of each
# file named after them (0 when it is not there yet).
SIZES_SCRIPT = ('n=$1; shift; while [ "$n" -gt 0 ]; do mkdir -p -m 700 "$1" || exit 1; shift; '
                'n=$((n - 1)); done; for f; do if [ -f "$f" ]; then wc -c < "$f"; else echo 0; fi; done')


def ssh_binary() -> str | None:
    return shutil.which(SSH_BINARY)


def unusable(target: Target, known_hosts: Path | None, files: int = 1) -> str | None:
    """Why `ssh` cannot send `files` files to `target` as the paramiko path would (or not
    as fast); None when it can."""
    if files > MAX_FILES:
        return f"{files} files, more than {MAX_FILES} (one ssh connection each)"
    if ssh_binary() is None:
        return f"no `{SSH_BINARY}` on PATH"
    for hop in [*target.hops(), target]:
        if not known_keys(hop.known_hosts_name, known_hosts_files(known_hosts)):
            return f"no host key pinned for {hop.known_hosts_name}"
    return None


def _hop_arguments(target: Target, trusted: Path) -> list[str]:
    """`ssh`'s arguments before the destination for one hop: its user, port, identity,
    the module's rules, and the ProxyCommand through its jump host (an `ssh -W` of the
    same kind), if it has one."""
    # The first identity that exists, as the paramiko path offers (load_identity says why
    # one cannot be used, in the paramiko path's words).
    identity = next((path for path in target.identities if load_identity(target, path) is not None), None)
    options = {
        "BatchMode": "yes",
        "StrictHostKeyChecking": STRICT_HOST_KEY_CHECKING,
        "UserKnownHostsFile": str(trusted),
        "GlobalKnownHostsFile": "/dev/null",
        "CheckHostIP": "no",
        "UpdateHostKeys": "no",
        "ForwardAgent": "no",
        "ForwardX11": "no",
        "ClearAllForwardings": "yes",
        "ControlMaster": "no",
        "ControlPath": "none",
        "PermitLocalCommand": "no",
        "Compression": "no",
        "ConnectTimeout": str(max(1, math.ceil(target.connect_timeout))),
        "ServerAliveInterval": str(ALIVE_SECONDS),
        "ServerAliveCountMax": str(ALIVE_COUNT),
        "Ciphers": CIPHERS,
        "LogLevel": "ERROR",
    }
    if identity is not None:
        options |= {"IdentityFile": identity, "IdentitiesOnly": "yes", "IdentityAgent": "none"}
    if target.jump is not None:
        jump = target.jump
        where = f"[{target.hostname}]:{target.port}" if ":" in target.hostname else f"{target.hostname}:{target.port}"
        through = _hop_arguments(jump, trusted) + ["-W", where, "--", jump.hostname]
        # ssh expands %-tokens in a ProxyCommand: none is meant, so every % is doubled.
        options["ProxyCommand"] = shlex.join(through).replace("%", "%%")
    command = [ssh_binary() or SSH_BINARY, "-F", "none", "-p", str(target.port), "-l", target.user]
    for key, value in options.items():
        command += ["-o", f"{key}={value}"]
    return command


def ssh_command(target: Target, known_hosts: Path | None, trusted: Path) -> list[str]:
    """The `ssh` command line (without the remote command) to `target`, through its jump
    hosts if any, after writing to `trusted` the keys pinned for each of them."""
    files = known_hosts_files(known_hosts)
    trusted.write_text("".join(f"{hop.known_hosts_name} {key.get_name()} {key.get_base64()}\n"
                               for hop in [*target.hops(), target]
                               for key in known_keys(hop.known_hosts_name, files)))
    return _hop_arguments(target, trusted) + ["-o", "RequestTTY=no", "--", target.hostname]


def _error(target: Target, status: int, stderr: str, remote: str) -> HostError:
    """One line for a failed `ssh` (255: ssh's own failure; else the remote command's)."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    last = lines[-1] if lines else f"exit status {status}"
    name = target.name
    if status == 255 and any("Host key verification failed" in line or "HOST IDENTIFICATION HAS CHANGED" in line
                             for line in lines):
        # ssh names the host whose key it refused ("Host key for NAME has changed", "No
        # TYPE host key is known for NAME"): the host itself or one of its jump hosts.
        said = " ".join(line for line in lines if "host key" in line.lower())
        hop = next((h for h in [*target.hops(), target] if f" {h.known_hosts_name} " in f" {said} "), target)
        return HostError(
            f"host {name}: the host key of {hop.known_hosts_name}{' (its jump host)' if hop is not target else ''} "
            "is not the one pinned for it (ssh: Host key verification failed); nothing was sent: "
            f"if the change is expected, run `datarun host trust {name} --replace`")
    if status == 255 and any("Permission denied" in line for line in lines):
        key = ", ".join(target.identities) or "agent and default keys"
        return HostError(
            f"host {name}: authentication refused for {target.where} (key: {key}): add the public "
            "key to that user's ~/.ssh/authorized_keys, or fix `user` / `identity` in hosts.toml")
    if status == 255:
        return HostError(f"host {name}: ssh to {target.hostname}:{target.port} failed: {last}")
    return HostError(f"host {name}: upload to {remote} failed: {last}")


def _run(command: list[str], target: Target, remote: str, deadline: float, timeout: float,
         stdin: int | object = subprocess.DEVNULL) -> str:
    """Run `command` until `deadline` (then kill it); its output, or a HostError."""
    child = subprocess.Popen(command, stdin=stdin, stdout=subprocess.PIPE,  # type: ignore[arg-type]
                             stderr=subprocess.PIPE, text=True)
    try:
        out, err = child.communicate(timeout=max(deadline - time.monotonic(), 0.1))
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()
        raise HostError(f"host {target.name}: an upload timed out after {timeout:g}s (the host hangs "
                        "or is overloaded)") from None
    if child.returncode != 0:
        raise _error(target, child.returncode, err, remote)
    return out


def send_by_ssh(target: Target, known_hosts: Path | None, kind: str, local: Path, remote: str,
                timeout: float) -> tuple[int, int]:
    """Send a data set with `ssh`: `kind` "files" (the folder `local` into the folder
    `remote`) or "archive" (the file `local` to the file `remote`), each file appended to
    what an earlier upload left of it, within `timeout`; (bytes already there, sent)."""
    deadline = time.monotonic() + timeout
    if kind == "files":
        pairs = [(path, posixpath.join(remote, path.relative_to(local).as_posix()))
                 for path in sorted(p for p in Path(local).rglob("*") if p.is_file())]
        folders = sorted({remote} | {posixpath.dirname(where) for _, where in pairs})
    else:
        pairs, folders = [(Path(local), remote)], []
    with tempfile.TemporaryDirectory(prefix="datarun-ssh-") as tmp:
        base = ssh_command(target, known_hosts, Path(tmp) / "known_hosts")
        script = shlex.join(["sh", "-c", SIZES_SCRIPT, "sh", str(len(folders)), *folders,
                             *(where for _, where in pairs)])
        sizes = [int(line) for line in _run(base + [script], target, remote, deadline, timeout).split()]
        kept = sent = 0
        for (path, where), have in zip(pairs, sizes, strict=True):
            size = path.stat().st_size
            if have > size:  # not a part of this file: start it over
                have = 0
            kept += have
            if have == size:
                continue
            append = shlex.join(["sh", "-c", f'cat {">>" if have else ">"} "$1"', "sh", where])
            with open(path, "rb") as source:
                source.seek(have)
                _run(base + [append], target, where, deadline, timeout, stdin=source)
            sent += size - have
    return kept, sent
