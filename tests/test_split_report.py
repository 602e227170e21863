"""`problem add` says which test split and which folds it made, with their seeds, and does
what it says: per kind and CV strategy (the README's `problem.toml` section)."""

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import EXAMPLES

KIT = """
name = "{name}"
kind = "{kind}"

[data]
train = "data/train.csv"
target = "y"
{data}

[cv]
strategy = "{strategy}"
n_splits = 3
seed = 7

[scores]
names = ["{score}"]
"""


def table(n: int = 60) -> pd.DataFrame:
    rows = np.arange(n)
    return pd.DataFrame({"t": rows.astype(float), "x": np.sin(rows),
                         "y": [("a", "b", "c")[i % 3] for i in rows]})


def kit(folder: Path, name: str, kind: str, strategy: str, data: str = "",
        frame: pd.DataFrame | None = None) -> Path:
    path = folder / name
    (path / "data").mkdir(parents=True)
    frame = table() if frame is None else frame
    if kind == "regression":
        frame = frame.assign(y=frame["t"] * 2.0)
    frame.to_csv(path / "data" / "train.csv", index=False)
    score = "accuracy" if kind == "classification" else "mae"
    (path / "problem.toml").write_text(KIT.format(name=name, kind=kind, strategy=strategy,
                                                  data=data, score=score))
    return path


def held_out_labels(workspace, name: str) -> np.ndarray:
    from datarun.problems.registered import get_problem, load_labels
    from datarun.store.db import open_db

    return load_labels(workspace, get_problem(open_db(workspace), name))[1]


def added(cli, path: Path) -> tuple[dict, str]:
    human = cli("problem", "add", path)
    assert human.exit_code == 0, human.stderr
    return cli("problem", "show", path.name, "--json").json(), human.stderr + human.stdout


def test_classification_without_a_test_file_holds_out_a_stratified_seeded_share(workspace, cli, tmp_path):
    info, text = added(cli, kit(tmp_path, "classes", "classification", "stratified-kfold"))
    assert info["split"]["test"] == {
        "method": "stratified-shuffle", "file": None, "test_size": 0.2, "seed": 7,
        "text": "20% of the rows, stratified by class, shuffled with seed 7"}
    assert info["split"]["folds"]["seed"] == 7
    assert ("test split: 20% of the rows, stratified by class, shuffled with seed 7; "
            "folds: stratified-kfold, 3 splits, shuffled with seed 7") in text
    y_test = held_out_labels(workspace, "classes")
    assert sorted(np.unique(y_test, return_counts=True)[1].tolist()) == [4, 4, 4]  # stratified


def test_regression_without_a_test_file_holds_out_a_plain_seeded_shuffle(workspace, cli, tmp_path):
    info, text = added(cli, kit(tmp_path, "values", "regression", "kfold"))
    assert (info["split"]["test"]["method"], info["split"]["test"]["seed"]) == ("shuffle", 7)
    assert "test split: 20% of the rows, shuffled (not stratified) with seed 7" in text
    y_test = held_out_labels(workspace, "values")
    from sklearn.model_selection import ShuffleSplit

    _, expected = next(ShuffleSplit(n_splits=1, test_size=0.2, random_state=7).split(np.zeros((60, 1))))
    assert y_test.tolist() == (np.sort(expected) * 2.0).tolist()  # the seed is the one said


@pytest.mark.parametrize("kind", ["classification", "regression"])
def test_a_time_series_problem_holds_out_its_last_rows_without_a_seed(workspace, cli, tmp_path, kind):
    info, text = added(cli, kit(tmp_path, "series", kind, "time-series"))
    assert info["split"]["test"] == {
        "method": "last-rows", "file": None, "test_size": 0.2, "seed": None,
        "text": "the last 20% of the rows (time-series: in order, no seed)"}
    assert info["split"]["folds"] == {"strategy": "time-series", "n_splits": 3, "test_size": None,
                                      "seed": None, "text": "time-series, 3 splits, in order (no seed)"}
    assert "folds: time-series, 3 splits, in order (no seed)" in text
    expected = table()["y"].to_numpy()[48:] if kind == "classification" else np.arange(48, 60) * 2.0
    assert held_out_labels(workspace, "series").tolist() == expected.tolist()


def test_a_test_file_and_a_ramp_kit_say_where_their_test_rows_come_from(workspace, cli, tmp_path):
    info = cli("problem", "add", EXAMPLES / "iris", "--json").json()
    assert info["split"]["test"]["method"] == "file"
    assert info["split"]["test"]["text"] == "data/test.csv (a file of its own)"
    assert info["split"]["folds"]["text"] == "stratified-kfold, 5 splits, shuffled with seed 42"
    ramp = tmp_path / "iris_classifier"
    shutil.copytree(Path(__file__).parent / "ramp_kits" / "iris_classifier", ramp,
                    ignore=shutil.ignore_patterns("training_output", "__pycache__"))
    info = cli("problem", "add", ramp, "--json").json()
    assert info["split"]["test"]["text"] == "the kit's get_test_data"
    assert info["split"]["folds"] == {"strategy": "get_cv", "n_splits": 3, "test_size": None,
                                      "seed": None, "text": "the kit's get_cv, 3 folds"}


def test_a_test_class_the_training_rows_lack_is_refused_at_problem_add(workspace, cli, tmp_path):
    path = kit(tmp_path, "unseen", "classification", "kfold", data='test = "data/test.csv"')
    test = table(9).assign(y=["a", "b", "d"] * 3)
    test.to_csv(path / "data" / "test.csv", index=False)
    result = cli("problem", "add", path)
    assert result.exit_code == 2
    assert result.stderr == "error: the test data has class 'd', which the training data lacks\n"
    assert cli("problem", "list", "--json").json()["problems"] == []
