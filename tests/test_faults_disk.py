"""A full disk is the host's fault, said in one line, at once, and nothing stored is lost.

Each case puts one folder datarun writes to (the workspace's database and blob store, the
local host's working folder) on a small tmpfs of its own, fills it with a file, and runs
the real command: one `error:` line naming the folder, no traceback, no partial file left;
once the filler is removed, the same command finishes the work with nothing lost or
doubled, and no task charged to its team.
"""

import os
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import EXAMPLES, stop_runners

from datarun.errors import DiskFull
from datarun.store.blobs import BlobStore
from datarun.store.space import LOW_SPACE, free_bytes, low_space_warning

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")


def mount_tmpfs(folder: Path, size: str) -> Path:
    folder.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(folder)], check=True)
    return folder


def unmount(folder: Path) -> None:
    result = subprocess.run(["umount", str(folder)], capture_output=True)
    if result.returncode != 0:  # a process of the test still holds a file there: detach it
        subprocess.run(["umount", "-l", str(folder)], check=True)


@pytest.fixture
def disk(tmp_path):
    """A 24 MB tmpfs, unmounted at the end."""
    folder = mount_tmpfs(tmp_path / "disk", "24m")
    yield folder
    unmount(folder)


@pytest.fixture
def host_disk(tmp_path):
    """A second 24 MB tmpfs, for the local host's working folder."""
    folder = mount_tmpfs(tmp_path / "hostdisk", "24m")
    yield folder
    unmount(folder)


def fill(disk: Path, leave: int = 0) -> Path:
    """Take all of `disk`'s free space but `leave` bytes, with one file; remove it to free."""
    filler = disk / "filler"
    free = free_bytes(disk) or 0
    if free > leave:
        with open(filler, "ab") as handle:
            os.posix_fallocate(handle.fileno(), 0, free - leave)
    return filler


def one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr, stderr
    return lines[0]


def workspace_on(cli, root: Path, host_workdir: Path, monkeypatch) -> Path:
    ws = root / "ws"
    assert cli("init", ws).exit_code == 0
    monkeypatch.setenv("DATARUN_HOME", str(ws))
    (ws / "hosts.toml").write_text(
        f'[hosts.local]\nexecutor = "local"\nslots = 2\nworkdir = "{host_workdir}"\n')
    return ws


def task_table(ws: Path) -> list[tuple]:
    import sqlite3

    conn = sqlite3.connect(ws / ".datarun" / "datarun.db")
    try:
        return conn.execute("SELECT id, state, error_kind, lost FROM tasks ORDER BY id").fetchall()
    finally:
        conn.close()


# --- the blob store ----------------------------------------------------------------------

def test_a_blob_on_a_full_disk_is_refused_whole_with_the_space_it_needed(disk):
    store = BlobStore(disk / "blobs")
    store.put_bytes(b"small")  # the folder exists
    fill(disk, leave=8192)
    with pytest.raises(DiskFull) as caught:
        store.put_bytes(os.urandom(200_000))
    message = str(caught.value)
    assert message.startswith(f"no space left on the device of {disk / 'blobs'}"), message
    assert "200.0 kB needed" in message and "free some space there" in message
    assert not list((disk / "blobs").rglob(".tmp-*")), "a partial blob was left"


# --- submit, problem add: the workspace's disk ---------------------------------------------

def test_submit_on_a_full_workspace_disk_says_so_in_one_line_and_stores_nothing(cli, disk, tmp_path, monkeypatch):
    ws = workspace_on(cli, disk, tmp_path / "host", monkeypatch)
    assert cli("problem", "add", EXAMPLES / "iris").exit_code == 0
    filler = fill(disk)
    result = cli("submit", "iris", EXAMPLES / "iris" / "submissions" / "knn", "--team", "a")
    assert result.exit_code == 1
    line = one_error_line(result.stderr)
    assert line.startswith(f"error: no space left on the device of {ws / '.datarun'}"), line
    assert line.endswith("free some space there and run the command again")
    filler.unlink()
    assert not list((ws / ".datarun").rglob(".tmp-*"))
    assert cli("submission", "list", "--json").json()["submissions"] == []
    # Freed: the same command stores it.
    assert cli("submit", "iris", EXAMPLES / "iris" / "submissions" / "knn", "--team", "a").exit_code == 0


def test_problem_add_on_a_full_disk_leaves_no_half_data_set(cli, disk, tmp_path, monkeypatch):
    ws = workspace_on(cli, disk, tmp_path / "host", monkeypatch)
    kit = tmp_path / "kit"
    shutil.copytree(EXAMPLES / "iris", kit)
    frame = pd.read_csv(kit / "data" / "train.csv")
    rng = np.random.default_rng(0)
    big = frame.sample(40_000, replace=True, random_state=0)
    big[big.columns[:4]] += rng.normal(scale=0.01, size=(len(big), 4))
    big.to_csv(kit / "data" / "train.csv", index=False)
    filler = fill(disk, leave=600_000)
    result = cli("problem", "add", kit)
    assert result.exit_code == 1
    line = one_error_line(result.stderr)
    assert "no space left on the device of" in line and str(ws) in line, line
    filler.unlink()
    assert not list((ws / ".datarun").rglob(".tmp-*")), "a partial data set was left"
    assert cli("problem", "add", kit).exit_code == 0


# --- train: the workspace's disk, the host's disk, a task's predictions ----------------------

def test_train_on_a_full_workspace_disk_stops_at_once_and_loses_nothing(cli, disk, tmp_path, monkeypatch):
    ws = workspace_on(cli, disk, tmp_path / "host", monkeypatch)
    assert cli("problem", "add", EXAMPLES / "iris").exit_code == 0
    assert cli("submit", "iris", EXAMPLES / "iris" / "submissions" / "knn", "--team", "a").exit_code == 0
    filler = fill(disk)
    try:
        started = time.monotonic()
        result = cli("train")
        assert time.monotonic() - started < 30
        assert result.exit_code == 1
        line = one_error_line(result.stderr)
        assert line.startswith(f"error: no space left on the device of {ws / '.datarun'}"), line
        filler.unlink()
        result = cli("train")
        assert result.exit_code == 0, result.stderr
        rows = task_table(ws)
        assert [row[1:3] for row in rows] == [("done", None)] * 5
    finally:
        _stop_local_runner(ws)


def test_train_on_a_full_host_disk_says_which_host_and_requeues(cli, host_disk, tmp_path, monkeypatch):
    ws = workspace_on(cli, tmp_path, host_disk / "work", monkeypatch)
    assert cli("problem", "add", EXAMPLES / "iris").exit_code == 0
    assert cli("submit", "iris", EXAMPLES / "iris" / "submissions" / "knn", "--team", "a").exit_code == 0
    filler = fill(host_disk)
    try:
        started = time.monotonic()
        result = cli("train")
        assert time.monotonic() - started < 30, "a full host disk must be said at once"
        assert result.exit_code == 1
        assert "Traceback" not in result.stderr
        assert f"host local: no space left on the device of {host_disk / 'work'}" in result.stderr, result.stderr
        assert all(row[1] == "queued" for row in task_table(ws)), task_table(ws)
        filler.unlink()
        result = cli("train")
        assert result.exit_code == 0, result.stderr
        assert [row[1:3] for row in task_table(ws)] == [("done", None)] * 5
    finally:
        _stop_local_runner(ws)


BIG_PREDICTIONS = """\
import numpy as np
from sklearn.dummy import DummyClassifier


class Noisy(DummyClassifier):
    def predict_proba(self, X):
        proba = np.random.default_rng(len(X)).random((len(X), len(self.classes_))) + 0.1
        return proba / proba.sum(axis=1, keepdims=True)


def get_estimator():
    return Noisy(strategy="prior")
"""


def test_a_task_that_fills_the_host_disk_goes_back_to_the_queue_not_to_its_team(cli, host_disk, tmp_path,
                                                                                  monkeypatch):
    ws = workspace_on(cli, tmp_path, host_disk / "work", monkeypatch)
    kit = tmp_path / "kit"
    shutil.copytree(EXAMPLES / "iris", kit)
    frame = pd.read_csv(kit / "data" / "train.csv")
    frame.sample(60_000, replace=True, random_state=0).to_csv(kit / "data" / "train.csv", index=False)
    assert cli("problem", "add", kit).exit_code == 0
    first = tmp_path / "first"
    first.mkdir()
    (first / "estimator.py").write_text(BIG_PREDICTIONS)
    assert cli("submit", "iris", first, "--team", "a").exit_code == 0
    try:
        assert cli("train").exit_code == 0  # the data set is on the host, its runner started
        second = tmp_path / "second"
        second.mkdir()
        (second / "estimator.py").write_text(BIG_PREDICTIONS + "# another\n")
        assert cli("submit", "iris", second, "--team", "b").exit_code == 0
        # Room for four bundles (480 kB each) and the runner's files, not for a task's
        # 60,000 x 3 training predictions (1.4 MB).
        filler = fill(host_disk, leave=2_600_000)
        started = time.monotonic()
        result = cli("train")
        assert time.monotonic() - started < 60, "a task that met a full disk is known at once"
        assert result.exit_code == 1
        assert "Traceback" not in result.stderr
        assert "host local: no space left on the device of" in result.stderr, result.stderr
        rows = task_table(ws)[5:]
        assert all(row[1] in ("queued", "done") for row in rows), rows
        assert all(row[2] is None for row in rows), "a team was charged for the host's disk"
        assert any(row[3] for row in rows), "the task was lost on its host (a host fault), not failed"
        filler.unlink()
        result = cli("train")
        assert result.exit_code == 0, result.stderr
        assert [row[1:3] for row in task_table(ws)] == [("done", None)] * 10
    finally:
        _stop_local_runner(ws)


def _stop_local_runner(ws: Path) -> None:
    from datarun.store.workspace import find_workspace

    stop_runners(find_workspace(ws))


# --- warnings ahead of a full disk --------------------------------------------------------

def test_status_warns_when_the_workspace_disk_is_nearly_full(cli, disk, tmp_path, monkeypatch):
    workspace_on(cli, disk, tmp_path / "host", monkeypatch)
    result = cli("status")
    assert result.exit_code == 0
    assert "warning: the workspace has" in result.stderr  # a 24 MB disk is under the threshold
    assert f"under {LOW_SPACE / 1e9:.1f} GB" in result.stderr
    assert "warning" in " ".join(w for w in [low_space_warning("the workspace", disk, 10)] if w)
    assert low_space_warning("the workspace", disk, LOW_SPACE * 2) is None
    report = cli("status", "--json").json()
    assert report["workspace"]["free_space"] == pytest.approx(free_bytes(disk), rel=0.1)


def test_host_check_and_status_warn_when_a_host_workdir_is_nearly_full(cli, host_disk, tmp_path, monkeypatch):
    workspace_on(cli, tmp_path, host_disk / "work", monkeypatch)
    result = cli("host", "check", "local", "--json")
    (report,) = result.json() if isinstance(result.json(), list) else result.json()["hosts"]
    warning = next(w for w in report["warnings"] if "free in" in w)
    assert warning.startswith("host local has ") and f"free in {host_disk / 'work'}" in warning
    assert warning.endswith(f"(under {LOW_SPACE / 1e9:.1f} GB): tasks fail on a full disk, free some space there")
    status = cli("status")
    assert "warning: host local has " in status.stderr
    assert cli("status", "--json").json()["hosts"]["local"]["disk_free"] == report["disk_free"]
