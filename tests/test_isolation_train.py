"""Isolation and labels through `datarun train`: what reaches a host, and isolated runs end to end.

In every mode the test labels stay on the organiser's machine: after a `train` on the
local host and on an SSH host (real sshd), every file of the host's working folder is
searched for them (the same bytes, an array equal to them, a CSV with the target column),
and the search is shown to find them when they are there.

With `isolation = "user"` on the local host, a good submission is trained and scored as
usual, while one that tries to read the organiser's labels and database and to reach the
network fails as a `fit_error`, beside it.
"""

import json
import os
import pwd
import shutil
import tempfile
import uuid
from pathlib import Path

import numpy as np
import psutil
import pytest
from conftest import stop_runners
from sshd import IS_ROOT, TEST_PYTHON, pin, sshd_a  # noqa: F401
from test_operator import GOOD, small_kit, submit, tasks_of

from datarun.executors.local import local_layout
from datarun.remote.common import Layout


def labels_in(root: Path, labels_file: Path, target: str) -> list[str]:
    """Files under ROOT that hold the test labels: their bytes, their values, their column."""
    y_test = np.load(labels_file, allow_pickle=False)
    raw = labels_file.read_bytes()
    found = []
    paths = sorted(Path(folder) / name for folder, _, names in os.walk(root) for name in names)
    for path in paths:
        try:
            if not path.is_file() or path.is_symlink():
                continue
            data = path.read_bytes()
        except FileNotFoundError:  # a collected task's folder, removed meanwhile
            continue
        if data == raw:
            found.append(str(path))
        elif path.suffix == ".npy":
            try:
                array = np.load(path, allow_pickle=False)
            except (ValueError, OSError):
                continue
            if array.shape == y_test.shape and np.array_equal(array, y_test):
                found.append(str(path))
        elif path.suffix == ".csv" and target in data.split(b"\n", 1)[0].decode().split(","):
            found.append(str(path))
    return found


def labels_file(workspace) -> Path:
    from datarun.problems.registry import get_problem
    from datarun.store.blobs import BlobStore
    from datarun.store.db import open_db

    problem = get_problem(open_db(workspace), "flowers")
    return BlobStore(workspace.blobs_dir).tree_path(problem["labels_hash"]) / "y_test.npy"


def assert_no_labels(root: Path, workspace) -> None:
    labels = labels_file(workspace)
    assert list((root / "data").glob("*/X_train.csv")), "no data set was shipped there"
    assert labels_in(root, labels, "species") == []
    # The search would see them: a copy of the labels, and a CSV with the target column.
    shutil.copyfile(labels, root / "planted.npy")
    (root / "planted.csv").write_text("sepal_length,species\n5.1,setosa\n")
    assert labels_in(root, labels, "species") == [str(root / "planted.csv"), str(root / "planted.npy")]
    (root / "planted.npy").unlink()
    (root / "planted.csv").unlink()


def test_test_labels_never_reach_the_local_host(workspace, cli, tmp_path):
    assert cli("problem", "add", small_kit(tmp_path)).exit_code == 0
    try:
        good = submit(cli, tmp_path, "good", GOOD)
        assert cli("train").exit_code == 0
        assert {t["state"] for t in tasks_of(cli, good)} == {"done"}
        assert_no_labels(workspace.state_dir / "hosts" / "local", workspace)
    finally:
        stop_runners(workspace)


def test_test_labels_never_reach_an_ssh_host(workspace, cli, tmp_path, sshd_a):  # noqa: F811
    workdir = f"~/.datarun-host-labels-{uuid.uuid4().hex[:8]}"
    table = sshd_a.host_table(workdir=workdir)
    lines = ["[hosts.node]"] + [f"{key} = {json.dumps(value)}" for key, value in table.items()]
    workspace.hosts_file.write_text("\n".join(lines) + "\n")
    pin(workspace, sshd_a)
    root = Path(pwd.getpwnam(sshd_a.user).pw_dir) / workdir[2:]
    assert cli("problem", "add", small_kit(tmp_path)).exit_code == 0
    try:
        good = submit(cli, tmp_path, "good", GOOD)
        result = cli("train")
        assert result.exit_code == 0, result.stderr
        assert {t["host"] for t in tasks_of(cli, good)} == {"node"}
        assert_no_labels(root, workspace)
    finally:
        runner = Layout(root, workspace.id).runner_json
        if runner.exists():
            try:
                process = psutil.Process(json.loads(runner.read_text())["pid"])
                process.terminate()
                process.wait(10)  # gone before its folder goes: it writes runner.json as it exits
            except (psutil.Error, ValueError, KeyError):
                pass
        shutil.rmtree(root, ignore_errors=True)


SNOOP = """
import socket
from sklearn.linear_model import LogisticRegression

class Snoop(LogisticRegression):
    def fit(self, X, y):
        for path in {paths!r}:
            try:
                open(path, "rb").read()
                print("read", path)
            except OSError as error:
                print("refused", path, type(error).__name__)
        socket.create_connection(("127.0.0.1", 9), timeout=2)
        return super().fit(X, y)

def get_estimator():
    return Snoop(max_iter=500)
"""


@pytest.mark.skipif(not IS_ROOT or not os.access(TEST_PYTHON, os.X_OK),
                    reason="isolation needs root and the host Python of scripts/setup-test-env.sh; "
                    "CI runs as root")
def test_an_isolated_local_host_trains_good_submissions_and_stops_snooping_ones(cli, tmp_path, monkeypatch):
    from datarun.dispatch.dispatcher import Dispatcher
    from datarun.store.workspace import init_workspace

    # Outside /tmp (which an isolated task sees as its own jail) and under folders anyone
    # may enter, so only the workspace's own permissions and the isolation protect it.
    base = Path(tempfile.mkdtemp(prefix="datarun-isolated-ws-", dir="/var/lib"))
    base.chmod(0o755)
    try:
        workspace = init_workspace(base / "ws")
        # The organiser's state is the organiser's alone: the database, the blobs (labels).
        workspace.state_dir.chmod(0o700)
        monkeypatch.setenv("DATARUN_HOME", str(workspace.root))
        workspace.hosts_file.write_text('[hosts.local]\nexecutor = "local"\nslots = 2\nisolation = "user"\n')
        # The runner's Python must be one the task users may execute (joblib starts workers
        # with it); this machine's venv lives under /root, so the local host uses the host Python.
        monkeypatch.setattr("sys.executable", TEST_PYTHON)
        build_bundle = Dispatcher.build_bundle

        def with_isolation(self, staging, task, limits, host):
            # The host's isolation travels in task.json (a no-op once the dispatcher writes it).
            folder = build_bundle(self, staging, task, limits, host)
            spec = json.loads((folder / "task.json").read_text())
            spec.setdefault("isolation", host.isolation)
            (folder / "task.json").write_text(json.dumps(spec))
            return folder

        monkeypatch.setattr(Dispatcher, "build_bundle", with_isolation)
        assert cli("problem", "add", small_kit(tmp_path)).exit_code == 0
        paths = [str(labels_file(workspace)), str(workspace.db_path),
                 str(local_layout(workspace).runner_json)]
        good = submit(cli, tmp_path, "good", GOOD)
        snoop = submit(cli, tmp_path, "snoop", SNOOP.format(paths=paths))
        result = cli("train", "--json")
        assert result.exit_code == 1
        assert (result.json()["done"], result.json()["failed"]) == (2, 2)
        shown = cli("submission", "show", good, "--json").json()
        assert shown["state"] == "done" and 0.5 < shown["bagged"]["valid"]["accuracy"] <= 1
        for task in tasks_of(cli, snoop):
            assert task["error_kind"] == "fit_error"
            assert "OSError: [Errno 101] Network is unreachable" in task["error"]
            log = cli("logs", task["id"]).stdout
            assert [line.split()[1] for line in log.splitlines() if line.startswith("refused")] == paths
            assert "read " not in log
        assert not list(local_layout(workspace).jails.iterdir())
    finally:
        stop_runners(workspace)
        shutil.rmtree(base, ignore_errors=True)
