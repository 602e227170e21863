"""Score types, per-task scores and bagged (cross-validation averaged) scores.

Classification predictions are class probabilities (n_rows x n_classes, columns in the
sorted class order); regression predictions are a vector. Each score type knows its
direction and whether it reads the probabilities or their argmax. Bagging follows
ramp-workflow exactly (`rampwf.utils.combine.get_score_cv_bags` and the `combine` of its
prediction types) so that datarun's bagged scores agree with `ramp-test`:
classification probabilities are clipped to [1e-15, 1 - 1e-15] and renormalised per
row before the nanmean over folds, regression predictions are nanmeaned as they are.
"""

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..errors import UsageError
from . import metrics

CLASSIFICATION = "classification"
REGRESSION = "regression"
SPLITS = ("train", "valid", "test")


def _labels(y_true: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """The class index of each true label (classes are sorted)."""
    index = np.searchsorted(classes, y_true)
    index = np.clip(index, 0, len(classes) - 1)
    if not np.array_equal(classes[index], y_true):
        raise ValueError("true labels hold a value that is not one of the problem's classes")
    return index


@dataclass(frozen=True)
class ScoreType:
    name: str
    kind: str
    lower_is_better: bool
    takes_proba: bool  # reads the probabilities themselves, not only their argmax
    precision: int
    function: Callable

    def __call__(self, y_true: np.ndarray, y_pred: np.ndarray,
                 classes: np.ndarray | None = None) -> float:
        """The score of predictions against true values (labels for classification)."""
        y_pred = np.asarray(y_pred, dtype=np.float64)
        if not np.isfinite(y_pred).all():
            raise ValueError("predictions hold NaN or infinite values")
        if self.kind == CLASSIFICATION:
            classes = np.asarray(classes)
            return float(self.function(_labels(np.asarray(y_true), classes), y_pred, len(classes)))
        return float(self.function(np.asarray(y_true, dtype=np.float64), y_pred.reshape(-1)))

    def is_better(self, a: float, b: float) -> bool:
        """Whether score a beats score b."""
        return a < b if self.lower_is_better else a > b


SCORE_TYPES: dict[str, ScoreType] = {
    score.name: score
    for score in (
        ScoreType("accuracy", CLASSIFICATION, False, False, 3, metrics.accuracy),
        ScoreType("balanced_accuracy", CLASSIFICATION, False, False, 3, metrics.balanced_accuracy),
        ScoreType("f1_macro", CLASSIFICATION, False, False, 3, metrics.f1_macro),
        ScoreType("log_loss", CLASSIFICATION, True, True, 3, metrics.log_loss),
        ScoreType("roc_auc", CLASSIFICATION, False, True, 3, metrics.roc_auc),
        ScoreType("rmse", REGRESSION, True, False, 3, metrics.rmse),
        ScoreType("mae", REGRESSION, True, False, 3, metrics.mae),
        ScoreType("r2", REGRESSION, False, False, 3, metrics.r2),
    )
}


def score_names(kind: str) -> list[str]:
    return [name for name, score in SCORE_TYPES.items() if score.kind == kind]


def get_score_type(name: str, kind: str) -> ScoreType:
    if name not in SCORE_TYPES:
        raise UsageError(f"unknown score {name!r} (for {kind}: {', '.join(score_names(kind))})")
    score = SCORE_TYPES[name]
    if score.kind != kind:
        raise UsageError(
            f"score {name!r} is for {score.kind} problems, not {kind} "
            f"(use one of {', '.join(score_names(kind))})"
        )
    return score


def _safe_score(score: ScoreType, y_true, y_pred, classes) -> float | None:
    # A score undefined on these rows (roc_auc of a fold holding one class, say) is
    # recorded as missing rather than failing the whole task's scoring.
    if len(y_true) == 0:
        return None
    try:
        value = score(y_true, y_pred, classes)
    except ValueError:
        return None
    return None if math.isnan(value) else value


def score_rows(kind: str, classes, score_names: list[str], split: str, y_true: np.ndarray,
               y_pred: np.ndarray) -> list[tuple[str, str, float | None]]:
    """(split, score, value) for every score of one split's predictions."""
    classes = None if classes is None else np.asarray(classes)
    return [
        (split, name, _safe_score(get_score_type(name, kind), y_true, y_pred, classes))
        for name in score_names
    ]


def task_scores(kind: str, classes, score_names: list[str], y_train: np.ndarray,
                y_test: np.ndarray, train_idx: np.ndarray, valid_idx: np.ndarray,
                y_pred_train: np.ndarray, y_pred_test: np.ndarray | None,
                ) -> list[tuple[str, str, float | None]]:
    """Every score on one task's train, valid and test predictions.

    y_pred_train has a row for every training row: train is scored on train_idx rows,
    valid on valid_idx rows.
    """
    y_pred_train = np.asarray(y_pred_train)
    rows = score_rows(kind, classes, score_names, "train", y_train[train_idx],
                      y_pred_train[train_idx])
    rows += score_rows(kind, classes, score_names, "valid", y_train[valid_idx],
                       y_pred_train[valid_idx])
    if y_pred_test is not None:
        rows += score_rows(kind, classes, score_names, "test", y_test, np.asarray(y_pred_test))
    return rows


def combine_predictions(kind: str, predictions: list[np.ndarray]) -> np.ndarray:
    """Predictions of several models (or folds) on the same rows, combined as ramp-workflow
    does; NaN rows (not predicted by a model) are left out of each row's mean."""
    stack = np.asarray(predictions, dtype=np.float64)
    if kind == CLASSIFICATION:
        stack = np.clip(stack, 1e-15, 1 - 1e-15)
        stack = stack / np.sum(stack, axis=2, keepdims=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # rows no fold predicted: all NaN
        return np.nanmean(stack, axis=0)


def bag_valid_predictions(kind: str, n_train: int, valid_indices: list[np.ndarray],
                          preds_train: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(combined predictions, mask of the rows at least one fold predicted) over all training
    rows: each fold's valid predictions placed back in its rows, NaN elsewhere."""
    placed = []
    for valid_idx, pred in zip(valid_indices, preds_train, strict=True):
        pred = np.asarray(pred, dtype=np.float64)
        full = np.full((n_train, *pred.shape[1:]), np.nan)
        full[valid_idx] = pred[valid_idx]
        placed.append(full)
    combined = combine_predictions(kind, placed)
    predicted = ~np.isnan(combined if combined.ndim == 1 else combined[:, 0])
    return combined, predicted


def bagged_scores(kind: str, classes, score_names: list[str], y_train: np.ndarray,
                  y_test: np.ndarray, valid_indices: list[np.ndarray],
                  preds_train: list[np.ndarray], preds_test: list[np.ndarray],
                  ) -> list[tuple[str, str, float | None]]:
    """The bagged valid and test scores of one submission over its folds.

    preds_train[i] is fold i's prediction on all training rows (only its valid_indices[i]
    rows are used); preds_test[i] its prediction on the test rows.
    """
    if not preds_train:
        return []
    combined, predicted = bag_valid_predictions(kind, len(y_train), valid_indices, preds_train)
    rows = score_rows(kind, classes, score_names, "valid", y_train[predicted], combined[predicted])
    if preds_test:
        rows += score_rows(kind, classes, score_names, "test", y_test,
                           combine_predictions(kind, preds_test))
    return rows
