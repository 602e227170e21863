"""`datarun retry`, `cancel` and `logs` through the CLI, on the local host with its real runner.

A two-fold iris kit keeps each `train` short. Cancelling a running submission is done
while a real `datarun train` runs in another process: its process trees must die on the
host, its tasks end `cancelled`, and that `train` must end on its own.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest
from conftest import EXAMPLES, stop_runners
from harness_helpers import alive_named

from datarun.executors.local import local_layout

KIT_TOML = """
name = "flowers"
title = "Iris on two folds"
kind = "classification"

[data]
train = "data/train.csv"
test = "data/test.csv"
target = "species"

[cv]
strategy = "stratified-kfold"
n_splits = 2
seed = 1

[workflow]
kind = "estimator"

[scores]
names = ["accuracy"]

[limits]
wall_time = "60s"
memory = "2GB"
"""

GOOD = """
from sklearn.linear_model import LogisticRegression

def get_estimator():
    print("fitting a logistic regression")
    return LogisticRegression(max_iter=500)
"""

FAILS_UNTIL = """
import os
from sklearn.linear_model import LogisticRegression

class Moody(LogisticRegression):
    def fit(self, X, y):
        if not os.path.exists({flag!r}):
            raise RuntimeError("not in the mood")
        return super().fit(X, y)

def get_estimator():
    return Moody(max_iter=500)
"""

SLEEPS = """
import ctypes, os, subprocess, time
from sklearn.linear_model import LogisticRegression

class Sleeper(LogisticRegression):
    def fit(self, X, y):
        ctypes.CDLL(None).prctl(15, b"dr-sleeper", 0, 0, 0)  # its name, seen from the host
        child = subprocess.Popen(["sleep", "120.0731"])
        print("asleep with", child.pid, flush=True)
        time.sleep(120)

def get_estimator():
    return Sleeper()
"""


def small_kit(folder: Path) -> Path:
    """A two-fold copy of the iris example kit."""
    kit = folder / "flowers"
    shutil.copytree(EXAMPLES / "iris" / "data", kit / "data")
    (kit / "problem.toml").write_text(KIT_TOML)
    return kit


def write_submission(folder: Path, name: str, code: str) -> Path:
    path = folder / name
    path.mkdir(parents=True)
    (path / "estimator.py").write_text(textwrap.dedent(code))
    return path


@pytest.fixture
def flowers(workspace, cli, tmp_path):
    result = cli("problem", "add", small_kit(tmp_path))
    assert result.exit_code == 0, result.stderr
    yield workspace
    stop_runners(workspace)


def unsandboxed(workspace) -> None:
    """The local host with isolation = "none" (for submissions that read the test's files)."""
    text = workspace.hosts_file.read_text()
    workspace.hosts_file.write_text(text.replace('executor = "local"', 'executor = "local"\nisolation = "none"', 1))


def submit(cli, tmp_path, name: str, code: str, team: str = "ada") -> int:
    result = cli("submit", "flowers", write_submission(tmp_path / "subs", name, code),
                 "--team", team, "--json")
    assert result.exit_code == 0, result.stderr
    return result.json()["id"]


def tasks_of(cli, submission: int) -> list[dict]:
    return cli("submission", "show", submission, "--json").json()["tasks"]


def test_retry_requeues_failed_tasks_clears_errors_and_scores_them_once_they_pass(flowers, cli, tmp_path):
    from datarun.store.db import open_db

    flag = tmp_path / "in-the-mood"
    # The submission looks for a file of the organiser's: only an unsandboxed host shows it.
    unsandboxed(flowers)
    moody = submit(cli, tmp_path, "moody", FAILS_UNTIL.format(flag=str(flag)))
    assert cli("train").exit_code == 1
    failed = tasks_of(cli, moody)
    assert [t["error_kind"] for t in failed] == ["fit_error", "fit_error"]
    db = open_db(flowers)
    db.execute("UPDATE tasks SET lost = 2 WHERE submission = ?", [moody])  # earlier host losses

    result = cli("retry", moody, "--json")
    assert result.exit_code == 0, result.stderr
    assert result.json() == {"schema": "datarun/retry/1", "submission_id": moody,
                             "requeued": [t["id"] for t in failed]}
    rows = db.execute("SELECT state, error_kind, error, lost, host, log, ran_from, ran_to FROM tasks "
                      "WHERE submission = ?", [moody]).fetchall()
    assert rows == [("queued", None, None, 0, None, None, None, None)] * 2

    flag.touch()
    assert cli("train").exit_code == 0
    shown = cli("submission", "show", moody, "--json").json()
    assert shown["state"] == "done"
    assert [t["attempt"] for t in shown["tasks"]] == [2, 2]
    assert 0.5 < shown["bagged"]["valid"]["accuracy"] <= 1.0


def test_retry_refuses_a_submission_without_failed_tasks_and_unknown_ids(flowers, cli, tmp_path):
    good = submit(cli, tmp_path, "good", GOOD)
    result = cli("retry", good)
    assert result.exit_code == 2
    assert result.stderr == (f"error: submission {good} has no failed or cancelled tasks to retry "
                             "(its tasks: 2 queued)\n")
    result = cli("retry", "999")
    assert result.exit_code == 2
    assert result.stderr == "error: no submission 999: `datarun submission list` shows the ids\n"
    result = cli("retry", "seven")
    assert result.exit_code == 2
    assert result.stderr == "error: a submission id is a number, got 'seven'\n"


def test_cancel_of_queued_tasks_ends_them_without_running_and_retry_queues_them_again(flowers, cli, tmp_path):
    first = submit(cli, tmp_path, "first", GOOD)
    result = cli("cancel", first, "--json")
    assert result.exit_code == 0, result.stderr
    ids = [t["id"] for t in tasks_of(cli, first)]
    assert result.json() == {"schema": "datarun/cancel/1", "submission_id": first, "cancelled": ids,
                             "queued": ids, "running": [], "host_errors": {}}
    for task in tasks_of(cli, first):
        assert (task["state"], task["error_kind"], task["error"]) == ("cancelled", "cancelled",
                                                                     "cancelled by the organiser")
        assert task["attempt"] == 0 and task["host"] is None  # never launched
    summary = cli("train", "--json").json()
    assert summary["tasks"] == 0
    again = cli("cancel", first)
    assert again.exit_code == 2
    assert again.stderr == (f"error: submission {first} has no queued or running tasks to cancel "
                            "(its tasks: 2 cancelled)\n")
    assert cli("cancel", "404").stderr == "error: no submission 404: `datarun submission list` shows the ids\n"
    # The organiser changes their mind: retry queues the cancelled tasks again, and they run.
    assert cli("retry", first, "--json").json() == {"schema": "datarun/retry/1", "submission_id": first,
                                                    "requeued": ids}
    assert [(t["state"], t["error_kind"], t["error"]) for t in tasks_of(cli, first)] == [("queued", None, None)] * 2
    assert cli("train").exit_code == 0
    assert {t["state"] for t in tasks_of(cli, first)} == {"done"}


def _wait(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"{what} did not happen within {timeout} s")


def test_cancel_kills_running_trees_on_the_host_while_train_runs_elsewhere(flowers, cli, tmp_path):
    sleeper = submit(cli, tmp_path, "sleeper", SLEEPS)
    ids = [t["id"] for t in tasks_of(cli, sleeper)]
    train = subprocess.Popen([sys.executable, "-m", "datarun", "train", "--json"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dict(os.environ))
    try:
        host_tasks = local_layout(flowers).tasks
        folders = [host_tasks / f"t{task_id}-a1" for task_id in ids]
        _wait(lambda: len(alive_named("120.0731")) == 2, 60, "both tasks asleep")
        pids = alive_named("120.0731") + alive_named("dr-sleeper")

        # While it runs, its output comes from the host.
        log = _wait(lambda: (r := cli("logs", ids[0], "--json").json())["log"] and r, 10, "output")
        assert log["source"] == "host" and log["state"] == "running"
        assert "asleep with" in log["log"]

        result = cli("cancel", sleeper, "--json")
        assert result.exit_code == 0, result.stderr
        assert result.json()["running"] == ids and result.json()["host_errors"] == {}
        alive = [pid for pid in pids if psutil.pid_exists(pid)
                 and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
        assert alive == []
        assert not any(folder.exists() for folder in folders)  # cleaned off the host
        out, _ = train.communicate(timeout=30)
    finally:
        if train.poll() is None:
            train.send_signal(signal.SIGKILL)
            train.wait()
    assert train.returncode == 1  # not every task it was asked to run is done
    assert (json.loads(out)["failed"], json.loads(out)["cancelled"]) == (0, 2)
    for task in tasks_of(cli, sleeper):
        assert (task["state"], task["error_kind"]) == ("cancelled", "cancelled")
    # The host is fine: the next submission runs.
    good = submit(cli, tmp_path, "good", GOOD)
    assert cli("train").exit_code == 0
    assert {t["state"] for t in tasks_of(cli, good)} == {"done"}


def test_logs_come_from_the_store_once_collected(flowers, cli, tmp_path):
    good = submit(cli, tmp_path, "good", GOOD)
    task = tasks_of(cli, good)[0]["id"]
    queued = cli("logs", task)
    assert queued.exit_code == 2
    assert queued.stderr == f"error: task {task} is queued: it has no output yet (`datarun train` runs it)\n"
    assert cli("train").exit_code == 0
    shutil.rmtree(local_layout(flowers).tasks, ignore_errors=True)
    result = cli("logs", task)
    assert result.exit_code == 0
    assert result.stdout == "fitting a logistic regression\n"
    data = cli("logs", task, "--json").json()
    assert data == {"schema": "datarun/task-log/1", "task_id": task, "submission_id": good,
                    "state": "done", "host": "local", "source": "store",
                    "log": "fitting a logistic regression\n", "events": [], "error_kind": None,
                    "error": None}


def test_logs_refuses_unknown_and_malformed_task_ids(flowers, cli):
    result = cli("logs", "77")
    assert result.exit_code == 2
    assert result.stderr == "error: no task 77: `datarun submission show ID` lists a submission's tasks\n"
    result = cli("logs", "t77")
    assert result.exit_code == 2
    assert result.stderr == "error: a task id is a number, got 't77'\n"
