"""Registering kits: what is stored, that folds are frozen, and that bad kits store nothing."""

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.model_selection import KFold, StratifiedKFold

from datarun.errors import NotFound, UsageError
from datarun.problems.registered import (
    data_dir,
    describe_problem,
    get_problem,
    list_problems,
    load_fold,
    load_labels,
)
from datarun.problems.registry import DATA_FILES, register_problem
from datarun.store.blobs import BlobStore
from datarun.store.db import open_db

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

BASE_TOML = """\
name = "toy"
kind = "classification"

[data]
train = "data/train.csv"
target = "label"
{data_extra}

[cv]
strategy = "stratified-kfold"
n_splits = 3
seed = 1

[scores]
names = ["accuracy", "log_loss"]
"""


def toy_frame(n=30, seed=0, labels=("a", "b", "c")):
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "id": np.arange(n),
        "x1": rng.normal(size=n) * 1e-3,
        "x2": rng.normal(size=n) * 1e7,
        "label": [labels[i % len(labels)] for i in range(n)],
    })


def write_kit(folder: Path, toml: str | None = None, files: dict | None = None,
              data_extra: str = "") -> Path:
    """A kit folder: problem.toml plus data files (DataFrames written as CSV/parquet, str as-is)."""
    folder.mkdir(parents=True, exist_ok=True)
    if toml is None:
        toml = BASE_TOML.format(data_extra=data_extra)
    (folder / "problem.toml").write_text(toml)
    files = {"data/train.csv": toy_frame()} if files is None else files
    for name, content in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        elif isinstance(content, pd.DataFrame):
            if name.endswith(".parquet"):
                content.to_parquet(path, index=False)
            else:
                content.to_csv(path, index=False)
        else:
            path.write_text(content)
    return folder


@pytest.fixture
def db(workspace):
    database = open_db(workspace)
    yield database
    database.conn.close()


def assert_nothing_stored(workspace, db):
    assert db.execute("SELECT COUNT(*) FROM problems").fetchone()[0] == 0
    assert db.execute("SELECT COUNT(*) FROM folds").fetchone()[0] == 0
    assert not any(workspace.blobs_dir.rglob("*"))
    assert not (workspace.state_dir / "trees").exists() or not any(
        (workspace.state_dir / "trees").iterdir())


def shipped_table(folder: Path, name: str) -> pd.DataFrame:
    """A feature table of a data tree as the harness reads it (.npy or .csv)."""
    from datarun.remote.child import DataSet

    return DataSet(folder).X_train if name == "X_train" else DataSet(folder).X_test


def test_registering_the_iris_kit_stores_data_labels_and_frozen_folds(workspace, db):
    summary = register_problem(workspace, db, EXAMPLES / "iris")
    assert summary["name"] == "iris" and summary["kind"] == "classification"
    assert (summary["n_train"], summary["n_test"], summary["n_features"]) == (120, 30, 4)
    assert summary["classes"] == ["setosa", "versicolor", "virginica"]
    assert summary["target_summary"]["train"] == {"setosa": 40, "versicolor": 40, "virginica": 40}
    assert [s["name"] for s in summary["scores"]] == ["accuracy", "log_loss", "roc_auc"]
    assert summary["scores"][0]["official"] and summary["scores"][1]["lower_is_better"]
    assert summary["limits"] == {"wall_time": 60.0, "cpu_time": None, "memory": 1_000_000_000}

    problem = get_problem(db, "iris")
    folder = data_dir(workspace, problem)
    assert sorted(p.name for p in folder.iterdir()) == sorted(DATA_FILES)
    meta = json.loads((folder / "meta.json").read_text())
    assert meta == {"kind": "classification", "classes": ["setosa", "versicolor", "virginica"],
                    "target": "species", "n_train": 120, "n_test": 30,
                    "columns": ["sepal_length", "sepal_width", "petal_length", "petal_width"]}
    y_train, y_test = load_labels(workspace, problem)
    assert y_train.dtype.kind == "U" and y_test.dtype.kind == "U"
    np.testing.assert_array_equal(np.load(folder / "y_train.npy", allow_pickle=False), y_train)
    source_test = pd.read_csv(EXAMPLES / "iris" / "data" / "test.csv")
    np.testing.assert_array_equal(y_test, source_test["species"].to_numpy(dtype=str))
    # The shipped test features are the source's, without the labels.
    shipped_test = shipped_table(folder, "X_test")
    pd.testing.assert_frame_equal(shipped_test, source_test.drop(columns="species"))

    expected = StratifiedKFold(5, shuffle=True, random_state=42).split(np.zeros(120), y_train)
    for fold, (train, valid) in enumerate(expected):
        got_train, got_valid = load_fold(workspace, db, "iris", fold)
        assert got_train.dtype == np.int64
        np.testing.assert_array_equal(got_train, train)
        np.testing.assert_array_equal(got_valid, valid)
    assert [f["n_valid"] for f in summary["folds"]] == [24] * 5


def test_a_kit_without_a_test_file_holds_out_test_size_of_its_rows(workspace, db):
    register_problem(workspace, db, EXAMPLES / "diabetes")
    problem = get_problem(db, "diabetes")
    assert (problem["n_train"], problem["n_test"]) == (353, 89)
    y_train, y_test = load_labels(workspace, problem)
    assert y_train.dtype == np.float64
    source = pd.read_csv(EXAMPLES / "diabetes" / "data" / "train.csv")
    assert sorted(np.concatenate([y_train, y_test])) == sorted(source["progression"])
    folder = data_dir(workspace, problem)
    X = pd.concat([shipped_table(folder, "X_train"), shipped_table(folder, "X_test")])
    assert len(X.merge(source.drop(columns="progression"))) == 442
    train, valid = load_fold(workspace, db, "diabetes", 0)
    exp_train, exp_valid = next(KFold(5, shuffle=True, random_state=42).split(np.zeros(353)))
    np.testing.assert_array_equal(valid, exp_valid)
    assert problem["spec"]["data"]["test_size"] == 0.2


def test_features_round_trip_bit_for_bit_and_integer_classes_stay_integers(workspace, db, tmp_path):
    frame = toy_frame(labels=(3, 7))
    frame["x3"] = np.random.default_rng(5).random(30) / 3
    kit = write_kit(tmp_path / "kit", files={"data/train.csv": frame}, data_extra="drop = [\"id\"]")
    # Read the source as registration does, then compare the shipped values bit for bit.
    source = pd.read_csv(kit / "data" / "train.csv")
    summary = register_problem(workspace, db, kit)
    assert summary["classes"] == [3, 7]
    assert summary["columns"] == ["x1", "x2", "x3"]
    problem = get_problem(db, "toy")
    y_train, y_test = load_labels(workspace, problem)
    assert y_train.dtype == np.int64
    folder = data_dir(workspace, problem)
    assert not (folder / "X_train.csv").exists()  # numeric features travel as .npy
    shipped = pd.concat([shipped_table(folder, name) for name in ("X_train", "X_test")])
    merged = source.drop(columns=["id", "label"]).to_numpy()
    for row in shipped.to_numpy():
        assert any(np.array_equal(row.view(np.int64), other.view(np.int64)) for other in merged)


def test_parquet_kits_with_a_test_file_and_dropped_columns_register(workspace, db, tmp_path):
    toml = BASE_TOML.format(data_extra='test = "data/test.parquet"\ndrop = ["id"]').replace(
        "data/train.csv", "data/train.parquet")
    kit = write_kit(tmp_path / "kit", toml, {"data/train.parquet": toy_frame(),
                                             "data/test.parquet": toy_frame(9, seed=1)})
    summary = register_problem(workspace, db, kit)
    assert (summary["n_train"], summary["n_test"], summary["n_features"]) == (30, 9, 2)
    assert summary["columns"] == ["x1", "x2"]


def test_parquet_without_pyarrow_names_the_extra_to_install(workspace, db, tmp_path, monkeypatch):
    toml = BASE_TOML.format(data_extra="").replace("data/train.csv", "data/train.parquet")
    kit = write_kit(tmp_path / "kit", toml, {"data/train.parquet": toy_frame()})
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    with pytest.raises(UsageError, match=r"needs pyarrow: pip install 'datarun\[parquet\]'"):
        register_problem(workspace, db, kit)
    assert_nothing_stored(workspace, db)


def test_a_time_series_problem_tests_on_its_last_rows(workspace, db, tmp_path):
    frame = pd.DataFrame({"t": np.arange(20.0), "y": np.arange(20.0) * 2})
    toml = """name = "ts"\nkind = "regression"\n[data]\ntrain = "d.csv"\ntarget = "y"\n
test_size = 0.25\n[cv]\nstrategy = "time-series"\nn_splits = 3\n[scores]\nnames = ["mae"]\n"""
    kit = write_kit(tmp_path / "kit", toml, {"d.csv": frame})
    register_problem(workspace, db, kit)
    y_train, y_test = load_labels(workspace, get_problem(db, "ts"))
    assert y_test.tolist() == [30.0, 32.0, 34.0, 36.0, 38.0]
    train, valid = load_fold(workspace, db, "ts", 2)
    assert train.max() < valid.min()


def test_a_problem_registered_twice_is_refused_and_the_first_kept(workspace, db):
    register_problem(workspace, db, EXAMPLES / "iris")
    with pytest.raises(UsageError, match="problem 'iris' is already registered"):
        register_problem(workspace, db, EXAMPLES / "iris")
    assert [p["name"] for p in list_problems(db)] == ["iris"]
    assert list_problems(db)[0]["n_folds"] == 5


def test_unknown_problems_and_folds_are_not_found(workspace, db):
    with pytest.raises(NotFound, match="unknown problem 'nope' \\(none registered yet"):
        get_problem(db, "nope")
    register_problem(workspace, db, EXAMPLES / "iris")
    with pytest.raises(NotFound, match="unknown problem 'nope' \\(registered: iris\\)"):
        describe_problem(workspace, db, "nope")
    with pytest.raises(NotFound, match="problem 'iris' has no fold 5 \\(folds 0 to 4\\)"):
        load_fold(workspace, db, "iris", 5)


BASE = BASE_TOML.format(data_extra="")
BAD_KITS = {
    "syntax error": (BASE.replace('n_splits = 3', 'n_splits = = 3'), None,
                     r"TOML syntax error: .*line 11"),
    "unknown top-level key": ('colour = "red"\n' + BASE, None,
                              r"unknown key 'colour' in the top level"),
    "unknown cv key": (BASE.replace("seed = 1", "seed = 1\nn_split = 4"), None,
                       r"unknown key 'n_split' in \[cv\]"),
    "unknown limits key": (BASE + '[limits]\nmemry = "1GB"\n', None,
                           r"unknown key 'memry' in \[limits\]"),
    "missing target": (BASE.replace('target = "label"', ""), None,
                       r"missing required key 'target' in \[data\]"),
    "missing name": (BASE.replace('name = "toy"', ""), None, r"missing required key 'name'"),
    "bad name": (BASE.replace('"toy"', '"Toy Set"'), None,
                 r"name 'Toy Set' may hold only lower-case letters"),
    "bad kind": (BASE.replace('"classification"', '"ranking"'), None,
                 r"kind must be one of classification, regression, got 'ranking'"),
    "target not in data": (BASE.replace('"label"', '"species"'), None,
                           r"target column 'species' not found \(columns: id, x1, x2, label\)"),
    "unknown score": (BASE.replace('"log_loss"', '"logloss"'), None, r"unknown score 'logloss'"),
    "score of the other kind": (BASE.replace('"log_loss"', '"rmse"'), None,
                                r"score 'rmse' is for regression problems"),
    "unknown strategy": (BASE.replace('"stratified-kfold"', '"group-kfold"'), None,
                         r"unknown \[cv\] strategy 'group-kfold'"),
    "unknown workflow": (BASE + '[workflow]\nkind = "ts_feature_extractor"\n', None,
                         r"unknown workflow 'ts_feature_extractor' \(known: estimator\)"),
    "too many splits for a class": (BASE.replace("n_splits = 3", "n_splits = 9"), None,
                                    r"class 'a' has 8 in the training data: lower \[cv\] n_splits"),
    "empty data file": (BASE, {"data/train.csv": ""}, r"file train.csv is empty"),
    "header-only data file": (BASE, {"data/train.csv": "id,x1,label\n"},
                              r"file train.csv is empty: it has no rows"),
    "missing data file": (BASE, {}, r"\[data\] train file .*data/train.csv does not exist"),
    "test columns differ": (
        BASE.replace('target = "label"', 'target = "label"\ntest = "data/test.csv"'),
        {"data/train.csv": toy_frame(), "data/test.csv": toy_frame().drop(columns="x2")},
        r"data/test.csv: columns differ from data/train.csv: missing \['x2'\]"),
    "malformed memory": (BASE + '[limits]\nmemory = "lots"\n', None,
                         r"\[limits\] memory: expected a size like '512MB'"),
    "malformed wall time": (BASE + '[limits]\nwall_time = "10 fortnights"\n', None,
                            r"\[limits\] wall_time: unknown time unit 'fortnights'"),
    "stratified regression": (BASE.replace('"classification"', '"regression"')
                              .replace('["accuracy", "log_loss"]', '["rmse"]'), None,
                              r"strategy 'stratified-kfold' needs classes"),
    "regression on text": (BASE.replace('"classification"', '"regression"')
                           .replace('"stratified-kfold"', '"kfold"')
                           .replace('["accuracy", "log_loss"]', '["rmse"]'), None,
                           r"target column 'label' must be numeric for a regression problem"),
    "drop of a missing column": (BASE.replace('target = "label"', 'target = "label"\ndrop = ["zz"]'),
                                 None, r"\[data\] drop names column 'zz', which the data lacks"),
    "test and test_size": (BASE.replace('target = "label"',
                                        'target = "label"\ntest = "t.csv"\ntest_size = 0.1'),
                           None, r"\[data\] has both test and test_size"),
    "path out of the kit": (BASE.replace('"data/train.csv"', '"../train.csv"'), None,
                            r"\[data\] train must be a path inside the kit"),
    "one class": (BASE, {"data/train.csv": toy_frame(labels=("a",))},
                  r"the target has one class only; classification needs two or more"),
    "scores not a list": (BASE.replace('["accuracy", "log_loss"]', '"accuracy"'), None,
                          r"\[scores\] names must be a non-empty list"),
    "bad n_splits": (BASE.replace("n_splits = 3", "n_splits = 1"), None,
                     r"\[cv\] n_splits must be a whole number >= 2, got 1"),
    "title not a string": (BASE.replace('kind =', 'title = 3\nkind ='), None,
                           r"title must be a non-empty string, got 3"),
    "test_size out of range": (BASE.replace('target = "label"', 'target = "label"\ntest_size = 1.5'),
                               None, r"\[data\] test_size must be a number between 0 and 1, got 1.5"),
    "cv not a table": ("cv = 3\n" + BASE.replace('[cv]\nstrategy = "stratified-kfold"\nn_splits = 3\nseed = 1\n', ""),
                       None, r"'cv' must be a table"),
    "drop not a list": (BASE.replace('target = "label"', 'target = "label"\ndrop = "id"'), None,
                        r"\[data\] drop must be a list of column names"),
    "drop of the target": (BASE.replace('target = "label"', 'target = "label"\ndrop = ["label"]'),
                           None, r"\[data\] drop lists the target column 'label'"),
    "a score twice": (BASE.replace('["accuracy", "log_loss"]', '["accuracy", "accuracy"]'), None,
                      r"\[scores\] names lists a score twice"),
    "ragged csv": (BASE, {"data/train.csv": "id,label\n1,a\n2,b,c,d\n"},
                   r"file train.csv is not readable CSV: Error tokenizing data"),
    "csv not utf-8": (BASE, {"data/train.csv": b"id,label\n1,\xff\xfe\n"},
                      r"file train.csv is not readable CSV"),
    "garbage parquet": (BASE.replace("data/train.csv", "data/train.parquet"),
                        {"data/train.parquet": "not parquet"},
                        r"file train.parquet is not readable parquet"),
    "unsupported format": (BASE.replace("data/train.csv", "data/train.xlsx"),
                           {"data/train.xlsx": "x"}, r"file train.xlsx: use a .csv or .parquet file"),
    "missing labels": (BASE, {"data/train.csv": "id,x,label\n1,2.0,a\n2,3.0,\n"},
                       r"target column 'label' has missing values"),
    "fractional classes": (BASE, {"data/train.csv": toy_frame(labels=(0.5, 1.5))},
                           r"target column 'label' holds fractional numbers"),
    "no features left": (BASE.replace('target = "label"', 'target = "label"\ndrop = ["id", "x1", "x2"]'),
                         None, r"no feature columns left after the target and \[data\] drop"),
    "test columns reordered": (
        BASE.replace('target = "label"', 'target = "label"\ntest = "data/test.csv"'),
        {"data/train.csv": toy_frame(), "data/test.csv": toy_frame()[["x1", "id", "x2", "label"]]},
        r"columns differ from data/train.csv: same names, other order"),
    "test columns extra": (
        BASE.replace('target = "label"', 'target = "label"\ntest = "data/test.csv"'),
        {"data/train.csv": toy_frame(), "data/test.csv": toy_frame().assign(z=1)},
        r"columns differ from data/train.csv: extra \['z'\]"),
}


@pytest.mark.parametrize("case", sorted(BAD_KITS))
def test_a_bad_kit_is_refused_with_a_one_line_message_and_nothing_stored(case, workspace, db, tmp_path):
    toml, files, message = BAD_KITS[case]
    kit = write_kit(tmp_path / "kit", toml, files)
    with pytest.raises(UsageError, match=message) as info:
        register_problem(workspace, db, kit)
    assert "\n" not in str(info.value)
    assert_nothing_stored(workspace, db)


def test_a_folder_without_problem_toml_is_refused(workspace, db, tmp_path):
    (tmp_path / "kit").mkdir()
    with pytest.raises(UsageError, match=r"has no problem.toml"):
        register_problem(workspace, db, tmp_path / "kit")
    with pytest.raises(UsageError, match=r"kit folder .*missing does not exist"):
        register_problem(workspace, db, tmp_path / "missing")
    assert_nothing_stored(workspace, db)


def test_a_problem_toml_that_is_not_utf8_is_refused(workspace, db, tmp_path):
    kit = write_kit(tmp_path / "kit")
    (kit / "problem.toml").write_bytes(b'name = "\xff"\n')
    with pytest.raises(UsageError, match=r"problem.toml: not UTF-8 text"):
        register_problem(workspace, db, kit)
    assert_nothing_stored(workspace, db)


def test_a_test_class_unseen_in_training_is_refused(workspace, db, tmp_path):
    toml = BASE.replace('target = "label"', 'target = "label"\ntest = "data/test.csv"')
    kit = write_kit(tmp_path / "kit", toml, {"data/train.csv": toy_frame(),
                                             "data/test.csv": toy_frame(6, labels=("a", "z"))})
    with pytest.raises(UsageError, match="the test data has class 'z'"):
        register_problem(workspace, db, kit)
    assert_nothing_stored(workspace, db)


def test_registration_stores_no_test_labels_in_the_shipped_tree(workspace, db):
    register_problem(workspace, db, EXAMPLES / "iris")
    problem = get_problem(db, "iris")
    store = BlobStore(workspace.blobs_dir)
    assert problem["labels_hash"] != problem["data_hash"]
    assert not (data_dir(workspace, problem) / "y_test.npy").exists()
    assert (store.tree_path(problem["labels_hash"]) / "y_test.npy").exists()
    assert "species" not in shipped_table(data_dir(workspace, problem), "X_test").columns
    assert not any(b"setosa" in path.read_bytes() for path in data_dir(workspace, problem).iterdir()
                   if path.name != "meta.json")


def test_load_kit_fills_in_the_documented_defaults(tmp_path):
    from datarun.problems.kits import load_kit

    toml = 'name = "r"\nkind = "regression"\n[data]\ntrain = "d.csv"\ntarget = "y"\n' \
           '[scores]\nnames = ["r2"]\n'
    spec = load_kit(write_kit(tmp_path / "kit", toml, {}))
    assert (spec.title, spec.cv_strategy, spec.n_splits, spec.seed) == ("r", "kfold", 5, 42)
    assert spec.test is None and spec.test_size == 0.2 and spec.workflow == "estimator"
    assert spec.limits.to_dict() == {"wall_time": 600.0, "cpu_time": None, "memory": 4_000_000_000}


def test_limits_are_parsed_with_units(tmp_path):
    from datarun.problems.kits import load_kit

    toml = BASE + '[limits]\nwall_time = "1.5m"\ncpu_time = "90s"\nmemory = "512MiB"\n'
    spec = load_kit(write_kit(tmp_path / "kit", toml))
    assert spec.limits.to_dict() == {"wall_time": 90.0, "cpu_time": 90.0, "memory": 512 * 1024**2}
    assert spec.to_dict()["limits"] == spec.limits.to_dict()


def test_shuffle_split_takes_its_validation_share_from_cv_test_size(workspace, db, tmp_path):
    toml = BASE.replace('"stratified-kfold"', '"stratified-shuffle-split"').replace(
        "seed = 1", "seed = 1\ntest_size = 0.5")
    summary = register_problem(workspace, db, write_kit(tmp_path / "kit", toml))
    assert [(f["n_train"], f["n_valid"]) for f in summary["folds"]] == [(12, 12)] * 3


def test_cv_test_size_is_refused_for_kfold(tmp_path):
    from datarun.problems.kits import load_kit

    toml = BASE.replace("seed = 1", "seed = 1\ntest_size = 0.5")
    with pytest.raises(UsageError, match=r"\[cv\] test_size applies only to shuffle-split"):
        load_kit(write_kit(tmp_path / "kit", toml))
