"""The whole local path: submit, train on the embedded local host, scores, leaderboard."""

import datetime as dt
import fcntl
import json

import numpy as np
import pytest
from conftest import EXAMPLES, stop_runners

SUBS = EXAMPLES / "iris" / "submissions"


@pytest.fixture
def iris(workspace, cli):
    assert cli("problem", "add", EXAMPLES / "iris").exit_code == 0
    yield workspace
    stop_runners(workspace)


def submit(cli, name, team="ada"):
    result = cli("submit", "iris", SUBS / name, "--team", team, "--json")
    assert result.exit_code == 0, result.stderr
    return result.json()["id"]


def direct_bagged_accuracy(workspace, estimator_factory):
    """Fit the same estimator on the frozen folds in-process and bag as ramp-workflow does."""
    from sklearn.metrics import accuracy_score

    from datarun.problems.registered import data_dir, get_problem, load_fold, load_labels
    from datarun.store.db import open_db

    db = open_db(workspace)
    problem = get_problem(db, "iris")
    import pandas as pd

    folder = data_dir(workspace, problem)
    X = pd.DataFrame(np.load(folder / "X_train.npy"))  # iris: numeric, so stored as .npy
    y, _ = load_labels(workspace, problem)
    classes = np.array(problem["classes"])
    total = np.zeros((len(y), len(classes)))
    count = np.zeros(len(y))
    for fold in range(5):
        train_idx, valid_idx = load_fold(workspace, db, "iris", fold)
        model = estimator_factory().fit(X.iloc[train_idx], y[train_idx])
        proba = model.predict_proba(X.iloc[valid_idx])
        total[valid_idx] += proba
        count[valid_idx] += 1
    seen = count > 0
    bagged = total[seen] / count[seen][:, None]
    return accuracy_score(y[seen], classes[bagged.argmax(axis=1)])


def test_train_scores_measures_and_ranks(iris, cli):
    logreg = submit(cli, "logreg")
    knn = submit(cli, "knn", team="grace")
    result = cli("train", "--json")
    assert result.exit_code == 0, result.stderr
    summary = result.json()
    assert (summary["tasks"], summary["done"], summary["failed"]) == (10, 10, 0)

    shown = cli("submission", "show", str(logreg), "--json", "--private").json()
    assert shown["state"] == "done"
    for task in shown["tasks"]:
        assert task["state"] == "done" and task["host"] == "local"
        assert task["train_time"] > 0 and task["valid_time"] > 0 and task["test_time"] > 0
        assert task["cpu_time"] > 0 and task["peak_memory"] > 0  # its own memory: ~10 MB
        # When it ran, by the host's clock: as long as its wall time, within the train.
        started, finished = (dt.datetime.fromisoformat(task[key]) for key in ("started_at", "finished_at"))
        assert (finished - started).total_seconds() == pytest.approx(task["wall_time"], abs=1.0)
        assert set(task["scores"]) == {"train", "valid", "test"}
        assert task["environment"]["host"] == "local" and "sklearn" in task["environment"]

    board = cli("leaderboard", "iris", "--json").json()
    assert [row["id"] for row in board["rows"]] and {row["id"] for row in board["rows"]} == {logreg, knn}
    assert all("test" not in row for row in board["rows"])
    row = next(r for r in board["rows"] if r["id"] == logreg)
    import importlib.util

    spec = importlib.util.spec_from_file_location("logreg", SUBS / "logreg" / "estimator.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert row["score"] == pytest.approx(direct_bagged_accuracy(iris, module.get_estimator), abs=1e-12)
    assert row["cpu_time"] > 0 and row["peak_memory"] > 0

    private = cli("leaderboard", "iris", "--private", "--json").json()
    assert all(set(r["test"]) == {"accuracy", "log_loss", "roc_auc"} for r in private["rows"])

    status = cli("status", "--json").json()
    assert status["problems"]["iris"] == {"queued": 0, "running": 0, "done": 10, "failed": 0,
                                          "cancelled": 0, "submissions": 2}
    assert status["hosts"]["local"]["done"] == 10 and status["hosts"]["local"]["slots_in_use"] == 0
    # The local host's folder holds the workspace's own folder, named by its id, and the
    # shared data cache beside it.
    from datarun.executors.local import local_layout

    host = local_layout(iris).root
    assert [p.name for p in (host / "workspaces").iterdir()] == [status["workspace"]["id"]]
    assert (host / "workspaces" / status["workspace"]["id"] / "runner.json").exists()
    assert (host / "data").is_dir() and not (host / "tasks").exists()
    # One copy of the data set on this machine: the runner's is hard links to the workspace's.
    from datarun.executors.local import shares_files
    from datarun.problems.registered import get_problem
    from datarun.store.blobs import BlobStore
    from datarun.store.db import open_db

    digest = get_problem(open_db(iris), "iris")["data_hash"]
    assert shares_files(local_layout(iris).data_set(digest), BlobStore(iris.blobs_dir).tree_path(digest))

    text = cli("leaderboard", "iris").stdout
    assert "iris — public leaderboard" in text and "grace" in text


def test_failures_get_their_error_kind_and_exit_code_1(iris, cli):
    broken = submit(cli, "broken_fit")
    hog = submit(cli, "memory_hog", team="grace")
    result = cli("train")
    assert result.exit_code == 1
    assert "0 done, 10 failed of 10 tasks" in result.stderr
    broken_tasks = cli("submission", "show", str(broken), "--json").json()["tasks"]
    assert {t["error_kind"] for t in broken_tasks} == {"fit_error"}
    assert "ValueError" in broken_tasks[0]["error"]
    hog_tasks = cli("submission", "show", str(hog), "--json").json()["tasks"]
    assert {t["error_kind"] for t in hog_tasks} == {"memory_limit"}
    assert cli("leaderboard", "iris", "--json").json()["rows"] == []
    shown = cli("submission", "show", str(hog)).stdout
    assert "memory_limit" in shown


def test_train_options_lower_the_problems_limits(iris, cli):
    sub = submit(cli, "memory_hog")  # stopped at 1 GB by the problem's own limit
    result = cli("train", "--memory", "200MB", "--json")
    assert result.exit_code == 1
    tasks = cli("submission", "show", str(sub), "--json").json()["tasks"]
    assert {t["error_kind"] for t in tasks} == {"memory_limit"}
    assert all(t["error"].startswith("memory limit 200.0 MB exceeded") for t in tasks)


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "--wall-time", "soon"], "--wall-time: expected a duration"),
        (["train", "--memory", "12 parsecs"], "--memory: unknown size unit"),
        (["train", "--cpu-time", "0s"], "--cpu-time: must be more than zero"),
        (["train", "--max-attempts", "0"], "--max-attempts must be a whole number of at least 1, got 0"),
        (["dispatch", "--max-attempts", "-2"], "--max-attempts must be a whole number of at least 1, got -2"),
        (["train", "--problem", "nope"], "unknown problem 'nope'"),
        (["train", "--submission", "42"], "no submission 42"),
        (["leaderboard", "nope"], "unknown problem 'nope'"),
    ],
)
def test_bad_train_and_leaderboard_arguments(iris, cli, args, message):
    result = cli(*args)
    assert result.exit_code == 2
    assert message in result.stderr


def test_a_second_dispatcher_says_another_is_running(iris, cli):
    submit(cli, "logreg")
    with open(iris.lock_path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        result = cli("dispatch")
    assert result.exit_code == 3
    assert "another datarun dispatcher is running" in result.stderr
    status = cli("status", "--json").json()
    assert status["problems"]["iris"]["queued"] == 5


def test_dispatch_passes_collect_what_earlier_passes_launched(iris, cli):
    import time

    sub = submit(cli, "logreg")
    first = cli("dispatch", "--json").json()
    assert first["launched"] == 4  # the local host has 2 slots, and holds as many again waiting
    deadline = time.time() + 60
    while time.time() < deadline:
        report = cli("dispatch", "--json").json()
        if cli("submission", "show", str(sub), "--json").json()["state"] == "done":
            break
        time.sleep(0.2)
    assert cli("submission", "show", str(sub), "--json").json()["state"] == "done"
    assert report["host_errors"] == {}
    assert json.loads(cli("status", "--json").stdout)["problems"]["iris"]["done"] == 5


def test_contributivity_is_kept_up_to_date_after_each_scored_submission(iris, cli):
    from datarun.board.contrib import update_contributivity
    from datarun.store.db import open_db

    first = submit(cli, "logreg")
    assert cli("train").exit_code == 0
    board = cli("leaderboard", "iris", "--json").json()
    assert [row["contributivity"] for row in board["rows"]] == [1.0]
    assert board["blend"]["score"] == "accuracy" and "combined_test" not in board["blend"]
    second = submit(cli, "knn", team="grace")
    third = submit(cli, "random_forest", team="alan")
    assert cli("train").exit_code == 0
    board = cli("leaderboard", "iris", "--private", "--json").json()
    shares = {row["id"]: row["contributivity"] for row in board["rows"]}
    assert set(shares) == {first, second, third}
    assert sum(shares.values()) == pytest.approx(1.0)
    assert board["blend"]["combined_valid"] >= board["blend"]["best_single_valid"]
    assert board["blend"]["combined_test"] is not None

    # The incrementally kept blend equals a blend computed from scratch.
    db = open_db(iris)
    db.execute("DELETE FROM blends")
    update_contributivity(iris, db, "iris")
    again = cli("leaderboard", "iris", "--json").json()
    assert {row["id"]: row["contributivity"] for row in again["rows"]} == pytest.approx(shares)
