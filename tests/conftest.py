"""Shared fixtures: every test gets its own workspace and never sees the user's state; the
SSH tests share two real sshd on loopback for the whole run."""

import json
import os
from dataclasses import dataclass
from pathlib import Path

import pytest
from sshd import serve_sshd
from typer.testing import CliRunner

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"


@pytest.fixture(autouse=True)
def isolated_state(tmp_path_factory, monkeypatch):
    """Point DATARUN_HOME at a fresh (not yet initialised) folder and hide ~/.ssh/config.

    `datarun submit` does not start the local runner ahead of training here (tests that
    train start it through the dispatcher; test_warm_runner.py tests the warm start), so
    a test that only submits leaves no process behind."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("DATARUN_HOME", str(home / "ws"))
    monkeypatch.setenv("DATARUN_WARM_RUNNER", "0")
    monkeypatch.setenv("HOME", str(home))
    yield


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    """An initialised workspace, with DATARUN_HOME pointing at it."""
    from datarun.store.workspace import init_workspace

    ws = init_workspace(tmp_path / "ws")
    monkeypatch.setenv("DATARUN_HOME", str(ws.root))
    return ws


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str

    def json(self):
        return json.loads(self.stdout)


@pytest.fixture
def cli():
    """Run the datarun CLI in-process: cli("problem", "list", "--json") -> CliResult."""
    from datarun.cli import app

    runner = CliRunner()

    def run(*args: str, input: str | None = None) -> CliResult:
        result = runner.invoke(app, [str(a) for a in args], input=input, env=dict(os.environ))
        if result.exception and not isinstance(result.exception, SystemExit):
            raise result.exception
        return CliResult(result.exit_code, result.stdout, result.stderr)

    return run


@pytest.fixture
def runners():
    """Pids of harness runners a test started by hand; each is stopped at the end."""
    from harness_helpers import stop_runner

    pids = []
    yield pids
    for pid in pids:
        stop_runner(pid)


def stop_runners(workspace) -> None:
    """Stop the harness runners this workspace's local hosts started (by their recorded PID)."""
    from datarun.demo import stop_local_runner

    stop_local_runner(workspace)


# Defined here, once, so that one server of each serves every module of a run: a module that
# imported them would get fixture definitions of its own, and so servers of its own.
@pytest.fixture(scope="session")
def sshd_a():
    """A real sshd on loopback shared by the whole run: stop, hang or reconfigure it never."""
    yield from serve_sshd()


@pytest.fixture(scope="session")
def sshd_b():
    """A second host, with a host key of its own, shared like `sshd_a`."""
    yield from serve_sshd()


@pytest.fixture
def shared(tmp_path, sshd_a, cli):
    """One account and workdir of `sshd_a` that any number of workspaces register as `node`
    (tests/sharedhost.py; the tests of a shared host account)."""
    from sharedhost import SharedHost

    host = SharedHost(sshd_a, cli, tmp_path)
    yield host
    host.close()


@pytest.fixture
def sshd_fresh():
    """A server of the test's own, for tests that stop, hang or restart it."""
    yield from serve_sshd()
