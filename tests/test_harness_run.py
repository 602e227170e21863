"""The harness runs real scikit-learn submissions and reports each way they can fail.

One runner serves the whole module: the tasks are shipped together and run two at a
time, as on a host, and each test reads its own task's result.json.
"""

import json

import numpy as np
import pytest
from harness_helpers import (
    DATA_DIABETES,
    DATA_IRIS,
    LOGISTIC,
    RIDGE,
    stop_runner,
    submit,
    wait_finished,
    write_dataset,
)

from datarun.remote import HARNESS_VERSION, ops

DROPS_A_CLASS = """
from sklearn.linear_model import LogisticRegression

class WithoutVirginica:
    def fit(self, X, y):
        keep = y != "virginica"
        self.model = LogisticRegression(max_iter=500).fit(X[keep], y[keep])
        self.classes_ = self.model.classes_
        return self

    def predict_proba(self, X):
        return self.model.predict_proba(X)

def get_estimator():
    return WithoutVirginica()
"""

SYNTAX_ERROR = """
def get_estimator(:
    return None
"""

NO_GET_ESTIMATOR = """
from sklearn.linear_model import Ridge

def make_estimator():
    return Ridge()
"""

FIT_FAILS = """
def helper(X):
    raise ValueError("no fit today: " + str(len(X)) + " rows")

class Broken:
    def fit(self, X, y):
        helper(X)

def get_estimator():
    return Broken()
"""

PREDICT_FAILS = """
from sklearn.linear_model import LogisticRegression

class Blind(LogisticRegression):
    def predict_proba(self, X):
        raise RuntimeError("cannot see the test rows")

def get_estimator():
    return Blind(max_iter=500)
"""

NAN_PREDICTIONS = """
import numpy as np
from sklearn.linear_model import LogisticRegression

class Nan(LogisticRegression):
    def predict_proba(self, X):
        proba = super().predict_proba(X)
        proba[0, 0] = np.nan
        return proba

def get_estimator():
    return Nan(max_iter=500)
"""

WRONG_SHAPE = """
import numpy as np
from sklearn.linear_model import Ridge

class Twice(Ridge):
    def predict(self, X):
        return np.column_stack([super().predict(X)] * 2)

def get_estimator():
    return Twice()
"""

FLOOD = """
from sklearn.linear_model import Ridge

class Chatty(Ridge):
    def fit(self, X, y):
        print("FIRST LINE")
        for i in range(100_000):
            print("noise line", i, "x" * 40)
        print("LAST LINE")
        return super().fit(X, y)

def get_estimator():
    return Chatty()
"""

TASKS = {
    "clf": (LOGISTIC, "classification", {}),
    "reg": (RIDGE, "regression", {}),
    "drop-class": (DROPS_A_CLASS, "classification", {}),
    "syntax": (SYNTAX_ERROR, "classification", {}),
    "no-get": (NO_GET_ESTIMATOR, "regression", {}),
    "fit-fails": (FIT_FAILS, "regression", {}),
    "predict-fails": (PREDICT_FAILS, "classification", {}),
    "nan": (NAN_PREDICTIONS, "classification", {}),
    "shape": (WRONG_SHAPE, "regression", {}),
    "flood": (FLOOD, "regression", {"max_output": 20_000}),
}


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    """Every task of this module run by one runner: {key: (result, task folder)}."""
    workdir = tmp_path_factory.mktemp("host") / "work"
    metas = {"classification": write_dataset(workdir, DATA_IRIS, "classification"),
             "regression": write_dataset(workdir, DATA_DIABETES, "regression")}
    digests = {"classification": DATA_IRIS, "regression": DATA_DIABETES}
    for key, (code, kind, options) in TASKS.items():
        submit(workdir, key, code, metas[kind], digests[kind], **options)
    runner = ops.start_runner(workdir, slots=2, threads=1, idle=30)
    try:
        results = wait_finished(workdir, list(TASKS), timeout=120)
    finally:
        stop_runner(runner["pid"])
    return {key: (result, workdir / "tasks" / key) for key, result in results.items()}, metas, workdir


def _result(batch, key):
    return batch[0][key]


def test_classification_predicts_probabilities_for_every_training_row_in_class_order(batch):
    result, folder = _result(batch, "clf")
    meta = batch[1]["classification"]
    assert result["state"] == "done", result["error"]
    assert result["error_kind"] is None and result["error"] is None
    train = np.load(folder / result["predictions"]["train"], allow_pickle=False)
    test = np.load(folder / result["predictions"]["test"], allow_pickle=False)
    assert train.shape == (meta["n_train"], 3) and test.shape == (meta["n_test"], 3)
    assert train.dtype == np.float64 and test.dtype == np.float64
    np.testing.assert_allclose(train.sum(axis=1), 1.0)
    # Columns follow task.json's classes: the argmax names the true class most of the time.
    y = np.load(batch[2] / "data" / DATA_IRIS / "y_train.npy", allow_pickle=False)
    predicted = np.array(meta["classes"])[train.argmax(axis=1)]
    assert (predicted == y).mean() > 0.9


def test_every_timing_and_measure_is_recorded(batch):
    result, folder = _result(batch, "clf")
    for name in ("train_time", "valid_time", "test_time", "wall_time", "cpu_time"):
        assert result[name] > 0, name
    assert result["wall_time"] >= result["train_time"]
    # The task's own memory: what it shares with the runner's imports is not counted.
    assert 0 < result["peak_memory"] < 60 * 1024**2
    assert result["measured_by"] in ("cgroup-v1", "cgroup-v2", "procfs")
    assert result["finished_at"] >= result["started_at"]
    assert result["environment"]["harness"] == HARNESS_VERSION
    assert result["environment"]["sklearn"] and result["environment"]["numpy"]
    assert not (folder / "status.json").exists()


def test_regression_predicts_one_value_per_row(batch):
    result, folder = _result(batch, "reg")
    meta = batch[1]["regression"]
    assert result["state"] == "done", result["error"]
    train = np.load(folder / "y_pred_train.npy", allow_pickle=False)
    test = np.load(folder / "y_pred_test.npy", allow_pickle=False)
    assert train.shape == (meta["n_train"],) and test.shape == (meta["n_test"],)
    assert train.dtype == np.float64 and np.isfinite(train).all()
    assert result["train_time"] > 0 and result["valid_time"] > 0 and result["test_time"] > 0


def test_a_class_the_estimator_never_saw_gets_a_column_of_zeros(batch):
    result, folder = _result(batch, "drop-class")
    assert result["state"] == "done", result["error"]
    train = np.load(folder / "y_pred_train.npy", allow_pickle=False)
    assert train.shape[1] == 3
    virginica = batch[1]["classification"]["classes"].index("virginica")
    assert (train[:, virginica] == 0).all()
    np.testing.assert_allclose(train.sum(axis=1), 1.0)


@pytest.mark.parametrize("key, kind, needles", [
    ("syntax", "import_error", ["SyntaxError", "estimator.py", "line 2"]),
    ("no-get", "import_error", ["estimator.py does not define get_estimator()"]),
    ("fit-fails", "fit_error", ["ValueError: no fit today", "in helper", "Traceback"]),
    ("predict-fails", "predict_error", ["RuntimeError: cannot see the test rows", "predict_proba"]),
    ("nan", "bad_predictions", ["train predictions, row 0 holds nan (the row sums to nan); class "
                                "probabilities must be finite, within [0, 1] and sum to 1 per row"]),
    ("shape", "bad_predictions", ["predict returned shape", "expected ("]),
])
def test_each_failure_has_its_kind_and_the_tail_of_its_traceback(batch, key, kind, needles):
    result, folder = _result(batch, key)
    assert result["state"] == "failed"
    assert result["error_kind"] == kind
    for needle in needles:
        assert needle in result["error"], (needle, result["error"])
    assert len(result["error"].encode()) <= 4100
    assert result["predictions"] is None
    assert not list(folder.glob("y_pred_*.npy"))


def test_an_output_flood_is_capped_keeping_its_head_and_tail(batch):
    result, folder = _result(batch, "flood")
    assert result["state"] == "done", result["error"]
    log = (folder / "output.log").read_text()
    assert len(log) < 21_000
    assert log.startswith("FIRST LINE")
    assert log.rstrip().endswith("LAST LINE")
    assert "bytes of output skipped" in log
    assert ops.log(batch[2], "flood")["log"] == log


def test_pack_gathers_finished_results_and_cleanup_removes_them(batch, tmp_path):
    import tarfile

    workdir = batch[2]
    out = ops.pack(workdir, tmp_path / "out.tar", ["clf", "syntax", "unknown"])
    assert out["packed"] == ["clf", "syntax"] and out["missing"] == ["unknown"]
    with tarfile.open(tmp_path / "out.tar") as tar:
        names = set(tar.getnames())
        packed = json.load(tar.extractfile("clf/result.json"))
    assert {"clf/result.json", "clf/y_pred_train.npy", "clf/y_pred_test.npy", "clf/output.log",
            "syntax/result.json"} <= names
    assert not any("idx" in name or "estimator.py" in name for name in names)
    assert packed["state"] == "done"
    assert ops.cleanup(workdir, ["reg", "unknown"]) == {"removed": ["reg"], "running": []}
    assert not (workdir / "tasks" / "reg").exists()
    assert ops.poll(workdir, ["reg"])["tasks"]["reg"]["state"] == "missing"
