"""WORKDIR is its owner's alone (0700) on every host: another user of a shared host reads
none of the submissions, data or results in it.

The attack: another local user (uid 65534) reads a task's submission in WORKDIR. It works
on a folder made 0755 (what `mkdir -p` under the usual umask gave, the negative control),
and fails once datarun has made or tightened the folder. A shared folder (sticky bit) or
one that belongs to someone else is refused, not taken over.
"""

import os
import shlex
import stat
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest
from harness_helpers import DATA_IRIS, LOGISTIC
from sshd import needs_root, pin
from test_ssh_executor import datasets, make_bundle, stop_remote_runner  # noqa: F401

from datarun.errors import HostError
from datarun.executors.ssh import SSHExecutor
from datarun.remote.common import HarnessError, Layout

NOBODY = 65534


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def read_as_another_user(path) -> subprocess.CompletedProcess:
    return subprocess.run(["cat", str(path)], user=NOBODY, group=NOBODY, extra_groups=[],
                          capture_output=True, text=True)


def test_the_harness_makes_workdir_0700_and_tightens_a_looser_one(tmp_path):
    old = os.umask(0)
    try:
        fresh = Layout(tmp_path / "a" / "wd").make()
        assert mode(fresh.root) == 0o700
        loose = tmp_path / "loose"
        loose.mkdir(mode=0o755)
        Layout(loose).make()
        assert mode(loose) == 0o700
    finally:
        os.umask(old)


def test_a_shared_or_foreign_or_odd_workdir_is_refused(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    with pytest.raises(HarnessError) as error:
        Layout(shared).make()
    assert str(error.value) == (f"workdir {shared} is a shared folder (sticky bit, like /tmp): "
                                "give datarun a folder of its own inside it")
    assert mode(shared) == 0o1777  # not taken over
    (tmp_path / "file").write_text("")
    with pytest.raises(HarnessError, match=r"^workdir \S+/file is not a folder: give datarun a "
                       r"folder of its own$"):
        Layout(tmp_path / "file").make()


@needs_root
def test_a_workdir_of_another_user_is_refused(tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir(mode=0o755)
    os.chown(foreign, NOBODY, NOBODY)
    with pytest.raises(HarnessError) as error:
        Layout(foreign).make()
    assert str(error.value) == (f"workdir {foreign} belongs to uid {NOBODY}, not to this user "
                                "(uid 0): give datarun a folder of its own")
    assert mode(foreign) == 0o755


@needs_root
def test_the_local_hosts_workdir_is_0700(workspace):
    from datarun.executors.hosts import load_hosts
    from datarun.executors.local import LocalExecutor

    executor = LocalExecutor(workspace, load_hosts(workspace.hosts_file)["local"])
    assert mode(executor.workdir) == 0o700


# --- on an SSH host -------------------------------------------------------------------


@pytest.fixture
def shared_host(workspace, sshd_a):
    """An SSH host with a workdir of the test's own in the login user's home (0755)."""
    pin(workspace, sshd_a)
    workdir = f"~/wd-{uuid.uuid4().hex[:8]}"
    executor = SSHExecutor(workspace, sshd_a.host("node", workdir=workdir))
    yield executor
    executor.close()
    stop_remote_runner(sshd_a, workdir, workspace.state_dir / "known_hosts")


@pytest.mark.ssh
@needs_root
def test_another_user_of_the_host_reads_nothing_in_workdir(shared_host, datasets, tmp_path):  # noqa: F811
    data, meta = datasets
    root = Path(shared_host.workdir)  # the host is this machine: its paths are ours
    # An older datarun left a 0755 workdir with a task in it: another user reads the code.
    old = root / "tasks" / "t0-a1" / "submission" / "estimator.py"
    shared_host.conn.run(shlex.join(["sh", "-c", f"umask 022 && mkdir -p {shlex.quote(str(old.parent))}"
                                     f" && echo secret-model > {shlex.quote(str(old))}"]))
    assert mode(root) == 0o755
    attack = read_as_another_user(old)
    assert attack.returncode == 0 and attack.stdout == "secret-model\n"  # the negative control

    shared_host.prepare({DATA_IRIS: data / DATA_IRIS})
    shared_host.launch([make_bundle(tmp_path / "b", "t1-a1", LOGISTIC, meta[DATA_IRIS], DATA_IRIS)])
    assert mode(root) == 0o700
    for path in (old, shared_host.layout.task("t1-a1") / "submission" / "estimator.py",
                 root / "data" / DATA_IRIS / "y_train.npy"):
        assert path.exists()
        attack = read_as_another_user(path)
        assert attack.returncode != 0 and "Permission denied" in attack.stderr


@pytest.mark.ssh
def test_a_fresh_workdir_over_ssh_is_made_0700(shared_host, datasets):  # noqa: F811
    data, _ = datasets
    shared_host.prepare({DATA_IRIS: data / DATA_IRIS})
    listing = shared_host.conn.run(shlex.join(["stat", "-c", "%a", shared_host.workdir]))
    assert listing.stdout.strip() == "700"


@pytest.mark.ssh
def test_a_shared_workdir_on_a_host_is_refused_in_one_line(workspace, sshd_a, datasets):  # noqa: F811
    data, _ = datasets
    pin(workspace, sshd_a)
    shared = Path(tempfile.mkdtemp(prefix="datarun-shared-"))
    shared.chmod(0o1777)
    executor = SSHExecutor(workspace, sshd_a.host("node", workdir=str(shared)))
    try:
        with pytest.raises(HostError) as error:
            executor.prepare({DATA_IRIS: data / DATA_IRIS})
        assert str(error.value) == (
            f"host node: harness acceptdata failed: workdir {shared} is a shared folder (sticky bit, "
            "like /tmp): give datarun a folder of its own inside it")
    finally:
        executor.close()
        subprocess.run(["rm", "-rf", str(shared)], check=False)
