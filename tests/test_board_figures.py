"""What a board shows, through the CLI with real scikit-learn fits on the local host.

- every figure an event's board shows (ranks, contributivity, blended and best single
  scores) comes from that event's visible submissions only;
- ranks go to rows with an official score only, ties share a rank (1, 2, 2, 4), and a
  partially failed submission is on the board as such, unranked;
- a fold whose official score is undefined for everyone gives no contributivity to anyone.
"""

import csv
import io
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import stop_runners
from test_bad_predictions import kit, wrapped
from test_operator import write_submission

from datarun.board.leaderboard import competition_ranks

FAR = "2999-01-01"


@pytest.fixture
def flowers(workspace):
    yield workspace
    stop_runners(workspace)


def submit(cli, folder: Path, name: str, code: str, team: str, event: str | None = None,
           problem: str = "flowers") -> int:
    args = ["submit", problem, write_submission(folder / "subs", f"{team}-{name}", code),
            "--team", team, "--json"]
    result = cli(*args, *(["--event", event] if event else []))
    assert result.exit_code == 0, result.stderr
    return result.json()["id"]


def board(cli, *args, problem: str = "flowers") -> dict:
    result = cli("leaderboard", problem, "--json", *args)
    assert result.exit_code == 0, result.stderr
    return result.json()


def fold_scores(cli, sid: int, score: str) -> list[float | None]:
    tasks = cli("submission", "show", sid, "--json", "--private").json()["tasks"]
    return [t["scores"].get("valid", {}).get(score) for t in sorted(tasks, key=lambda t: t["fold"])]


def best_single(cli, ids: list[int], score: str, lower: bool) -> float:
    """The mean over folds of the best submission's own valid score: what a board's blend says."""
    per_fold = np.array([fold_scores(cli, sid, score) for sid in ids], dtype=float)
    defined = ~np.isnan(per_fold).all(axis=0)  # folds where someone's score is defined
    per_fold = per_fold[:, defined]
    best = np.nanmin(per_fold, axis=0) if lower else np.nanmax(per_fold, axis=0)
    return float(np.mean(best))


KNN = """
from sklearn.neighbors import KNeighborsClassifier

def get_estimator():
    return KNeighborsClassifier(n_neighbors={k})
"""

TREE = """
from sklearn.tree import DecisionTreeClassifier

def get_estimator():
    return DecisionTreeClassifier(max_depth={depth}, random_state=0)
"""


# --- events -------------------------------------------------------------------------------


@pytest.fixture
def events(flowers, cli, tmp_path):
    assert cli("problem", "add", kit(tmp_path)).exit_code == 0  # log_loss official
    assert cli("event", "add", "hid", "--problem", "flowers", "--public-opens", FAR).exit_code == 0
    assert cli("event", "add", "pub", "--problem", "flowers").exit_code == 0
    ids = {
        "hidden": submit(cli, tmp_path, "strong", wrapped(c=20.0), "eve", "hid"),
        "knn": submit(cli, tmp_path, "knn", KNN.format(k=15), "ada", "pub"),
        "weak": submit(cli, tmp_path, "weak", wrapped(c=0.05), "grace", "pub"),
        "tree": submit(cli, tmp_path, "tree", TREE.format(depth=2), "alan", "pub"),
        "plain": submit(cli, tmp_path, "plain", wrapped(c=1.0), "bob"),  # the default event
    }
    result = cli("train")
    assert result.exit_code == 0, result.stderr
    return ids


def test_an_event_board_blends_that_events_submissions_only(events, cli):
    pub = [events["knn"], events["weak"], events["tree"]]
    shown = board(cli, "--event", "pub")
    assert {row["id"] for row in shown["rows"]} == set(pub)
    assert sum(row["contributivity"] for row in shown["rows"]) == pytest.approx(1.0)
    assert shown["blend"]["best_single_valid"] == pytest.approx(
        best_single(cli, pub, "log_loss", True), rel=1e-12)
    assert shown["blend"]["combined_valid"] <= shown["blend"]["best_single_valid"]
    # The hidden event's submission is better than all of them: had it leaked into this
    # board, its best single would be the hidden one's.
    everyone = board(cli, "--private")
    assert everyone["blend"]["best_single_valid"] < shown["blend"]["best_single_valid"]
    assert everyone["blend"]["best_single_valid"] == pytest.approx(
        best_single(cli, list(events.values()), "log_loss", True), rel=1e-12)
    table = cli("leaderboard", "flowers", "--event", "pub").stdout
    assert f"best single {shown['blend']['best_single_valid']:.4f}" in table
    assert f"best single {everyone['blend']['best_single_valid']:.4f}" not in table
    # The organisers' view of the same event shows the same figures.
    private = board(cli, "--event", "pub", "--private")
    assert private["blend"]["best_single_valid"] == shown["blend"]["best_single_valid"]
    assert ({r["id"]: r["contributivity"] for r in private["rows"]}
            == {r["id"]: r["contributivity"] for r in shown["rows"]})


def test_the_public_problem_board_blends_the_visible_submissions_only(events, cli):
    visible = [events["knn"], events["weak"], events["tree"], events["plain"]]
    shown = board(cli)
    rows = {row["id"]: row for row in shown["rows"]}
    assert rows[events["hidden"]]["contributivity"] is None and rows[events["hidden"]]["rank"] is None
    assert sum(rows[sid]["contributivity"] for sid in visible) == pytest.approx(1.0)
    assert shown["blend"]["best_single_valid"] == pytest.approx(
        best_single(cli, visible, "log_loss", True), rel=1e-12)
    hidden_board = board(cli, "--event", "hid")
    assert hidden_board["blend"] is None
    assert [(r["rank"], r["score"], r["contributivity"]) for r in hidden_board["rows"]] == [
        (None, None, None)]
    # Once the hidden event's scores are public, the public board is everyone's.
    from datarun.store.db import open_db

    db = open_db(_workspace(cli))
    with db.conn:
        db.execute("UPDATE events SET public_opens = ? WHERE name = 'hid'", [time.time() - 1])
    public = board(cli)
    private = board(cli, "--private")
    assert public["blend"]["best_single_valid"] == private["blend"]["best_single_valid"]
    assert ({r["id"]: r["contributivity"] for r in public["rows"]}
            == {r["id"]: r["contributivity"] for r in private["rows"]})
    assert cli("dispatch").exit_code == 0
    scopes = {row[0] for row in db.execute("SELECT scope FROM blends")}
    assert scopes == {"*", "hid", "pub", "flowers"}  # the public view's own blend is gone


def _workspace(cli):
    from datarun.store.workspace import find_workspace

    return find_workspace()


def test_figures_of_another_set_are_never_shown_and_dispatch_brings_them_up_to_date(events, cli):
    before = board(cli, "--event", "pub")
    from datarun.store.db import open_db

    db = open_db(_workspace(cli))
    with db.conn:  # as after the migration that dropped the old blends
        db.execute("DELETE FROM blends")
        db.execute("DELETE FROM contributivity")
    result = cli("leaderboard", "flowers", "--event", "pub", "--json")
    stale = result.json()
    assert stale["blend"] is None and not stale["blend_current"]
    assert {row["contributivity"] for row in stale["rows"]} == {None}
    assert "not up to date for these submissions: the next `datarun dispatch`" in result.stderr
    assert cli("dispatch").exit_code == 0
    after = board(cli, "--event", "pub")
    assert after["blend_current"] and after["blend"] == before["blend"]
    assert after["rows"] == before["rows"]


# --- ranks --------------------------------------------------------------------------------


def test_competition_ranks_share_a_rank_and_skip_the_next():
    assert competition_ranks([0.9, 0.8, 0.8, 0.7], lower_is_better=False) == [1, 2, 2, 4]
    assert competition_ranks([0.2, 0.1, 0.2, 0.2, 0.3], lower_is_better=True) == [2, 1, 2, 2, 5]
    assert competition_ranks([], lower_is_better=True) == []


FAILS_ON_ONE_FOLD = """
from sklearn.linear_model import LogisticRegression

class Picky(LogisticRegression):
    def fit(self, X, y):
        if 0 not in X.index:
            raise ValueError("row 0 is missing")
        return super().fit(X, y)

def get_estimator():
    return Picky(max_iter=500)
"""


def test_ties_share_a_rank_and_a_partially_failed_submission_is_shown_unranked(flowers, cli, tmp_path):
    assert cli("problem", "add", kit(tmp_path, scores=["accuracy", "log_loss"])).exit_code == 0
    best = submit(cli, tmp_path, "lr", wrapped(c=1.0), "ada")
    twin = submit(cli, tmp_path, "lr", wrapped(c=1.0), "bob")  # the same code, the same scores
    worse = submit(cli, tmp_path, "weak", TREE.format(depth=1), "grace")
    partial = submit(cli, tmp_path, "picky", FAILS_ON_ONE_FOLD, "alan")
    assert cli("train").exit_code == 1  # one fold failed
    shown = board(cli)
    ranks = [(row["id"], row["rank"]) for row in shown["rows"]]
    assert ranks == [(best, 1), (twin, 1), (worse, 3), (partial, None)]
    row = shown["rows"][-1]
    assert (row["state"], row["folds"], row["folds_scored"]) == ("partial", 2, 1)
    assert row["score"] is None and row["contributivity"] is None
    assert row["valid_mean"]["accuracy"] is not None  # its scored fold
    assert sum(r["contributivity"] for r in shown["rows"][:3]) == pytest.approx(1.0)
    flat = list(csv.DictReader(io.StringIO(cli("leaderboard", "flowers", "--csv").stdout)))
    assert [(r["rank"], r["state"], r["folds_scored"]) for r in flat] == [
        ("1", "scored", "2"), ("1", "scored", "2"), ("3", "scored", "2"), ("", "partial", "1")]
    table = cli("leaderboard", "flowers").stdout
    line = next(line for line in table.splitlines() if "picky" in line)
    assert line.split("│")[1].strip() == "-" and "1/2" in line


# --- undefined official scores ----------------------------------------------------------

SERIES = """
name = "series"
kind = "classification"

[data]
train = "data/train.csv"
target = "y"
test_size = 0.2

[cv]
strategy = "time-series"
n_splits = 4

[scores]
names = ["roc_auc", "accuracy", "log_loss"]

[limits]
wall_time = "60s"
memory = "2GB"
"""

DUMMY = """
from sklearn.dummy import DummyClassifier

def get_estimator():
    return DummyClassifier(strategy="prior")
"""


def series_kit(folder: Path, rare_until: int) -> Path:
    """150 rows in time order; class c appears only among the first `rare_until` rows.

    With time-series folds on the first 120 rows, validation rows are 24-47, 48-71, 72-95
    and 96-119: roc_auc (one-vs-rest over every class) is undefined on the folds whose
    validation rows hold no c."""
    rng = np.random.default_rng(0)
    rows = np.arange(150)
    y = np.where((rows < rare_until) & (rows % 3 == 2), "c", np.where(rows % 2 == 0, "a", "b"))
    signal = {"a": 0.0, "b": 1.0, "c": 2.0}
    x = np.array([signal[label] for label in y]) + rng.normal(scale=0.8, size=150)
    path = folder / "series"
    (path / "data").mkdir(parents=True)
    pd.DataFrame({"x": x, "z": rng.normal(size=150), "y": y}).to_csv(path / "data" / "train.csv",
                                                                       index=False)
    (path / "problem.toml").write_text(SERIES)
    return path


def test_rows_without_an_official_score_are_not_ranked(flowers, cli, tmp_path):
    assert cli("problem", "add", series_kit(tmp_path, rare_until=12)).exit_code == 0
    ids = [submit(cli, tmp_path, name, code, team, problem="series") for name, code, team in (
        ("dummy", DUMMY, "ada"), ("lr", wrapped(), "bob"), ("knn", KNN.format(k=7), "eve"),
        ("tree", TREE.format(depth=3), "alan"), ("weak", wrapped(c=0.01), "grace"))]
    assert cli("train").exit_code == 0
    shown = board(cli, problem="series")
    assert [row["id"] for row in shown["rows"]] == ids  # by id, after no ranked row
    assert {(row["rank"], row["score"]) for row in shown["rows"]} == {(None, None)}
    assert {row["valid"]["accuracy"] is not None for row in shown["rows"]} == {True}
    # No fold has an official score for anyone: no contributivity, no blended score.
    assert {row["contributivity"] for row in shown["rows"]} == {None}
    assert shown["blend"]["combined_valid"] is None and shown["blend_current"]
    flat = list(csv.DictReader(io.StringIO(cli("leaderboard", "series", "--csv").stdout)))
    assert {(r["rank"], r["score"], r["contributivity"]) for r in flat} == {("", "", "")}
    table = cli("leaderboard", "series").stdout
    assert [line.split("│")[1].strip() for line in table.splitlines()
            if line.startswith("│")] == ["-"] * 5
    assert "blended" not in table


def test_a_fold_where_the_official_score_is_undefined_gives_no_contributivity(flowers, cli, tmp_path):
    assert cli("problem", "add", series_kit(tmp_path, rare_until=51)).exit_code == 0
    dummy = submit(cli, tmp_path, "dummy", DUMMY, "ada", problem="series")  # the worst, first
    others = [submit(cli, tmp_path, name, code, team, problem="series") for name, code, team in (
        ("lr", wrapped(), "bob"), ("knn", KNN.format(k=7), "eve"), ("tree", TREE.format(depth=3), "alan"))]
    assert cli("train").exit_code == 0
    assert [s is None for s in fold_scores(cli, dummy, "roc_auc")] == [False, False, True, True]
    shown = board(cli, problem="series")
    shares = {row["id"]: row["contributivity"] for row in shown["rows"]}
    # ramp-blend gives each undefined fold to the first submission: 50 % for the dummy.
    assert shares[dummy] == 0
    assert sum(shares[sid] for sid in others) == pytest.approx(1.0)
    assert shown["blend"]["best_single_valid"] == pytest.approx(
        best_single(cli, [dummy, *others], "roc_auc", False), rel=1e-12)
    assert all(row["rank"] is not None for row in shown["rows"])  # bagged roc_auc is defined


# --- the blended score, against ramp-workflow ------------------------------------------

NOISY = """
name = "noisy"
kind = "classification"

[data]
train = "data/train.csv"
test = "data/test.csv"
target = "y"

[cv]
strategy = "stratified-kfold"
n_splits = 3
seed = 3

[scores]
names = ["log_loss", "accuracy"]

[limits]
wall_time = "60s"
memory = "2GB"
"""


def noisy_kit(folder: Path) -> Path:
    from sklearn.datasets import make_classification

    X, y = make_classification(n_samples=400, n_features=6, n_informative=4, n_classes=3,
                               flip_y=0.15, random_state=1)
    frame = pd.DataFrame(X, columns=[f"f{i}" for i in range(6)]).assign(y=[f"k{v}" for v in y])
    path = folder / "noisy"
    (path / "data").mkdir(parents=True)
    frame[:300].to_csv(path / "data" / "train.csv", index=False)
    frame[300:].to_csv(path / "data" / "test.csv", index=False)
    (path / "problem.toml").write_text(NOISY)
    return path


FOREST = """
from sklearn.ensemble import ExtraTreesClassifier

def get_estimator():
    return ExtraTreesClassifier(n_estimators={n}, random_state={seed})
"""


def test_the_blended_score_is_ramp_blends_where_ensembles_give_the_true_class_zero(flowers, cli, tmp_path):
    import contextlib

    from rampwf.prediction_types import make_multiclass
    from rampwf.score_types import NegativeLogLikelihood
    from rampwf.utils.combine import blend_on_fold
    from sklearn.metrics import log_loss

    from datarun.problems.registered import get_problem, load_fold, load_labels
    from datarun.store.blobs import BlobStore
    from datarun.store.db import open_db

    assert cli("problem", "add", noisy_kit(tmp_path)).exit_code == 0
    ids = [submit(cli, tmp_path, name, code, name, problem="noisy") for name, code in (
        ("tree", TREE.format(depth="None")), ("knn3", KNN.format(k=3)), ("knn5", KNN.format(k=5)),
        ("forest", FOREST.format(n=4, seed=0)), ("forest2", FOREST.format(n=3, seed=1)))]
    assert cli("train").exit_code == 0
    shown = board(cli, "--private", problem="noisy")
    workspace = _workspace(cli)
    db = open_db(workspace)
    problem = get_problem(db, "noisy")
    y_train, _ = load_labels(workspace, problem)
    store = BlobStore(workspace.blobs_dir)
    Predictions = make_multiclass(label_names=problem["classes"])
    score = NegativeLogLikelihood()
    shares, combined, singles, raw_means = np.zeros(len(ids)), [], [], []
    for fold in range(3):
        valid = load_fold(workspace, db, "noisy", fold)[1]
        preds = []
        for sid in ids:
            digest = db.execute("SELECT pred_train FROM tasks WHERE submission = ? AND fold = ?",
                                [sid, fold]).fetchone()[0]
            preds.append(store.get_array(digest)[valid])
        truth = Predictions(y_true=y_train[valid])
        candidates = [Predictions(y_pred=p) for p in preds]
        with contextlib.redirect_stdout(io.StringIO()):
            members = [int(m) for m in blend_on_fold(candidates, truth, score)]
        np.add.at(shares, members, 1 / len(members) / 3)
        combined.append(score.score_function(truth, Predictions.combine(candidates, members)))
        singles.append(score.score_function(truth, candidates[members[0]]))
        mean = np.mean([preds[m] for m in members], axis=0)
        raw_means.append(log_loss(y_train[valid], mean, labels=problem["classes"]))
        true_class = np.array([problem["classes"].index(v) for v in y_train[valid]])
        if fold == 0:
            zero = mean[np.arange(len(valid)), true_class] == 0
    assert zero.any(), "the ensemble must give some true class exactly zero"
    got = {row["id"]: row["contributivity"] for row in shown["rows"]}
    assert [got[sid] for sid in ids] == pytest.approx(shares.tolist(), abs=1e-12)
    assert shown["blend"]["combined_valid"] == pytest.approx(np.mean(combined), rel=1e-9)
    assert shown["blend"]["best_single_valid"] == pytest.approx(np.mean(singles), rel=1e-9)
    # Averaging the raw probabilities, as datarun did, gives another number.
    assert abs(np.mean(raw_means) - np.mean(combined)) > 1e-3
    text = cli("leaderboard", "noisy").stdout
    assert f"blended log_loss (valid, mean over folds): {np.mean(combined):.4f}" in text
