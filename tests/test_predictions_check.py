"""The check made wherever predictions enter: its rule, its tolerance and its messages, the
same in the harness (which imports nothing of datarun) and on the organiser's side."""

import numpy as np
import pytest

from datarun.remote.scoring.predictions import (
    PROBABILITY_RULE,
    PROBABILITY_TOLERANCE,
    prediction_fault,
)


def both(pred, classification: bool = True) -> str | None:
    return prediction_fault(pred, classification)


def softmax32(rng, n_rows: int, n_classes: int) -> np.ndarray:
    logits = rng.normal(scale=3, size=(n_rows, n_classes)).astype(np.float32)
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("n_classes", [2, 3, 10, 100, 1000])
def test_float32_probabilities_pass(n_classes):
    proba = softmax32(np.random.default_rng(n_classes), 2000, n_classes)
    assert proba.dtype == np.float32
    assert both(proba) is None


@pytest.mark.parametrize("row, message", [
    ([0.3, 0.3, 0.3], "row 1 sums to 0.9"),
    ([0.5, 0.4, 0.4], "row 1 sums to 1.3"),
    ([-0.2, 0.6, 0.6], "row 1 holds -0.2, outside [0, 1] (the row sums to 1)"),
    ([1.5, -0.25, -0.25], "row 1 holds 1.5, outside [0, 1] (the row sums to 1)"),
    ([np.nan, 0.5, 0.5], "row 1 holds nan (the row sums to nan)"),
    ([0.5, np.inf, 0.5], "row 1 holds inf (the row sums to inf)"),
    ([0.5, 0.5, -np.inf], "row 1 holds -inf (the row sums to -inf)"),
])
def test_each_kind_of_bad_row_is_named_with_its_sum(row, message):
    proba = np.array([[0.2, 0.3, 0.5], row, [0.1, 0.1, 0.7]])  # the third row is bad too
    assert both(proba) == f"{message}; {PROBABILITY_RULE}"


def test_the_tolerance_is_on_the_row_sum():
    ok = np.array([[0.5, 0.5 + 0.9 * PROBABILITY_TOLERANCE, 0.0]])
    off = np.array([[0.5, 0.5 - 1.1 * PROBABILITY_TOLERANCE, 0.0]])
    assert both(ok) is None
    assert both(off) == f"row 0 sums to 0.999989; {PROBABILITY_RULE}"


def test_other_predictions_need_only_be_finite():
    assert both(np.array([1e300, -5.0, 0.0]), classification=False) is None
    assert both(np.array([1.0, 2.0, np.nan]), classification=False) == (
        "row 2 holds nan; predictions must be finite numbers")
    ramp_like = np.array([[0.2, 1.7], [np.inf, 0.0]])  # a RAMP kit's, whatever its Predictions take
    assert both(ramp_like, classification=False) == (
        "row 1 holds inf; predictions must be finite numbers")
    assert both(np.zeros((0, 3))) is None and both(np.zeros(0), classification=False) is None


def test_a_real_scikit_learn_model_passes_in_float32_and_float64():
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    X, y = load_iris(return_X_y=True)
    for dtype in (np.float32, np.float64):
        proba = LogisticRegression(max_iter=500).fit(X.astype(dtype), y).predict_proba(X.astype(dtype))
        assert both(proba) is None
        assert both(proba * 0.9) == f"row 0 sums to 0.9; {PROBABILITY_RULE}"
