"""`datarun submit` starts the local runner ahead of training, and training uses it."""

import json

import psutil
import pytest
from conftest import EXAMPLES, stop_runners

from datarun.executors.local import local_layout

SUBS = EXAMPLES / "iris" / "submissions"


@pytest.fixture
def iris(workspace, cli, monkeypatch):
    monkeypatch.setenv("DATARUN_WARM_RUNNER", "1")
    assert cli("problem", "add", EXAMPLES / "iris").exit_code == 0
    yield workspace
    stop_runners(workspace)


def runner_pid(workspace) -> int | None:
    path = local_layout(workspace).runner_json
    if not path.exists():
        return None
    pid = json.loads(path.read_text())["pid"]
    return pid if psutil.pid_exists(pid) and "serve" in psutil.Process(pid).cmdline() else None


def test_submit_starts_the_runner_and_train_uses_it(iris, cli):
    assert runner_pid(iris) is None
    assert cli("submit", "iris", SUBS / "logreg", "--team", "ada").exit_code == 0
    pid = runner_pid(iris)
    assert pid is not None
    result = cli("train", "--json")
    assert result.exit_code == 0, result.stderr
    assert result.json()["done"] == 5
    assert runner_pid(iris) == pid  # the same process ran the tasks: no second start


def test_an_identical_resubmission_starts_nothing(iris, cli):
    assert cli("submit", "iris", SUBS / "logreg", "--team", "ada").exit_code == 0
    stop_runners(iris)
    assert runner_pid(iris) is None
    again = cli("submit", "iris", SUBS / "logreg", "--team", "ada")
    assert again.exit_code == 0 and "not run again" in again.stderr
    assert runner_pid(iris) is None


def test_the_switch_leaves_the_runner_to_training(iris, cli, monkeypatch):
    monkeypatch.setenv("DATARUN_WARM_RUNNER", "0")
    assert cli("submit", "iris", SUBS / "logreg", "--team", "ada").exit_code == 0
    assert runner_pid(iris) is None


def test_a_runner_that_cannot_start_does_not_fail_the_submit(iris, cli):
    hosts = iris.hosts_file.read_text().replace(
        "[hosts.local]", '[hosts.local]\npython = "/nonexistent/python3"', 1)
    iris.hosts_file.write_text(hosts)
    result = cli("submit", "iris", SUBS / "logreg", "--team", "ada", "--json")
    assert result.exit_code == 0, result.stderr
    assert result.json()["created"]
    assert runner_pid(iris) is None


def test_a_board_calling_submit_as_a_subprocess_is_not_held_by_the_runner(iris):
    # The runner outlives the command; it must not keep the caller's pipes open, or a web
    # board reading submit's output would wait for the runner's idle exit.
    import os
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "datarun", "submit", "iris", str(SUBS / "knn"), "--team", "ada",
         "--json"], capture_output=True, text=True, timeout=30,
        env=dict(os.environ, DATARUN_HOME=str(iris.root), DATARUN_WARM_RUNNER="1"))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["created"]
    assert runner_pid(iris) is not None


def test_isolation_user_of_earlier_versions_reads_as_the_sandbox_and_is_warmed(iris, cli):
    hosts = iris.hosts_file.read_text().replace(
        "[hosts.local]", '[hosts.local]\nisolation = "user"', 1)
    iris.hosts_file.write_text(hosts)
    assert cli("host", "list", "--json").json()["hosts"][0]["isolation"] == "sandbox"
    # The sandbox needs no root: the runner of the user who submits serves it.
    assert cli("submit", "iris", SUBS / "logreg", "--team", "ada").exit_code == 0
    assert runner_pid(iris) is not None
