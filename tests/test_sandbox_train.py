"""The sandbox and the labels through the CLI: what reaches a host, and sandboxed runs end to end.

In every mode the test labels stay on the organiser's machine: after a `train` on the
local host and on an SSH host (real sshd), every file of the host's working folder is
searched for them (the same bytes, an array equal to them, a CSV with the target column),
and the search is shown to find them when they are there.

On the default local host (sandboxed, no `isolation` line), a good submission is trained
and scored as usual, while one that tries to read the organiser's labels and database and
to reach the network fails as a `fit_error`, beside it. `isolation = "none"` is announced
by one warning line; a host that cannot sandbox gets no task, and says why.
(The attacks themselves, setting by setting, are tests/test_attacks.py.)
"""

import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import numpy as np
import psutil
from conftest import stop_runners
from sshd import IS_ROOT, pin
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
    from datarun.problems.registered import get_problem
    from datarun.store.blobs import BlobStore
    from datarun.store.db import open_db

    problem = get_problem(open_db(workspace), "flowers")
    return BlobStore(workspace.blobs_dir).tree_path(problem["labels_hash"]) / "y_test.npy"


def assert_no_labels(root: Path, workspace) -> None:
    labels = labels_file(workspace)
    assert list((root / "data").glob("*/X_train.*")), "no data set was shipped there"
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
        assert_no_labels(local_layout(workspace).root, workspace)
    finally:
        stop_runners(workspace)


def test_test_labels_never_reach_an_ssh_host(workspace, cli, tmp_path, sshd_a):
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


def test_a_sandboxed_local_host_trains_good_submissions_and_stops_snooping_ones(cli, tmp_path, monkeypatch):
    from datarun.store.workspace import init_workspace

    # Under folders anyone may enter: only the sandbox keeps the task out of the workspace.
    base = Path(tempfile.mkdtemp(prefix="datarun-sandboxed-ws-", dir="/var/tmp"))
    base.chmod(0o755)
    try:
        workspace = init_workspace(base / "ws")
        monkeypatch.setenv("DATARUN_HOME", str(workspace.root))
        # The default hosts.toml sets no isolation (it only mentions the choice in a comment).
        assert not [line for line in workspace.hosts_file.read_text().splitlines()
                    if line.startswith("isolation")]
        assert cli("problem", "add", small_kit(tmp_path)).exit_code == 0
        paths = [str(labels_file(workspace)), str(workspace.db_path),
                 str(local_layout(workspace).runner_json)]
        good = submit(cli, tmp_path, "good", GOOD)
        snoop = submit(cli, tmp_path, "snoop", SNOOP.format(paths=paths))
        result = cli("train", "--json")
        assert result.exit_code == 1
        assert result.stderr == ""  # no warning: every host sandboxes
        assert (result.json()["done"], result.json()["failed"]) == (2, 2)
        shown = cli("submission", "show", good, "--json").json()
        assert shown["state"] == "done" and 0.5 < shown["bagged"]["valid"]["accuracy"] <= 1
        measured = {t["environment"]["measured_by"] for t in shown["tasks"]}
        assert measured == {"cgroup-v1" if IS_ROOT else "procfs"}
        table = cli("submission", "show", good).stdout
        assert "measured by" in table and measured.pop() in table
        for task in tasks_of(cli, snoop):
            assert task["error_kind"] == "fit_error"
            assert "OSError: [Errno 101] Network is unreachable" in task["error"]
            log = cli("logs", task["id"]).stdout
            assert [line.split()[1] for line in log.splitlines() if line.startswith("refused")] == paths
            assert "read " not in log
    finally:
        stop_runners(workspace)
        shutil.rmtree(base, ignore_errors=True)


NO_SANDBOX = ('warning: host local says isolation = "none": submissions there can read everything '
              "the host's user can (other teams' code, labels, keys)\n")


def test_isolation_none_is_announced_by_one_line_on_submit_and_train(workspace, cli, tmp_path):
    assert cli("problem", "add", small_kit(tmp_path)).exit_code == 0
    first = cli("submit", "flowers", _folder(tmp_path, "a"), "--team", "ada")
    assert first.exit_code == 0 and "warning" not in first.stderr
    text = workspace.hosts_file.read_text()
    workspace.hosts_file.write_text(text.replace('executor = "local"', 'executor = "local"\nisolation = "none"', 1))
    try:
        second = cli("submit", "flowers", _folder(tmp_path, "b"), "--team", "ada", "--json")
        assert second.exit_code == 0 and second.stderr == NO_SANDBOX
        trained = cli("train", "--json")
        assert trained.exit_code == 0 and trained.stderr == NO_SANDBOX
        assert cli("host", "list", "--json").json()["hosts"][0]["isolation"] == "none"
    finally:
        stop_runners(workspace)


def _folder(tmp_path: Path, name: str) -> Path:
    folder = tmp_path / "subs" / name
    folder.mkdir(parents=True)
    (folder / "estimator.py").write_text(GOOD)
    return folder


def test_host_check_tells_whether_the_sandbox_works_and_how_memory_is_measured(workspace, cli):
    report = cli("host", "check", "local", "--json").json()["hosts"][0]
    assert report["ok"] and report["isolation"] == "sandbox"
    assert report["sandbox"] == {"ok": True, "reason": None}
    assert report["measured_by"] == ("cgroup-v1" if IS_ROOT else "procfs")
    table = cli("host", "check", "local").stdout
    assert f"yes ({report['measured_by']})" in table


SANDBOX_OFF = ("user namespaces are off on this host (/proc/sys/user/max_user_namespaces is 0): "
               'raise it, or set isolation = "none" for trusted code')


def _without_user_namespaces(*command: str, env: dict) -> subprocess.CompletedProcess:
    """COMMAND where no user namespace can be made: in a user namespace of its own whose
    max_user_namespaces is 0 (the host's setting is left alone)."""
    script = "echo 0 > /proc/sys/user/max_user_namespaces && exec \"$@\""
    return subprocess.run(["unshare", "-Ur", "sh", "-c", script, "sh", *command],
                          capture_output=True, text=True, env=env, timeout=120)


def test_a_host_that_cannot_sandbox_gets_no_tasks_and_says_why(workspace, cli, tmp_path):
    assert cli("problem", "add", small_kit(tmp_path)).exit_code == 0
    good = submit(cli, tmp_path, "good", GOOD)
    env = dict(os.environ)
    datarun = [sys.executable, "-m", "datarun"]
    check = _without_user_namespaces(*datarun, "host", "check", "--json", env=env)
    assert check.returncode == 1, check.stderr
    report = json.loads(check.stdout)["hosts"][0]
    assert report["sandbox"] == {"ok": False, "reason": SANDBOX_OFF}
    assert report["problems"] == [f"cannot sandbox tasks, so it gets none: {SANDBOX_OFF}"]
    status = cli("status", "--json").json()["hosts"]["local"]
    assert status["checked_ok"] is False and status["problem"] == report["problems"][0]
    assert "NOT OK: cannot sandbox tasks" in cli("status").stdout
    trained = _without_user_namespaces(*datarun, "train", "--json", env=env)
    assert trained.returncode == 1
    assert json.loads(trained.stdout)["queued"] == 2
    assert trained.stderr == ("error: tasks 1, 2 of flowers (needs memory limit 2.0 GB) fit no host: "
                              f"local: cannot sandbox tasks, so it gets none: {SANDBOX_OFF}\n")
    assert {t["state"] for t in tasks_of(cli, good)} == {"queued"}
    # Trusted code only: the same host with isolation = "none" takes them.
    text = workspace.hosts_file.read_text()
    workspace.hosts_file.write_text(text.replace('executor = "local"', 'executor = "local"\nisolation = "none"', 1))
    try:
        check = _without_user_namespaces(*datarun, "host", "check", "--json", env=env)
        assert check.returncode == 0 and json.loads(check.stdout)["hosts"][0]["warnings"][-1].startswith(
            'isolation = "none"')
        trained = _without_user_namespaces(*datarun, "train", "--json", env=env)
        assert trained.returncode == 0, trained.stderr
        assert trained.stderr.startswith("warning: host local says isolation")
    finally:
        stop_runners(workspace)
