"""Bad predictions at every stage where they can enter, through the CLI with real fits.

Each kind (rows summing to 0.9 or 1.3, a negative value, a value above 1, NaN, infinity,
the wrong shape) is met:

- in the harness, where a submission's predict_proba returns it: the fold fails as
  `bad_predictions` naming the first bad row and its sum;
- in what a host sends back: the harness's own result files are overwritten on the host
  after a task finished and before the dispatcher collects them (a host that skipped the
  check, or lied), and the organiser's check records `bad_predictions` all the same;
- in stored results (predictions an older datarun stored without the check): blending,
  `train`, `dispatch` and `leaderboard` carry on for every other submission.

The kit is iris on two folds (eight for the planted results), scored on the local host.
"""

import csv
import io
import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import EXAMPLES, stop_runners
from test_operator import write_submission

RULE = ("class probabilities must be finite, within [0, 1] and sum to 1 per row "
        "(within 1e-05)")

KIT = """
name = "flowers"
title = "Iris"
kind = "classification"

[data]
train = "data/train.csv"
test = "data/test.csv"
target = "species"

[cv]
strategy = "stratified-kfold"
n_splits = {folds}
seed = 1

[workflow]
kind = "estimator"

[scores]
names = {scores}

[limits]
wall_time = "60s"
memory = "2GB"
"""

WRAPPED = """
import numpy as np
from sklearn.linear_model import LogisticRegression

class Wrapped(LogisticRegression):
    def predict_proba(self, X):
        proba = super().predict_proba(X)
        {change}
        return proba

def get_estimator():
    return Wrapped(max_iter=500, C={c})
"""

# What predict_proba returns, and what the harness says of it.
HARNESS_CASES = {
    "sum-0.9": ("proba = proba * 0.9", f"train predictions, row 0 sums to 0.9; {RULE}"),
    "sum-1.3": ("proba = proba * 0.7 + 0.2", f"train predictions, row 0 sums to 1.3; {RULE}"),
    "negative": ("proba = np.tile([-0.2, 0.6, 0.6], (len(X), 1))",
                 f"train predictions, row 0 holds -0.2, outside [0, 1] (the row sums to 1); {RULE}"),
    "above-one": ("proba = np.tile([1.5, -0.25, -0.25], (len(X), 1))",
                  f"train predictions, row 0 holds 1.5, outside [0, 1] (the row sums to 1); {RULE}"),
    "nan": ("proba[3, 1] = np.nan", f"train predictions, row 3 holds nan (the row sums to nan); {RULE}"),
    "inf": ("proba[5, 2] = np.inf", f"train predictions, row 5 holds inf (the row sums to inf); {RULE}"),
    "shape": ("proba = proba[:, :2]", "predict_proba returned 2 columns but classes_ has 3"),
}


def kit(folder: Path, folds: int = 2, scores=("log_loss", "accuracy", "roc_auc")) -> Path:
    path = folder / "flowers"
    if not path.exists():
        import shutil

        shutil.copytree(EXAMPLES / "iris" / "data", path / "data")
    (path / "problem.toml").write_text(KIT.format(folds=folds, scores=json.dumps(list(scores))))
    return path


def submit(cli, folder: Path, name: str, code: str, team: str) -> int:
    result = cli("submit", "flowers", write_submission(folder / "subs", name, code), "--team", team,
                 "--json")
    assert result.exit_code == 0, result.stderr
    return result.json()["id"]


def wrapped(change: str = "pass", c: float = 1.0) -> str:
    return WRAPPED.format(change=change, c=c)


def show(cli, sid: int) -> dict:
    return cli("submission", "show", sid, "--json").json()


def board(cli, *args) -> dict:
    result = cli("leaderboard", "flowers", "--json", *args)
    assert result.exit_code == 0, result.stderr
    return result.json()


@pytest.fixture
def flowers(workspace, tmp_path):
    yield workspace
    stop_runners(workspace)


def test_the_harness_fails_each_kind_of_bad_prediction_with_its_first_bad_row(flowers, cli, tmp_path):
    assert cli("problem", "add", kit(tmp_path)).exit_code == 0
    bad = {name: submit(cli, tmp_path, name, wrapped(change), name)
           for name, (change, _) in HARNESS_CASES.items()}
    good = submit(cli, tmp_path, "good", wrapped(), "good")
    single = submit(cli, tmp_path, "float32", wrapped("proba = proba.astype(np.float32)"), "single")
    result = cli("train", "--json")
    assert result.exit_code == 1, result.stderr  # some tasks failed; nothing else went wrong
    assert result.json()["failed"] == 2 * len(HARNESS_CASES)
    for name, sid in bad.items():
        for task in show(cli, sid)["tasks"]:
            assert (task["state"], task["error_kind"]) == ("failed", "bad_predictions"), name
            assert task["error"] == HARNESS_CASES[name][1], name
    assert show(cli, single)["state"] == "done"  # float32 probabilities pass the tolerance
    shown = board(cli)
    assert {row["id"] for row in shown["rows"]} == {good, single}  # no fold of the others scored
    assert sum(row["contributivity"] for row in shown["rows"]) == pytest.approx(1.0)
    assert shown["blend"]["combined_valid"] is not None


# --- what a host sends back --------------------------------------------------------------

BLOCKS = """
import os, time
from sklearn.linear_model import LogisticRegression

class Waits(LogisticRegression):
    def fit(self, X, y):
        deadline = time.time() + 120
        while not os.path.exists({flag!r}) and time.time() < deadline:
            time.sleep(0.02)
        return super().fit(X, y)

def get_estimator():
    return Waits(max_iter=500)
"""


def _plant_train(row: int, values) -> tuple:
    def change(train, test):
        train = train.copy()
        train[row] = values
        return train, test
    return change


def _plant_test(row: int, values) -> tuple:
    def change(train, test):
        test = test.copy()
        test[row] = values
        return train, test
    return change


# fold: (what the host sends instead of the harness's predictions, the organiser's message)
PLANTED = {
    0: (_plant_train(4, [0.3, 0.3, 0.3]), f"y_pred_train.npy, row 4 sums to 0.9; {RULE}"),
    1: (_plant_train(7, [0.5, 0.4, 0.4]), f"y_pred_train.npy, row 7 sums to 1.3; {RULE}"),
    2: (_plant_train(2, [-0.2, 0.6, 0.6]),
        f"y_pred_train.npy, row 2 holds -0.2, outside [0, 1] (the row sums to 1); {RULE}"),
    3: (_plant_test(1, [1.5, -0.25, -0.25]),
        f"y_pred_test.npy, row 1 holds 1.5, outside [0, 1] (the row sums to 1); {RULE}"),
    4: (_plant_test(0, [np.nan, 0.5, 0.5]),
        f"y_pred_test.npy, row 0 holds nan (the row sums to nan); {RULE}"),
    5: (_plant_train(9, [np.inf, 0.0, 0.0]),
        f"y_pred_train.npy, row 9 holds inf (the row sums to inf); {RULE}"),
    6: (lambda train, test: (train[:, :2], test),
        "y_pred_train.npy has shape (120, 2), expected (120, 3)"),
}


def _save(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(".planted.npy")
    np.save(tmp, array)
    os.replace(tmp, path)


def test_predictions_a_host_sends_are_checked_on_the_organisers_machine(flowers, cli, tmp_path):
    # The planted submission waits for a file of the test's: only an unsandboxed host shows it.
    flowers.hosts_file.write_text('[hosts.local]\nexecutor = "local"\nslots = 8\nthreads = 1\n'
                                  'isolation = "none"\n')
    assert cli("problem", "add", kit(tmp_path, folds=8)).exit_code == 0
    flag = tmp_path / "go"
    planted = submit(cli, tmp_path, "planted", BLOCKS.format(flag=str(flag)), "mallory")
    clean = submit(cli, tmp_path, "clean", wrapped(), "ada")
    first = cli("dispatch", "--json")
    assert first.exit_code == 0, first.stderr
    tasks = show(cli, planted)["tasks"]
    assert {t["state"] for t in tasks} == {"running"}, "the planted tasks must wait for the flag"
    flag.touch()
    from datarun.executors.local import local_layout

    results = local_layout(flowers).tasks  # the host's folder for this workspace's tasks
    deadline = time.time() + 120
    folders = {t["fold"]: results / f"t{t['id']}-a{t['attempt']}" for t in tasks}
    while not all((f / "result.json").exists() for f in folders.values()):
        assert time.time() < deadline, "the host did not finish the planted tasks"
        time.sleep(0.05)
    for fold, (change, _) in PLANTED.items():
        folder = folders[fold]
        train, test = change(np.load(folder / "y_pred_train.npy"), np.load(folder / "y_pred_test.npy"))
        _save(folder / "y_pred_train.npy", train)
        _save(folder / "y_pred_test.npy", test)
    deadline = time.time() + 120
    while {show(cli, s)["state"] for s in (planted, clean)} - {"done", "failed"}:
        assert time.time() < deadline, "dispatch did not collect every task"
        assert cli("dispatch").exit_code == 0
    by_fold = {t["fold"]: t for t in show(cli, planted)["tasks"]}
    for fold, (_, message) in PLANTED.items():
        task = by_fold[fold]
        assert (task["state"], task["error_kind"]) == ("failed", "bad_predictions"), fold
        assert task["error"] == f"{message} (checked on the organiser's machine; sent by host local)"
        assert task["train_time"] is not None  # what the host measured is kept
    assert by_fold[7]["state"] == "done"  # the fold left as the harness wrote it
    # The clean submission is scored, blended and ranked; the planted one is on the board
    # as partially failed: its scored fold, unranked, not blended.
    rows = {row["id"]: row for row in board(cli)["rows"]}
    assert rows[clean]["rank"] == 1 and rows[clean]["contributivity"] == pytest.approx(1.0)
    partial = rows[planted]
    assert (partial["state"], partial["folds"], partial["folds_scored"]) == ("partial", 8, 1)
    assert partial["rank"] is None and partial["score"] is None
    assert partial["contributivity"] is None
    assert partial["valid_mean"]["log_loss"] is not None


# --- stored predictions ------------------------------------------------------------------

# What an older datarun may have stored for one fold's training rows.
STORED = {
    "sum-0.9": lambda p: p * 0.9,
    "sum-1.3": lambda p: p * 0.7 + 0.2,
    "negative": lambda p: np.tile([-0.2, 0.6, 0.6], (len(p), 1)),
    "above-one": lambda p: p * 1.5,
    "nan": lambda p: np.where(np.arange(p.size).reshape(p.shape) == 4, np.nan, p),
    "inf": lambda p: np.where(np.arange(p.size).reshape(p.shape) == 4, np.inf, p),
    "shape": lambda p: p[:, :2],
}


def _tamper(workspace, sid: int, change) -> None:
    from datarun.store.blobs import BlobStore
    from datarun.store.db import open_db

    db = open_db(workspace)
    store = BlobStore(workspace.blobs_dir)
    task, digest = db.execute("SELECT id, pred_train FROM tasks WHERE submission = ? AND fold = 0",
                              [sid]).fetchone()
    bad = store.put_array(change(store.get_array(digest)))
    with db.conn:
        db.execute("UPDATE tasks SET pred_train = ? WHERE id = ?", [bad, task])


@pytest.mark.parametrize("official", ["log_loss", "roc_auc"])
def test_bad_stored_predictions_stop_no_train_dispatch_or_leaderboard(flowers, cli, tmp_path, official):
    scores = [official] + [s for s in ("log_loss", "accuracy", "roc_auc") if s != official]
    assert cli("problem", "add", kit(tmp_path, scores=scores)).exit_code == 0
    stored = {name: submit(cli, tmp_path, name, wrapped(c=0.1 * (i + 1)), name)
              for i, name in enumerate(STORED)}
    good = submit(cli, tmp_path, "good", wrapped(c=5.0), "good")
    assert cli("train").exit_code == 0
    for name, sid in stored.items():
        _tamper(flowers, sid, STORED[name])
    # Each kind is what an older datarun stored; a new submission is scored and blended.
    late = submit(cli, tmp_path, "late", wrapped(c=20.0), "late")
    result = cli("train", "--json")
    assert result.exit_code == 0, result.stderr
    assert cli("dispatch").exit_code == 0
    shown = board(cli, "--private")
    rows = {row["id"]: row for row in shown["rows"]}
    assert shown["blend_current"] and shown["blend"]["combined_valid"] is not None
    for name, sid in stored.items():
        assert rows[sid]["contributivity"] is None, name  # left out of the blend
    assert rows[good]["contributivity"] + rows[late]["contributivity"] == pytest.approx(1.0)
    public = cli("leaderboard", "flowers", "--csv")
    assert public.exit_code == 0, public.stderr
    assert len(list(csv.DictReader(io.StringIO(public.stdout)))) == len(STORED) + 2
    table = cli("leaderboard", "flowers")
    assert table.exit_code == 0 and "blended" in table.stdout


# --- RAMP kits ---------------------------------------------------------------------------

RAMP_CLASSIFIER = """
from sklearn.linear_model import LogisticRegression


class Classifier:
    def fit(self, X, y):
        self.clf = LogisticRegression(max_iter=500, C={c})
        self.clf.fit(X, y)

    def predict_proba(self, X):
        return self.clf.predict_proba(X) * {factor}
"""


@pytest.mark.filterwarnings("ignore:The y_prob values do not sum to one")
def test_a_ramp_kit_keeps_ramp_tests_rule_and_nothing_downstream_raises(flowers, cli, tmp_path):
    """ramp-test takes whatever the kit's Predictions accept: rows summing to 1.5 are trained
    and kept. The kit's log-likelihood (official here) raises on them; that score is
    recorded as undefined and the submission is never chosen by the blend."""
    import shutil

    kit_dir = tmp_path / "iris_nll"
    shutil.copytree(Path(__file__).parent / "ramp_kits" / "iris_classifier", kit_dir,
                    ignore=shutil.ignore_patterns("training_output", "__pycache__"))
    problem = (kit_dir / "problem.py").read_text()
    nll = "    rw.score_types.NegativeLogLikelihood(name='nll'),\n"
    problem = problem.replace(nll, "").replace("score_types = [\n", "score_types = [\n" + nll)
    (kit_dir / "problem.py").write_text(problem)
    assert cli("problem", "add", kit_dir).exit_code == 0
    ids = {}
    for name, c, factor in (("good", 1.0, 1.0), ("other", 0.1, 1.0), ("scaled", 1.0, 1.5),
                            ("short", 0.3, 0.9)):
        folder = tmp_path / "subs" / name
        folder.mkdir(parents=True)
        (folder / "classifier.py").write_text(RAMP_CLASSIFIER.format(c=c, factor=factor))
        result = cli("submit", "iris_nll", folder, "--team", name, "--json")
        assert result.exit_code == 0, result.stderr
        ids[name] = result.json()["id"]
    result = cli("train")
    assert result.exit_code == 0, result.stderr
    scaled = show(cli, ids["scaled"])
    assert scaled["state"] == "done"
    assert {t["scores"]["valid"]["nll"] for t in scaled["tasks"]} == {None}  # the kit's score raised
    assert {t["scores"]["valid"]["acc"] is not None for t in scaled["tasks"]} == {True}
    shown = cli("leaderboard", "iris_nll", "--private", "--json")
    assert shown.exit_code == 0, shown.stderr
    rows = {row["id"]: row for row in shown.json()["rows"]}
    assert rows[ids["scaled"]]["contributivity"] == 0  # its own score is undefined on every fold
    assert sum(row["contributivity"] for row in rows.values()) == pytest.approx(1.0)
    assert cli("leaderboard", "iris_nll").exit_code == 0
