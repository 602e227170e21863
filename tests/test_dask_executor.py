"""Dask hosts for real: a `dask scheduler` and two `dask worker` processes on loopback.

Nothing is mocked: datarun's Dask executor submits one Dask task per datarun task, which
runs the harness's runner on a worker (sandbox, limits, measurement), and the results
come back as bytes the dispatcher checks as it checks an SSH host's.
"""

from __future__ import annotations

import os
import threading
import time

import pytest
from conftest import EXAMPLES, stop_runners

pytest.importorskip("distributed", reason="the Dask tests need `distributed` (pip install '.[cluster]')")

from daskcluster import DaskCluster, hosts_toml  # noqa: E402

SUBS = EXAMPLES / "iris" / "submissions"
LOCAL = '[hosts.local]\nexecutor = "local"\nslots = 2\n'


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    made = DaskCluster(tmp_path_factory.mktemp("dask"), workers=2)
    yield made
    made.stop()


@pytest.fixture
def iris(workspace, cli):
    assert cli("problem", "add", EXAMPLES / "iris").exit_code == 0
    yield workspace
    stop_runners(workspace)


def use_hosts(workspace, text: str) -> None:
    workspace.hosts_file.write_text(text)


def submit(cli, name, team):
    result = cli("submit", "iris", SUBS / name, "--team", team, "--json")
    assert result.exit_code == 0, result.stderr
    return result.json()["id"]


def fold_scores(cli, submission):
    shown = cli("submission", "show", str(submission), "--json").json()
    return shown, {task["fold"]: task["scores"] for task in shown["tasks"]}


def test_iris_on_dask_gives_the_local_scores(iris, cli, cluster):
    use_hosts(iris, LOCAL)
    here = submit(cli, "logreg", "ada")
    assert cli("train", "--json").exit_code == 0
    use_hosts(iris, hosts_toml("cluster", cluster.address))
    there = submit(cli, "logreg", "grace")
    result = cli("train", "--json")
    assert result.exit_code == 0, result.stderr
    assert (result.json()["done"], result.json()["failed"]) == (5, 0)
    local_show, local_scores = fold_scores(cli, here)
    dask_show, dask_scores = fold_scores(cli, there)
    assert dask_scores == local_scores
    assert {task["host"] for task in dask_show["tasks"]} == {"cluster"}
    for task in dask_show["tasks"]:
        assert task["cpu_time"] > 0 and task["peak_memory"] > 0 and task["attempt"] == 1
        assert task["environment"]["isolation"] == "sandbox" if "isolation" in task["environment"] else True
    board = {row["id"]: row for row in cli("leaderboard", "iris", "--json").json()["rows"]}
    assert board[here]["score"] == board[there]["score"]
