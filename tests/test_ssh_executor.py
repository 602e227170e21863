"""The SSH executor against real sshd and the real harness: shipping, running, collecting."""

import json
import shlex
import time
import uuid
from pathlib import Path

import numpy as np
import psutil
import pytest
from harness_helpers import DATA_DIABETES, DATA_IRIS, LOGISTIC, task_files, write_dataset
from sshd import pin, runner_pids

from datarun.errors import HostError, UsageError
from datarun.executors.ssh import SSHExecutor
from datarun.executors.sshconn import SSHConnection, resolve_target

pytestmark = pytest.mark.ssh

SLEEPER = """
import time

from sklearn.linear_model import LogisticRegression

def get_estimator():
    time.sleep(30)
    return LogisticRegression()
"""


def stop_remote_runner(server, workdir: str, known_hosts: Path) -> None:
    """Stop the runners a test started on the host, then remove its folder.

    By the pids the runner.json files record and, for a runner started in the background
    that had not written it yet, by the pid of any `serve` of this test's own (unique) folder."""
    conn = SSHConnection(resolve_target(server.host("cleanup")), known_hosts)
    try:
        path = conn.expand(workdir)
        pids = runner_pids(conn, path)
        deadline = time.monotonic() + 5
        while True:
            serving = {p.pid for p in psutil.process_iter(["cmdline"])
                       if "serve" in (p.info["cmdline"] or []) and path in (p.info["cmdline"] or [])}
            pids |= serving
            if not serving or time.monotonic() > deadline:
                break
            for pid in serving:
                conn.run(shlex.join(["kill", str(pid)]))
            time.sleep(0.1)
        for pid in pids:
            conn.run(shlex.join(["kill", str(pid)]))
        conn.run(shlex.join(["chmod", "-R", "u+w", path]) + "; " + shlex.join(["rm", "-rf", path]))  # data and harness are read-only
    finally:
        conn.close()


@pytest.fixture
def node(workspace, sshd_a):
    """An executor on server a, in a workdir of the test's own."""
    pin(workspace, sshd_a)
    workdir = f"~/wd-{uuid.uuid4().hex[:8]}"
    executor = SSHExecutor(workspace, sshd_a.host("node", workdir=workdir))
    yield executor
    executor.close()
    stop_remote_runner(sshd_a, workdir, workspace.state_dir / "known_hosts")


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    root = tmp_path_factory.mktemp("datasets")
    meta = {DATA_IRIS: write_dataset(root, DATA_IRIS, "classification"),
            DATA_DIABETES: write_dataset(root, DATA_DIABETES, "regression")}
    return root / "data", meta


def make_bundle(folder: Path, key: str, code: str, meta: dict, digest: str, **options) -> Path:
    bundle = folder / key
    for name, content in task_files(key, code, meta, digest, **options).items():
        (bundle / name).parent.mkdir(parents=True, exist_ok=True)
        (bundle / name).write_bytes(content)
    return bundle


def wait_finished(executor, keys: list[str], timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        report = executor.poll(keys)
        if all(task.state == "finished" for task in report.tasks.values()):
            return report
        time.sleep(0.1)
    raise AssertionError(f"not finished after {timeout}s: {executor.poll(keys)}")


def test_prepare_ships_harness_and_data_once_per_hash(node, datasets, workspace, sshd_a):
    data, _ = datasets
    node.prepare({DATA_IRIS: data / DATA_IRIS})
    assert node.conn.stats.uploads == 2  # the harness, then the data set
    commands = node.conn.stats.commands
    node.prepare({DATA_IRIS: data / DATA_IRIS})
    assert node.conn.stats.commands == commands  # known present: not even asked

    # A new process asks once, with one command, and sends nothing; with the harness there
    # and tasks on their way, one more command starts the runner in the background.
    fresh = SSHExecutor(workspace, node.host)
    try:
        fresh.prepare({DATA_IRIS: data / DATA_IRIS})
        assert (fresh.conn.stats.commands, fresh.conn.stats.uploads) == (2, 0)
        fresh.prepare({DATA_IRIS: data / DATA_IRIS, DATA_DIABETES: data / DATA_DIABETES})
        assert fresh.conn.stats.uploads == 1  # only the new data set
        listing = fresh.conn.run(shlex.join(["ls", "-A", f"{fresh.workdir}/data/{DATA_DIABETES}"]))
        assert set(listing.stdout.split()) >= {"X_train.csv", "y_train.npy", "meta.json", ".complete"}
        # What was shipped is the package's source, without the organiser's caches.
        from datarun.executors.ssh import staged_harness

        shipped = {p.name for p in staged_harness()[1].rglob("*")}
        assert "__main__.py" in shipped and "__pycache__" not in shipped
    finally:
        fresh.close()


def test_preparing_for_tasks_starts_the_runner_before_any_sync(node, datasets):
    data, _ = datasets
    node.prepare({})  # the harness alone: no tasks on their way, no runner
    time.sleep(0.5)
    none = node.conn.run(shlex.join(["test", "-e", str(node.layout.runner_json)]))
    assert none.status != 0
    node.prepare({DATA_IRIS: data / DATA_IRIS})
    deadline = time.monotonic() + 30
    state = {}
    while time.monotonic() < deadline:
        out = node.conn.run(shlex.join(["cat", str(node.layout.runner_json)])).stdout
        state = json.loads(out) if out.strip() else {}
        if state.get("state") == "running":  # serving (written "starting" before its imports)
            break
        time.sleep(0.2)
    assert state.get("pid"), "no runner started"
    alive = node.conn.run(shlex.join(["kill", "-0", str(int(state["pid"]))]))
    assert alive.status == 0


def test_a_task_runs_end_to_end_and_comes_back_as_data(node, datasets, tmp_path):
    data, meta = datasets
    node.prepare({DATA_IRIS: data / DATA_IRIS})
    node.launch([make_bundle(tmp_path / "out", "t0-a1", LOGISTIC, meta[DATA_IRIS], DATA_IRIS)])
    bundle = make_bundle(tmp_path / "out", "t1-a1", LOGISTIC, meta[DATA_IRIS], DATA_IRIS)
    before = (node.conn.stats.commands, node.conn.stats.uploads)
    node.launch([bundle])
    # Once the host is known good: one put and one command (accept and start) per launch.
    assert (node.conn.stats.commands, node.conn.stats.uploads) == (before[0] + 1, before[1] + 1)
    assert not bundle.exists()  # consumed, as on the local host
    report = wait_finished(node, ["t0-a1", "t1-a1"])
    assert report.runner_alive
    dest = tmp_path / "results"
    assert node.fetch(["t1-a1", "t2-a1"], dest) == ["t1-a1"]
    result = json.loads((dest / "t1-a1" / "result.json").read_text())
    assert result["state"] == "done", result
    assert result["environment"]["python"]
    predictions = np.load(dest / "t1-a1" / "y_pred_train.npy", allow_pickle=False)
    assert predictions.shape == (meta[DATA_IRIS]["n_train"], 3)
    assert node.fetch(["t1-a1"], dest) == ["t1-a1"]  # collecting again is harmless
    node.cleanup(["t1-a1"])
    assert node.poll(["t1-a1"]).tasks["t1-a1"].state == "missing"
    assert node.fetch(["t1-a1"], tmp_path / "again") == []


def test_cancel_and_log_reach_the_host(node, datasets, tmp_path):
    data, meta = datasets
    node.prepare({DATA_IRIS: data / DATA_IRIS})
    node.launch([make_bundle(tmp_path, "slow-a1", SLEEPER, meta[DATA_IRIS], DATA_IRIS)])
    node.cancel(["slow-a1"])
    wait_finished(node, ["slow-a1"], timeout=20)
    node.fetch(["slow-a1"], tmp_path / "r")
    assert json.loads((tmp_path / "r" / "slow-a1" / "result.json").read_text())["error_kind"] == "cancelled"
    assert isinstance(node.log("slow-a1"), str)


def test_shell_metacharacters_in_paths_and_names_inject_nothing(workspace, sshd_a, datasets, tmp_path):
    data, meta = datasets
    pin(workspace, sshd_a)
    marker = f"pwned-{uuid.uuid4().hex[:6]}"
    workdir = f"~/wd {marker} ;$(touch {marker}-1) `touch {marker}-2` 'q\" & touch {marker}-3"
    executor = SSHExecutor(workspace, sshd_a.host("node", workdir=workdir))
    try:
        weird = f"a b;$(touch {marker}-4)`touch {marker}-5`'\".py"
        bundle = make_bundle(tmp_path, "t-weird.1", LOGISTIC, meta[DATA_IRIS], DATA_IRIS,
                             files={weird: "x = 1\n"})
        executor.prepare({DATA_IRIS: data / DATA_IRIS})
        executor.launch([bundle])
        wait_finished(executor, ["t-weird.1"])
        assert executor.fetch(["t-weird.1"], tmp_path / "r") == ["t-weird.1"]
        listing = executor.conn.run(shlex.join(["ls", "-A", executor.conn.home()])).stdout
        assert f"wd {marker} ;$(touch {marker}-1)" in listing  # the folder, named literally
        found = executor.conn.run(shlex.join(["find", executor.conn.home(), "-name", f"{marker}-*"]))
        assert found.stdout == ""
        shipped = executor.conn.run(shlex.join(
            ["ls", str(executor.layout.task("t-weird.1") / "submission")])).stdout
        assert weird in shipped
    finally:
        executor.close()
        stop_remote_runner(sshd_a, workdir, workspace.state_dir / "known_hosts")


def test_a_bad_task_key_is_refused_before_anything_is_sent(node, tmp_path):
    (tmp_path / "a;b").mkdir()
    with pytest.raises(UsageError, match=r"bad task key 'a;b': use only letters"):
        node.launch([tmp_path / "a;b"])
    with pytest.raises(UsageError, match="bad task key '..'"):
        node.poll([".."])
    assert node.conn.stats.commands == 0


def test_a_workdir_that_is_not_writable(workspace, sshd_a):
    pin(workspace, sshd_a)
    executor = SSHExecutor(workspace, sshd_a.host("node", workdir="/root/datarun-host"))
    try:
        with pytest.raises(HostError, match=r"host node: workdir /root/datarun-host is not "
                           r"writable \(.*Permission denied\): fix its permissions"):
            executor.info()
    finally:
        executor.close()


def test_a_host_without_that_python(workspace, sshd_a):
    pin(workspace, sshd_a)
    workdir = f"~/wd-{uuid.uuid4().hex[:8]}"
    executor = SSHExecutor(workspace, sshd_a.host("node", python="/nonexistent/python3",
                                                  workdir=workdir))
    try:
        with pytest.raises(HostError, match=r"'/nonexistent/python3' was not found on the host: "
                           r"install python3 \(3.9 or newer\) there, or set `python`"):
            executor.info()
    finally:
        executor.close()
        stop_remote_runner(sshd_a, workdir, workspace.state_dir / "known_hosts")


def test_a_harness_removed_behind_our_back_is_shipped_again(node):
    node.info()
    # Read-only once shipped: removing it takes a chmod first.
    node.conn.run(shlex.join(["chmod", "-R", "u+w", f"{node.workdir}/harness"]) + " && "
                  + shlex.join(["rm", "-rf", f"{node.workdir}/harness"]))
    with pytest.raises(HostError, match="the harness in .* is gone: run the command again"):
        node.poll(["k1"])
    assert node.poll(["k1"]).tasks["k1"].state == "missing"


def test_a_harness_error_is_reported_in_one_line(node, tmp_path):
    node.prepare({})
    with pytest.raises(HostError, match="host node: harness log failed: no task nope-1 on this host"):
        node.log("nope-1")


def test_a_command_that_fails_otherwise_names_its_last_line(node):
    node.prepare({})
    result = node.conn.run("echo first >&2; echo 'the real reason' >&2; exit 5")
    assert str(node._fail(result, "probing")) == "host node: probing failed (the real reason)"


def test_a_host_python_without_the_libraries_gets_no_tasks(workspace, sshd_a, datasets, tmp_path):
    data, meta = datasets
    pin(workspace, sshd_a)
    workdir = f"~/wd-{uuid.uuid4().hex[:8]}"
    # The system Python of the test machine has none of numpy, pandas, scikit-learn, psutil.
    executor = SSHExecutor(workspace, sshd_a.host("node", python="/usr/bin/python3", workdir=workdir))
    try:
        assert executor.info()["missing"]
        bundle = make_bundle(tmp_path, "t1-a1", LOGISTIC, meta[DATA_IRIS], DATA_IRIS)
        with pytest.raises(HostError, match=r"host node: its Python lacks numpy, .*scikit-learn.*: "
                           r"install them there \(`/usr/bin/python3 -m pip install numpy"):
            executor.launch([bundle])
        assert bundle.exists()  # not consumed: it can go to another host
    finally:
        executor.close()
        stop_remote_runner(sshd_a, workdir, workspace.state_dir / "known_hosts")
