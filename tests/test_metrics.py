"""datarun.remote.scoring.metrics against sklearn.metrics, on random inputs and on the edge cases where
a score is undefined or an input is refused."""

import math

import numpy as np
import pytest
from sklearn import metrics as sk

from datarun.remote.scoring import metrics


def proba_of(rng, n_rows, n_classes, ties=False):
    proba = rng.random((n_rows, n_classes)) + 0.01
    if ties:  # few distinct values: many tied scores for roc_auc, argmax ties
        proba = np.round(proba * 3) + 0.5
    return proba / proba.sum(axis=1, keepdims=True)


def sklearn_scores(y, proba, n):
    labels = np.arange(n)
    predicted = proba.argmax(axis=1)
    scores = {
        "accuracy": sk.accuracy_score(y, predicted),
        "balanced_accuracy": sk.balanced_accuracy_score(y, predicted),
        "f1_macro": sk.f1_score(y, predicted, average="macro", zero_division=0),
        "log_loss": sk.log_loss(y, proba, labels=labels),
    }
    if n == 2:
        scores["roc_auc"] = sk.roc_auc_score(y, proba[:, 1])
    else:
        scores["roc_auc"] = sk.roc_auc_score(y, proba, multi_class="ovr", average="macro",
                                             labels=labels)
    return scores


def ours(y, proba, n):
    return {name: getattr(metrics, name)(y, proba, n)
            for name in ("accuracy", "balanced_accuracy", "f1_macro", "log_loss", "roc_auc")}


def assert_same(got: dict, expected: dict):
    for name, value in expected.items():
        if math.isnan(value):
            assert math.isnan(got[name]), name
        else:
            assert got[name] == pytest.approx(value, abs=1e-12), name


@pytest.mark.filterwarnings("ignore::UserWarning")  # sklearn: undefined scores, missing classes
@pytest.mark.parametrize("seed", range(40))
def test_classification_scores_equal_sklearn_on_random_inputs(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 6))
    rows = int(rng.integers(2, 80))
    y = rng.integers(0, n, size=rows)
    if seed % 4 == 0:  # a class absent from y, as in a small fold
        y = np.where(y == n - 1, 0, y)
    proba = proba_of(rng, rows, n, ties=seed % 3 == 0)
    assert_same(ours(y, proba, n), sklearn_scores(y, proba, n))


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_roc_auc_is_undefined_when_one_class_is_present():
    rng = np.random.default_rng(1)
    y = np.zeros(10, dtype=int)
    assert math.isnan(metrics.roc_auc(y, proba_of(rng, 10, 2), 2))
    assert math.isnan(sk.roc_auc_score(y, proba_of(rng, 10, 2)[:, 1]))
    assert math.isnan(metrics.roc_auc(y, proba_of(rng, 10, 3), 3))


def test_inputs_sklearn_refuses_are_refused():
    y = np.array([0, 1, 2, 1])
    not_probabilities = np.array([[0.2, 0.2, 0.2]] * 4)  # rows sum to 0.6
    with pytest.raises(ValueError):
        sk.roc_auc_score(y, not_probabilities, multi_class="ovr", labels=[0, 1, 2])
    with pytest.raises(ValueError, match="sum to one"):
        metrics.roc_auc(y, not_probabilities, 3)
    above_one = np.array([[1.5, 0.0, -0.5]] * 4)
    with pytest.raises(ValueError):
        sk.log_loss(y, above_one, labels=[0, 1, 2])
    with pytest.raises(ValueError, match=r"outside \[0, 1\]"):
        metrics.log_loss(y, above_one, 3)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_log_loss_clips_certain_wrong_answers_like_sklearn():
    y = np.array([0, 1])
    proba = np.array([[0.0, 1.0], [1.0, 0.0]])
    assert metrics.log_loss(y, proba, 2) == pytest.approx(sk.log_loss(y, proba, labels=[0, 1]))


@pytest.mark.parametrize("seed", range(20))
def test_regression_scores_equal_sklearn_on_random_inputs(seed):
    rng = np.random.default_rng(seed)
    rows = int(rng.integers(2, 100))
    y = rng.normal(size=rows) * 10.0 ** rng.integers(-3, 4)
    pred = y + rng.normal(scale=abs(y).mean() + 1e-9, size=rows)
    assert metrics.rmse(y, pred) == pytest.approx(math.sqrt(sk.mean_squared_error(y, pred)), rel=1e-12)
    assert metrics.mae(y, pred) == pytest.approx(sk.mean_absolute_error(y, pred), rel=1e-12)
    assert metrics.r2(y, pred) == pytest.approx(sk.r2_score(y, pred), rel=1e-12, abs=1e-12)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_r2_edge_cases_follow_sklearn():
    constant = np.full(5, 3.0)
    assert metrics.r2(constant, constant) == sk.r2_score(constant, constant) == 1.0
    assert metrics.r2(constant, constant + 1) == sk.r2_score(constant, constant + 1) == 0.0
    one = np.array([1.0])
    assert math.isnan(metrics.r2(one, one)) and math.isnan(sk.r2_score(one, one))
