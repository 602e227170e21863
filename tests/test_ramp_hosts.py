"""RAMP tasks on hosts: failures of the submission, and hosts without ramp-workflow.

The SSH test host's Python (/opt/datarun-test-python) has no ramp-workflow: a RAMP task
sent there must fail with an import_error that says what to install, not a traceback,
while the harness's `info` (what `host check` reads) reports rampwf as missing.
"""

import json
import shlex
import shutil
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest
from conftest import stop_runners
from sshd import pin, runner_pids

KITS = Path(__file__).resolve().parent / "ramp_kits"


def submit(cli, problem, folder, team="ada") -> int:
    result = cli("submit", problem, folder, "--team", team, "--json")
    assert result.exit_code == 0, result.stderr
    return result.json()["id"]


def tasks_of(cli, submission) -> list[dict]:
    result = cli("submission", "show", submission, "--json")
    assert result.exit_code == 0, result.stderr
    return result.json()["tasks"]


@pytest.fixture
def iris(workspace, cli):
    assert cli("problem", "add", KITS / "iris_classifier").exit_code == 0
    yield workspace
    stop_runners(workspace)


def write_classifier(folder: Path, body: str) -> Path:
    folder.mkdir()
    (folder / "classifier.py").write_text(body)
    return folder


def test_submission_faults_are_reported_with_their_own_frames(iris, cli, tmp_path):
    broken_fit = submit(cli, "iris_classifier", write_classifier(tmp_path / "broken_fit", (
        "class Classifier:\n"
        "    def fit(self, X, y):\n"
        "        raise ValueError('no fitting today')\n\n"
        "    def predict_proba(self, X):\n"
        "        return X\n")))
    wrong_columns = submit(cli, "iris_classifier", write_classifier(tmp_path / "two_columns", (
        "import numpy as np\n\n"
        "class Classifier:\n"
        "    def fit(self, X, y):\n"
        "        pass\n\n"
        "    def predict_proba(self, X):\n"
        "        return np.full((len(X), 2), 0.5)\n")), team="bob")
    bad_import = submit(cli, "iris_classifier", write_classifier(tmp_path / "bad_import", (
        "import not_a_module_anywhere\n\n"
        "class Classifier:\n"
        "    pass\n")), team="cy")
    result = cli("train", "--json")
    assert result.exit_code == 1
    assert result.json()["failed"] == 9

    for task in tasks_of(cli, broken_fit):
        assert (task["state"], task["error_kind"]) == ("failed", "fit_error")
        assert 'File "submission/classifier.py", line 3, in fit' in task["error"]
        assert task["error"].rstrip().endswith("ValueError: no fitting today")
        assert "rampwf" not in task["error"] and "datarun" not in task["error"]
    for task in tasks_of(cli, wrong_columns):
        assert task["error_kind"] == "bad_predictions"
        assert task["error"] == (
            "the train predictions do not fit the kit's Predictions: ValueError: Wrong y_pred "
            "dimensions: y_pred should be 2D with 3 columns, instead its shape is (110, 2)")
    for task in tasks_of(cli, bad_import):
        assert task["error_kind"] == "import_error"
        assert "No module named 'not_a_module_anywhere'" in task["error"]


def test_a_harness_without_rampwf_fails_the_task_with_what_to_install(workspace, cli, monkeypatch):
    """The harness's side, in-process: the data set loads, each task fails cleanly."""
    from datarun.problems.registered import data_dir, get_problem
    from datarun.remote.child import DataSet
    from datarun.remote.registry import WORKFLOWS
    from datarun.remote.workflows import PhaseClock, TaskFailure
    from datarun.store.db import open_db

    assert cli("problem", "add", KITS / "cancer_estimator").exit_code == 0
    folder = data_dir(workspace, get_problem(open_db(workspace), "cancer_estimator"))
    monkeypatch.setitem(sys.modules, "rampwf", None)
    data = DataSet(folder)
    with pytest.raises(TaskFailure) as failure:
        WORKFLOWS["ramp"]({"classes": [0, 1]}, data, folder, PhaseClock(Path("/dev/null")))
    assert failure.value.kind == "import_error"
    assert failure.value.text == ("this host lacks ramp-workflow, which RAMP problems need: "
                                  "pip install ramp-workflow")


def test_predictions_come_back_as_the_kits_arrays(iris, cli):
    """What a host sends back is .npy of Predictions(y_pred=...).y_pred, every training row."""
    from datarun.store.blobs import BlobStore
    from datarun.store.db import open_db

    submission = submit(cli, "iris_classifier", KITS / "iris_classifier" / "submissions" / "knn")
    assert cli("train", "--json").exit_code == 0
    db = open_db(iris)
    store = BlobStore(iris.blobs_dir)
    for pred_train, pred_test in db.execute(
            "SELECT pred_train, pred_test FROM tasks WHERE submission = ?", [submission]):
        train, test = store.get_array(pred_train), store.get_array(pred_test)
        assert train.shape == (110, 3) and test.shape == (40, 3)
        assert train.dtype == np.float64
        np.testing.assert_allclose(train.sum(axis=1), 1.0)


# --- a real SSH host without ramp-workflow -----------------------------------------------------


@pytest.fixture
def ssh_only(workspace, sshd_a):
    """hosts.toml with one SSH host (no local host), in a workdir of this test's own."""
    from datarun.executors.sshconn import SSHConnection, resolve_target

    workdir = f"~/ramp-{uuid.uuid4().hex[:8]}"
    table = sshd_a.host_table(workdir=workdir, command_timeout=30.0)
    lines = ["[hosts.node-a]"] + [f"{key} = {json.dumps(value)}" for key, value in table.items()]
    workspace.hosts_file.write_text("\n".join(lines) + "\n")
    pin(workspace, sshd_a)
    yield workspace
    conn = SSHConnection(resolve_target(sshd_a.host("probe", workdir=workdir)),
                         workspace.state_dir / "known_hosts")
    try:
        path = conn.expand(workdir)
        for pid in runner_pids(conn, path):
            conn.run(shlex.join(["kill", str(pid)]))
        conn.run(shlex.join(["chmod", "-R", "u+w", path]) + "; " + shlex.join(["rm", "-rf", path]))  # data and harness are read-only
    finally:
        conn.close()


@pytest.mark.ssh
def test_ssh_host_without_rampwf_fails_ramp_tasks_with_an_install_message(ssh_only, cli,
                                                                           sshd_a):
    from datarun.executors import open_executor
    from datarun.executors.hosts import load_hosts

    if shutil.which(sshd_a.python) is None and not Path(sshd_a.python).exists():
        pytest.skip(f"no host python {sshd_a.python}")
    host = load_hosts(ssh_only.hosts_file)["node-a"]
    executor = open_executor(ssh_only, host)
    try:
        info = executor.info()
    finally:
        executor.close()
    if info.get("rampwf") is not None:
        pytest.skip("the test host's Python has ramp-workflow; this test needs one without")
    assert info["sklearn"] is not None  # a host fit for native problems

    assert cli("problem", "add", KITS / "cancer_estimator").exit_code == 0
    submission = submit(cli, "cancer_estimator",
                        KITS / "cancer_estimator" / "submissions" / "starting_kit")
    result = cli("train", "--json")
    assert result.exit_code == 1, result.stderr
    tasks = tasks_of(cli, submission)
    assert len(tasks) == 4
    for task in tasks:
        assert (task["state"], task["error_kind"], task["host"]) == (
            "failed", "import_error", "node-a")
        assert task["error"] == ("this host lacks ramp-workflow, which RAMP problems need: "
                                 "pip install ramp-workflow")


def python_with_rampwf(folder: Path, base: str) -> str:
    """A host `python` that is `base` with this environment's ramp-workflow (and the two
    pure-Python libraries it needs) on its path: a wrapper the SSH user can run."""
    import click
    import cloudpickle
    import rampwf

    site = folder / "site"
    site.mkdir(parents=True)
    for module in (rampwf, cloudpickle, click):
        (site / module.__name__).symlink_to(Path(module.__file__).parent)
    wrapper = folder / "python"
    wrapper.write_text(f'#!/bin/sh\nPYTHONPATH={site}${{PYTHONPATH:+:$PYTHONPATH}} '
                       f'exec {base} "$@"\n')
    for path in (folder, site, wrapper):
        path.chmod(0o755)
    return str(wrapper)


@pytest.mark.ssh
def test_ramp_kits_run_on_an_ssh_host_as_on_this_one(workspace, cli, sshd_a, tmp_path):
    """A kit's own workflow (shipped from the kit folder) and a kit helper in
    external_imports/, trained on a loopback SSH host: every score equals a local run's."""
    import tempfile

    from datarun.executors.sshconn import SSHConnection, resolve_target

    if not Path(sshd_a.python).exists():
        pytest.skip(f"no host python {sshd_a.python}")
    from datarun.store.workspace import init_workspace

    wrapper_dir = Path(tempfile.mkdtemp(prefix="datarun-rampwf-"))
    local = init_workspace(tmp_path / "local")
    kits, submissions = ("wine_custom", "diabetes_multi"), ("starting_kit", "forest")
    workdir = f"~/ramp-{uuid.uuid4().hex[:8]}"
    try:
        python = python_with_rampwf(wrapper_dir, sshd_a.python)
        table = sshd_a.host_table(workdir=workdir, python=python, command_timeout=30.0)
        workspace.hosts_file.write_text("[hosts.node-a]\n" + "".join(
            f"{key} = {json.dumps(value)}\n" for key, value in table.items()))
        pin(workspace, sshd_a)
        results = {}
        for where in ("ssh", "local"):
            ws = ["-w", local.root] if where == "local" else []
            for kit in kits:
                assert cli(*ws, "problem", "add", KITS / kit).exit_code == 0
                for name in submissions:
                    assert cli(*ws, "submit", kit, KITS / kit / "submissions" / name, "--team",
                               name).exit_code == 0
            trained = cli(*ws, "train", "--json")
            assert trained.exit_code == 0, trained.stdout + trained.stderr
            shown = [cli(*ws, "submission", "show", sid, "--json", "--private").json() for sid in range(1, 5)]
            results[where] = [(s["bagged"], [t["scores"] for t in s["tasks"]]) for s in shown]
            if where == "ssh":
                assert {t["host"] for s in shown for t in s["tasks"]} == {"node-a"}
        assert results["ssh"] == results["local"]
    finally:
        stop_runners(workspace)
        stop_runners(local)
        conn = SSHConnection(resolve_target(sshd_a.host("probe", workdir=workdir)),
                             workspace.state_dir / "known_hosts")
        try:
            path = conn.expand(workdir)
            out = conn.run(shlex.join(["cat", f"{path}/runner.json"])).stdout
            pid = json.loads(out).get("pid") if out.strip() else None
            if pid:
                conn.run(shlex.join(["kill", str(int(pid))]))
            conn.run(shlex.join(["rm", "-rf", path]))
        finally:
            conn.close()
            shutil.rmtree(wrapper_dir, ignore_errors=True)


# --- the harness's refusals, in-process ----------------------------------------------------------


def data_copy(workspace, cli, kit: str, tmp_path: Path) -> Path:
    from datarun.problems.registered import data_dir, get_problem
    from datarun.store.db import open_db

    assert cli("problem", "add", KITS / kit).exit_code == 0
    source = data_dir(workspace, get_problem(open_db(workspace), kit))
    copy = tmp_path / "data"
    shutil.copytree(source, copy)
    return copy


def run_task(data_folder: Path, tmp_path: Path, files: dict[str, str], classes, monkeypatch):
    """Run one RAMP task of fold-like indices in this process; return the TaskFailure."""
    from datarun.remote.child import DataSet
    from datarun.remote.registry import WORKFLOWS
    from datarun.remote.workflows import PhaseClock, TaskFailure

    data = DataSet(data_folder)
    folder = tmp_path / "task"
    (folder / "submission").mkdir(parents=True)
    for name, text in files.items():
        (folder / "submission" / name).write_text(text)
    n = data.ramp.meta["n_train"]
    np.save(folder / "train_idx.npy", np.arange(0, n, 2))
    np.save(folder / "valid_idx.npy", np.arange(1, n, 2))
    monkeypatch.setattr(sys, "path", list(sys.path))
    for name in files:
        monkeypatch.delitem(sys.modules, Path(name).stem, raising=False)
    with pytest.raises(TaskFailure) as failure:
        WORKFLOWS["ramp"]({"classes": classes}, data, folder, PhaseClock())
    return failure.value


CLASSIFIER = """
import numpy as np

class Classifier:
    def fit(self, X, y):
        pass

    def predict_proba(self, X):
        return {proba}
"""
IRIS = ["setosa", "versicolor", "virginica"]


def test_unreadable_data_set_is_a_harness_error(workspace, cli, tmp_path, monkeypatch):
    data = data_copy(workspace, cli, "iris_classifier", tmp_path)
    (data / "X_train.pkl").write_bytes(b"not a pickle")
    failure = run_task(data, tmp_path, {"classifier.py": "x = 1\n"}, IRIS, monkeypatch)
    assert failure.kind == "harness_error"
    assert failure.text.startswith("the RAMP data set data cannot be read on this host (")


def test_problem_py_failing_on_the_host_is_an_import_error(workspace, cli, tmp_path, monkeypatch):
    data = data_copy(workspace, cli, "iris_classifier", tmp_path)
    (data / "kit" / "problem.py").write_text("raise RuntimeError('not on this host')\n")
    failure = run_task(data, tmp_path, {"classifier.py": "x = 1\n"}, IRIS, monkeypatch)
    assert (failure.kind, failure.text) == (
        "import_error", "problem.py failed to import on this host: RuntimeError: not on this host\n")


def test_data_file_element_without_a_default_must_be_sent(workspace, cli, tmp_path, monkeypatch):
    data = data_copy(workspace, cli, "diabetes_external", tmp_path)
    meta = json.loads((data / "meta.json").read_text())
    (data / "meta.json").write_text(json.dumps(dict(meta, external=[])))
    estimator = (KITS / "diabetes_external" / "submissions" / "starting_kit" / "estimator.py")
    failure = run_task(data, tmp_path, {"estimator.py": estimator.read_text()}, None, monkeypatch)
    assert (failure.kind, failure.text) == ("import_error", "the submission has no external_data.csv")


@pytest.mark.parametrize(("proba", "message"), [
    ("np.full((len(X), 3), np.nan)", "train predictions hold 330 NaN or infinite values"),
    ("np.full((10, 3), 1 / 3)", "the train predictions have shape (10, 3), expected (110, 3)"),
    ("np.full((len(X), 3), None)", "the train predictions are Python objects (dtype object), "
     "which cannot leave the host as .npy without pickle: predict numbers"),
    ("np.full((len(X), 3), 'a')", "the train predictions have dtype <U1; predictions are "
     "numbers of at most 8 bytes (float64, float32, int64, bool...)"),
])
def test_bad_predictions(workspace, cli, tmp_path, monkeypatch, proba, message):
    data = data_copy(workspace, cli, "iris_classifier", tmp_path)
    failure = run_task(data, tmp_path, {"classifier.py": CLASSIFIER.format(proba=proba)}, IRIS,
                       monkeypatch)
    assert (failure.kind, failure.text) == ("bad_predictions", message)
