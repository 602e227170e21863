"""The native score functions in plain numpy, defined as scikit-learn 1.9 defines them.

Scoring runs on the dispatcher's critical path, once per split and score of every task.
sklearn.metrics validates its arguments on each call (about 5 ms here, far more than
the arithmetic on a fold's rows) and costs a second of import; these functions give the
same numbers (tests/test_metrics.py compares them on random and edge-case inputs) at a
fraction of that. A score that sklearn leaves undefined (NaN) is NaN here; an input
sklearn refuses raises ValueError here too.

Classification functions take y as class indices 0..n-1 and proba as an (rows, n)
array of class probabilities; regression functions take two float vectors.
"""

import math

import numpy as np

EPS = np.finfo(np.float64).eps  # log_loss clips probabilities to [EPS, 1 - EPS]


def accuracy(y: np.ndarray, proba: np.ndarray, n: int) -> float:
    return float(np.mean(proba.argmax(axis=1) == y))


def balanced_accuracy(y: np.ndarray, proba: np.ndarray, n: int) -> float:
    """The mean recall over the classes present in y."""
    predicted = proba.argmax(axis=1)
    present = np.unique(y)
    true_count = np.bincount(y, minlength=n)[present]
    hits = np.bincount(y[predicted == y], minlength=n)[present]
    return float(np.mean(hits / true_count))


def f1_macro(y: np.ndarray, proba: np.ndarray, n: int) -> float:
    """The mean F1 over the classes present in y or in the predictions."""
    predicted = proba.argmax(axis=1)
    true_count = np.bincount(y, minlength=n)
    predicted_count = np.bincount(predicted, minlength=n)
    hits = np.bincount(y[predicted == y], minlength=n)
    seen = (true_count + predicted_count) > 0
    f1 = 2.0 * hits[seen] / (1.0 * true_count[seen] + predicted_count[seen])
    return float(np.mean(f1))


def log_loss(y: np.ndarray, proba: np.ndarray, n: int) -> float:
    """The mean negative log of the true class's probability, clipped to [EPS, 1 - EPS].

    Rows are not renormalised (sklearn only warns when they do not sum to one)."""
    if proba.max() > 1 or proba.min() < 0:
        raise ValueError("probabilities outside [0, 1]")
    p_true = np.clip(proba[np.arange(len(y)), y], EPS, 1 - EPS)
    return float(-np.mean(np.log(p_true)))


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks of values, ties sharing their average rank."""
    order = np.argsort(values, kind="mergesort")
    ordered = values[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    ends = np.r_[starts[1:], len(values)]
    ranks = np.empty(len(values))
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)
    return ranks


def binary_roc_auc(positive: np.ndarray, score: np.ndarray) -> float:
    """The area under the ROC curve (the Mann-Whitney U, ties counting one half); NaN
    when only one class is present."""
    n_pos = int(np.count_nonzero(positive))
    n_neg = len(positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    rank_sum = float(np.sum(_average_ranks(score)[positive]))
    return (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


def roc_auc(y: np.ndarray, proba: np.ndarray, n: int) -> float:
    """Binary: the second class's probability. Multiclass: the unweighted mean of the
    one-vs-rest AUCs, NaN if any class is absent; rows must sum to one."""
    if n == 2:
        return binary_roc_auc(y == 1, proba[:, 1])
    if not np.allclose(1, proba.sum(axis=1)):
        raise ValueError("multiclass roc_auc needs probabilities that sum to one per row")
    return float(np.mean([binary_roc_auc(y == c, proba[:, c]) for c in range(n)]))


def rmse(y: np.ndarray, pred: np.ndarray) -> float:
    return math.sqrt(float(np.mean((y - pred) ** 2)))


def mae(y: np.ndarray, pred: np.ndarray) -> float:
    return float(np.mean(np.abs(y - pred)))


def r2(y: np.ndarray, pred: np.ndarray) -> float:
    """1 - SS_res / SS_tot; with a constant y: 1.0 for a perfect fit, else 0.0; NaN for
    fewer than two rows."""
    if len(y) < 2:
        return math.nan
    residual = float(np.sum((y - pred) ** 2))
    total = float(np.sum((y - np.mean(y)) ** 2))
    if total == 0:
        return 1.0 if residual == 0 else 0.0
    return 1.0 - residual / total
