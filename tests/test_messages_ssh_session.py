"""Error messages of the harness session on an SSH host that no other test triggered.

The dispatcher talks to a host through one long-lived `python -m datarun_remote session`
per connection, a JSON line each way. When what answers is not the harness (a `python`
in hosts.toml that is something else), or the harness refuses the request, the sync ends
in one HostError line naming the host.
"""

import os
import re
import shutil
import tempfile
import uuid
from pathlib import Path

import pytest
from sshd import pin
from test_ssh_executor import stop_remote_runner

from datarun.errors import HostError
from datarun.executors.ssh import SSHExecutor
from datarun.executors.sshsession import MAX_ANSWER

pytestmark = pytest.mark.ssh


@pytest.fixture
def fake_pythons():
    """A folder the test user can read, for scripts that stand in for the host's Python."""
    folder = Path(tempfile.mkdtemp(prefix="datarun-fake-python-"))
    folder.chmod(0o755)

    def make(name: str, body: str) -> str:
        path = folder / name
        path.write_text(f"#!/bin/sh\n{body}")
        path.chmod(0o755)
        return str(path)

    yield make
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def open_node(workspace, sshd_a):
    """open_node(python) -> an executor on server a, in a workdir of the test's own."""
    pin(workspace, sshd_a)
    workdir = f"~/wd-{uuid.uuid4().hex[:8]}"
    executors = []

    def make(python: str) -> SSHExecutor:
        executor = SSHExecutor(workspace, sshd_a.host("node", python=python, workdir=workdir))
        executors.append(executor)
        return executor

    yield make
    for executor in executors:
        executor.close()
    stop_remote_runner(sshd_a, workdir, workspace.state_dir / "known_hosts")


def sync(executor: SSHExecutor, tmp_path) -> None:
    executor.sync([], [], [], tmp_path / "results")


def test_an_answer_that_is_not_json_is_named(open_node, sshd_a, tmp_path):
    # `python = "/bin/echo"` echoes its arguments instead of serving the session.
    node = open_node("/bin/echo")
    with pytest.raises(HostError) as raised:
        sync(node, tmp_path)
    assert str(raised.value) == (f"host node: the harness session answered no JSON: "
                                 f"'-m datarun_remote session --space {node.space} {node.workdir}'")


def test_an_answer_that_is_json_but_not_an_object_is_named(open_node, fake_pythons, tmp_path):
    node = open_node(fake_pythons("list", "read line\necho '[1, 2]'\n"))
    with pytest.raises(HostError) as raised:
        sync(node, tmp_path)
    assert str(raised.value) == "host node: the harness session answered list"


def test_an_endless_answer_is_cut_off(open_node, fake_pythons, tmp_path):
    node = open_node(fake_pythons(
        "flood", f"read line\nhead -c {MAX_ANSWER + 1_000_000} /dev/zero | tr '\\0' x\n"))
    with pytest.raises(HostError) as raised:
        sync(node, tmp_path)
    assert str(raised.value) == f"host node: the harness session answered more than {MAX_ANSWER} bytes"


def test_a_sync_the_harness_refuses_is_named_with_its_reason(open_node, sshd_a, tmp_path):
    # The real harness: the results archive cannot be written where the sync asks for it.
    node = open_node(sshd_a.python)
    node.prepare({})
    pack = f"{node.layout.space}/.sync-results-node.tar"
    assert node.conn.run(f"mkdir {pack}").status == 0
    with pytest.raises(HostError) as raised:
        sync(node, tmp_path)
    # The harness writes the archive beside its place, then renames it (a PID in the name).
    assert re.fullmatch(rf"host node: harness sync failed: IsADirectoryError: \[Errno 21\] Is a "
                        rf"directory: '{re.escape(str(node.layout.space))}/\.\.sync-results-node\.tar\.\d+\.tmp' -> "
                        rf"'{re.escape(pack)}'", str(raised.value)), str(raised.value)
    # The session survives a refused request: once the path is free, the next sync works.
    assert node.conn.run(f"rmdir {pack}").status == 0
    sync(node, tmp_path)
    assert not os.path.exists(tmp_path / "results")  # nothing finished, nothing fetched
