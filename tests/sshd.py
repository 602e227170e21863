"""Real OpenSSH servers on 127.0.0.1 for the SSH tests.

`start_sshd()` starts `sshd -D -e -f CONFIG` on a free loopback port with its own host
key and one authorized client key, checks the config with `sshd -t` first, waits for the
port by polling it, and is stopped by PID. As root the server logs in the unprivileged
`datarun-test` user (made by scripts/setup-test-env.sh), whose Python is
/opt/datarun-test-python; without root an sshd can only log in the user running it.

The servers most SSH tests share, `sshd_a` and `sshd_b`, are session fixtures of
tests/conftest.py: one of each serves the whole run. A module that stops, hangs or
reconfigures its server takes one of its own (`sshd_fresh` per test, or `start_sshd()`
in a fixture of the module); this module keeps the helpers.
"""

import getpass
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
TEST_USER = "datarun-test"
TEST_PYTHON = "/opt/datarun-test-python/bin/python"
IS_ROOT = os.geteuid() == 0

needs_root = pytest.mark.skipif(
    not IS_ROOT, reason="needs root (an sshd that logs in another user, mounts); CI runs as root"
)


def _missing() -> str | None:
    if not os.path.exists(SSHD):
        return f"no {SSHD}: run scripts/setup-test-env.sh as root (installs openssh-server)"
    if IS_ROOT:
        try:
            import pwd

            pwd.getpwnam(TEST_USER)
        except KeyError:
            return f"no user {TEST_USER}: run scripts/setup-test-env.sh as root"
        if not os.access(TEST_PYTHON, os.X_OK):
            return f"no {TEST_PYTHON}: run scripts/setup-test-env.sh as root"
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"sshd exited with {process.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.01)  # a poll interval, not a guess at how long sshd needs
    raise RuntimeError(f"sshd did not listen on port {port} within {timeout}s")


def keygen(path: Path, passphrase: str = "", key_type: str = "ed25519") -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", key_type, "-N", passphrase, "-C", "datarun-test", "-f", str(path)],
        check=True,
    )


@dataclass
class Sshd:
    folder: Path
    port: int
    user: str
    python: str
    process: subprocess.Popen | None = None
    extra: dict = field(default_factory=dict)
    key_type: str = "ed25519"

    @property
    def host_key_pub(self) -> str:
        return (self.folder / f"host_{self.key_type}.pub").read_text().split()[1]

    @property
    def host_key_name(self) -> str:
        return (self.folder / f"host_{self.key_type}.pub").read_text().split()[0]

    @property
    def client_key(self) -> Path:
        return self.folder / "client_ed25519"

    def known_hosts_line(self) -> str:
        return f"[127.0.0.1]:{self.port} {self.host_key_name} {self.host_key_pub}\n"

    def host_table(self, **changes) -> dict:
        """Settings for hosts.toml / Host(...) that reach this server."""
        table = {
            "executor": "ssh",
            "address": "127.0.0.1",
            "port": self.port,
            "user": self.user,
            "identity": str(self.client_key),
            "python": self.python,
            "workdir": "~/.datarun-host",
            "slots": 2,
            "threads": 1,
            "connect_timeout": "5s",
            "command_timeout": "20s",
        }
        table.update(changes)
        # Timeouts may be given in seconds here; hosts.toml takes them with their unit.
        for key in ("connect_timeout", "command_timeout"):
            if isinstance(table[key], int | float):
                table[key] = f"{table[key]:g}s"
        return table

    def host(self, name: str = "node", **changes):
        from datarun.executors.hosts import parse_host

        return parse_host(name, self.host_table(**changes))

    def session_processes(self) -> list[psutil.Process]:
        """The per-connection sshd processes (and what they run): stopping them hangs a host."""
        try:
            return psutil.Process(self.process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def stop(self) -> None:
        if self.process is None:
            return
        processes = [*self.session_processes(), psutil.Process(self.process.pid)]
        for process in processes:
            try:
                process.send_signal(signal.SIGCONT)
                process.terminate()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(processes, timeout=5)
        self.process.wait(timeout=5)
        self.process = None
        shutil.rmtree(self.folder, ignore_errors=True)


def start_sshd(host_key: Path | None = None, port: int | None = None,
               key_type: str = "ed25519", client_key: Path | None = None) -> Sshd:
    """A running sshd on a free loopback port. `host_key` reuses a key (a restart); `port`,
    a new `key_type` and the old `client_key` make a host whose key changed."""
    # mkdtemp makes a 0700 folder; sshd reads authorized_keys as the target user.
    folder = Path(tempfile.mkdtemp(prefix="datarun-sshd-"))
    folder.chmod(0o755)
    host_file = folder / f"host_{key_type}"
    if host_key is None:
        keygen(host_file, key_type=key_type)
    else:
        shutil.copy(host_key, host_file)
        shutil.copy(f"{host_key}.pub", f"{host_file}.pub")
        host_file.chmod(0o600)
    if client_key is None:
        keygen(folder / "client_ed25519")
    else:
        shutil.copy(client_key, folder / "client_ed25519")
        shutil.copy(f"{client_key}.pub", folder / "client_ed25519.pub")
        (folder / "client_ed25519").chmod(0o600)
    authorized = folder / "authorized_keys"
    shutil.copy(folder / "client_ed25519.pub", authorized)
    authorized.chmod(0o644)
    user = TEST_USER if IS_ROOT else getpass.getuser()
    python = TEST_PYTHON if IS_ROOT else (
        TEST_PYTHON if os.access(TEST_PYTHON, os.X_OK) else shutil.which("python3") or "python3"
    )
    port = port or free_port()
    config = folder / "sshd_config"
    config.write_text(
        f"ListenAddress 127.0.0.1\n"
        f"Port {port}\n"
        f"HostKey {host_file}\n"
        f"AuthorizedKeysFile {authorized}\n"
        "PidFile none\n"
        "UsePAM no\n"
        "PasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\n"
        "StrictModes no\n"
        "PermitRootLogin no\n"
        f"AllowUsers {user}\n"
        "Subsystem sftp internal-sftp\n"
        "LogLevel ERROR\n"
    )
    if IS_ROOT:
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
    check = subprocess.run([SSHD, "-t", "-f", str(config)], capture_output=True, text=True)
    if check.returncode != 0:
        raise RuntimeError(f"sshd -t refused the test config: {check.stderr.strip()}")
    log = open(folder / "sshd.log", "wb")
    process = subprocess.Popen(
        [SSHD, "-D", "-e", "-f", str(config)], stdout=log, stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    log.close()
    server = Sshd(folder=folder, port=port, user=user, python=python, process=process,
                  key_type=key_type)
    try:
        wait_for_port(port, process)
    except RuntimeError:
        server.stop()
        raise
    return server


def serve_sshd():
    """A fixture's body: skip when the suite's set-up is missing, else a server stopped at the end."""
    reason = _missing()
    if reason:
        pytest.skip(reason)
    server = start_sshd()
    yield server
    server.stop()


def runner_pids(conn, workdir: str) -> set[int]:
    """The PIDs the runners of a host workdir recorded: the workdir's own runner.json (the
    harness driven without a workspace) and each workspace folder's."""
    import json
    import shlex

    script = 'for f in "$1"/runner.json "$1"/workspaces/*/runner.json; do [ -f "$f" ] && cat "$f" && echo; done'
    out = conn.run(shlex.join(["sh", "-c", script, "sh", workdir])).stdout
    pids = set()
    for line in out.splitlines():
        try:
            pids.add(int(json.loads(line)["pid"]))
        except (ValueError, KeyError, TypeError):
            continue
    return pids


def pin(workspace, *servers: Sshd) -> None:
    """Pin the servers' host keys in the workspace's known_hosts, as `host trust` would."""
    path = workspace.state_dir / "known_hosts"
    with open(path, "a") as f:
        for server in servers:
            f.write(server.known_hosts_line())
