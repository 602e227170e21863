"""The scores a blend optimises, computed on combined predictions the way sklearn and
ramp-workflow compute them, one score per leading row so many candidate ensembles are
scored in one numpy call. `blending` ranks and picks with these.
"""

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..errors import UsageError

EPS = np.finfo(np.float64).eps  # sklearn's log_loss clips probabilities to [EPS, 1 - EPS]


# --- exact scores of combined predictions, one per leading row, as sklearn/rampwf compute them


def _log_loss(y, p_true):
    return -np.mean(np.log(np.clip(p_true, EPS, 1 - EPS)), axis=-1)


def _accuracy(y, proba):
    return np.mean(np.argmax(proba, axis=-1) == y, axis=-1)


def _balanced_accuracy(y, proba):
    correct = (np.argmax(proba, axis=-1) == y).astype(np.float64)
    present = np.unique(y)
    onehot = (y[:, None] == present[None, :]).astype(np.float64)
    return np.mean((correct @ onehot) / onehot.sum(axis=0), axis=-1)


def _rmse(y, pred):
    return np.sqrt(np.mean(np.square(y - pred), axis=-1))


def _mae(y, pred):
    return np.mean(np.abs(y - pred), axis=-1)


def _r2(y, pred):
    return 1 - np.sum(np.square(y - pred), axis=-1) / np.sum(np.square(y - np.mean(y)))


def _true_class(y, proba, out):
    """The probability each submission gives the true class: (m, n, C) -> (m, n)."""
    where = np.arange(len(y)) * proba.shape[2] + y
    np.take(proba.reshape(len(proba), -1), where, axis=1, out=out)


def _identity(y, pred, out):
    out[...] = pred


@dataclass(frozen=True)
class _Score:
    name: str
    lower_is_better: bool
    exact: Callable  # (y, combined features (..., n[, C])) -> scores (...)
    features: Callable  # (y, predictions (m, n[, C]), out): what `exact` reads; linear
    ranking: str | None  # "log_loss" | "squared_error" | None (score every candidate)


BUILTIN = {
    s.name: s
    for s in (
        _Score("log_loss", True, _log_loss, _true_class, "log_loss"),
        _Score("accuracy", False, _accuracy, _identity, None),
        _Score("balanced_accuracy", False, _balanced_accuracy, _identity, None),
        _Score("rmse", True, _rmse, _identity, "squared_error"),
        _Score("r2", False, _r2, _identity, "squared_error"),
        _Score("mae", True, _mae, _identity, None),
    )
}


def _undefined_if_refused(score, y, p) -> float:
    """score(y, p), or NaN (undefined) when the score refuses the input with a ValueError,
    as scikit-learn's scores do for, e.g., roc_auc of rows holding one class only."""
    try:
        return float(score(y, p))
    except ValueError:
        return float("nan")


def _resolve_score(score, lower_is_better: bool | None) -> _Score:
    if isinstance(score, str):
        if score not in BUILTIN:
            raise UsageError(
                f"no fast blending for score {score!r}: use one of {', '.join(BUILTIN)}, "
                "or pass the score function with lower_is_better"
            )
        return BUILTIN[score]
    if lower_is_better is None:
        raise UsageError("a score function needs lower_is_better=True or False")

    def exact(y, preds):
        return np.array([_undefined_if_refused(score, y, p) for p in preds])

    return _Score(getattr(score, "__name__", "score"), bool(lower_is_better), exact, _identity, None)
