"""SSH hosts on loopback for the benches (bench/ssh_overhead.py, bench/makespan.py, ...)."""

import contextlib
import json
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from common import Workspace

REPO = Path(__file__).resolve().parent.parent

# --- SSH hosts on loopback (bench/ssh_overhead.py, bench/makespan.py) ---------------------
#
# The SSH benches start real sshd on 127.0.0.1 with tests/sshd.py's `start_sshd`, logging
# in the unprivileged datarun-test user with the test Python, as the SSH tests do. Every
# host gets a workdir of its own (the servers share one machine and one user), and the
# runners datarun starts there are stopped by the PID they recorded.

TESTS = REPO / "tests"


def _sshd_module():
    if str(TESTS) not in sys.path:
        sys.path.insert(0, str(TESTS))
    import sshd

    return sshd


def ssh_setup_missing() -> str | None:
    """Why the SSH benches cannot run on this machine, or None when they can."""
    if os.geteuid() != 0:
        return ("needs root (an sshd that logs in the unprivileged datarun-test user): run it "
                "as root after `bash scripts/setup-test-env.sh`")
    sshd = _sshd_module()
    if not os.path.exists(sshd.SSHD):
        return f"no {sshd.SSHD}: run `bash scripts/setup-test-env.sh` as root"
    import pwd

    try:
        pwd.getpwnam(sshd.TEST_USER)
    except KeyError:
        return f"no user {sshd.TEST_USER}: run `bash scripts/setup-test-env.sh` as root"
    if not os.access(sshd.TEST_PYTHON, os.X_OK):
        return f"no {sshd.TEST_PYTHON}: run `bash scripts/setup-test-env.sh` as root"
    return None


@contextlib.contextmanager
def ssh_servers(count: int) -> Iterator[list]:
    """`count` running sshd on loopback ports, stopped (by PID) on the way out."""
    start_sshd = _sshd_module().start_sshd
    servers = []
    try:
        for _ in range(count):
            servers.append(start_sshd())
        yield servers
    finally:
        for server in servers:
            server.stop()


class RemoteWorkdir:
    """A host's workdir, as a path on this machine (the servers are loopback ones)."""

    def __init__(self, server, workdir: str):
        import pwd

        self.server = server
        self.workdir = workdir  # as written in hosts.toml: "~/..."
        self.path = Path(pwd.getpwnam(server.user).pw_dir) / workdir.removeprefix("~/")

    def stop_and_remove(self) -> None:
        from common import stop_runners_of

        stop_runners_of(self.path)
        shutil.rmtree(self.path, ignore_errors=True)


def use_ssh_hosts(workspace: "Workspace", servers: list, slots: int, threads: int = 1,
                  tag: str = "") -> list[RemoteWorkdir]:
    """Replace the workspace's hosts with one SSH host per server (no local host), pin
    their keys, and return their workdirs for `stop_and_remove`. `tag` keeps runs apart."""
    tag = tag or os.urandom(4).hex()
    lines, remotes = [], []
    for number, server in enumerate(servers, 1):
        remote = RemoteWorkdir(server, f"~/datarun-bench-{tag}-{number}")
        remotes.append(remote)
        lines += [
            f"[hosts.ssh{number}]", 'executor = "ssh"', 'address = "127.0.0.1"',
            f"port = {server.port}", f"user = {json.dumps(server.user)}",
            f"identity = {json.dumps(str(server.client_key))}",
            f"python = {json.dumps(server.python)}", f"workdir = {json.dumps(remote.workdir)}",
            f"slots = {slots}", f"threads = {threads}", 'connect_timeout = "10s"',
            'command_timeout = "60s"', "",
        ]
    (workspace.root / "hosts.toml").write_text("\n".join(lines))
    with open(workspace.root / ".datarun" / "known_hosts", "a") as known:
        for server in servers:
            known.write(server.known_hosts_line())
    return remotes


@contextlib.contextmanager
def ssh_traffic() -> Iterator[list[tuple[str, str, int]]]:
    """What this process sends over SSH, as (host, kind, bytes): kind is `commands` for
    command lines, else the upload's kind from its name (harness, data, bundles)."""
    from datarun.executors.sshconn import SSHConnection

    seen: list[tuple[str, str, int]] = []
    real_put, real_run = SSHConnection.put, SSHConnection.run

    def put(self, local, remote):
        size = real_put(self, local, remote)
        seen.append((self.target.name, Path(remote).name.lstrip(".").split("-", 1)[0], size))
        return size

    def run_command(self, command, timeout=None):
        seen.append((self.target.name, "commands", len(command)))
        return real_run(self, command, timeout)

    from datarun.executors.ssh import SSHExecutor

    real_ship = SSHExecutor._ship_data

    def ship_data(self, digest, folder, free):  # data sets travel compressed, resumable
        sent = self.conn.stats.bytes_sent
        real_ship(self, digest, folder, free)
        seen.append((self.host.name, "data", self.conn.stats.bytes_sent - sent))

    SSHConnection.put, SSHConnection.run = put, run_command
    SSHExecutor._ship_data = ship_data
    try:
        yield seen
    finally:
        SSHConnection.put, SSHConnection.run = real_put, real_run
        SSHExecutor._ship_data = real_ship


def train_in_process(root: Path) -> dict:
    """`datarun train` on a workspace, in this process (so `ssh_traffic` sees its connections)."""
    from datarun.dispatch.train import train
    from datarun.store.db import open_db
    from datarun.store.workspace import find_workspace

    workspace = find_workspace(root)
    return train(workspace, open_db(workspace))
