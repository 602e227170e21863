"""A native problem's blend, from labels, folds and stored predictions to a board's figures.

The organiser's `datarun.board.contrib` blends an open problem with these functions; the
host holding a sensitive problem's data blends it with the same ones (`..sensitive`), so a
sensitive board's contributivity, blended and best single scores are an open board's, to
the last bit: the same predictions go through the same code in the same order.
"""

import math

import numpy as np

from .blending import Blend, contributivity
from .blendscores import BUILTIN
from .scores import SCORE_TYPES, combine_predictions, score_rows


def class_indices(classes: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Each label's column in the predictions (classes in the problem's order, sorted or not)."""
    position = {label: i for i, label in enumerate(classes.tolist())}
    return np.array([position[label] for label in y.tolist()], dtype=np.int64)


def fold_truths(classes: np.ndarray | None, y_train: np.ndarray, valid_idx: list[np.ndarray]) -> list[np.ndarray]:
    """Each fold's validation truths as the blender reads them: class indices, or floats."""
    return [class_indices(classes, y_train[v]) if classes is not None else y_train[v].astype(np.float64)
            for v in valid_idx]


def blend_score(name: str, classes: np.ndarray | None):
    """(score, lower_is_better) for blending on a native score: a built-in name the blender
    has a fast path for, or the exact score function."""
    score_type = SCORE_TYPES[name]
    if name in BUILTIN:
        return name, score_type.lower_is_better

    def score(y, p, _score=score_type):
        return _score(classes[y] if classes is not None else y, p, classes)

    return score, score_type.lower_is_better


def blend(kind: str, score, lower_is_better: bool, ys: list[np.ndarray],
          valid_preds: list[list[np.ndarray]], previous: dict | None = None) -> Blend:
    """The blend of candidates whose per-fold validation predictions are `valid_preds`
    (one list of fold arrays per candidate, in the candidates' order)."""
    preds = [np.stack([per_fold[f] for per_fold in valid_preds]) for f in range(len(ys))]
    return contributivity(kind, score, ys, preds, lower_is_better=lower_is_better, previous=previous)


def combined_test(kind: str, classes, name: str, y_test: np.ndarray,
                  fold_tests: list[list[np.ndarray]]) -> float | None:
    """The blended test score: each fold's ensemble members' test predictions combined, the
    folds bagged, scored with `name`."""
    if not fold_tests or not len(y_test):
        return None
    bagged = combine_predictions(kind, [combine_predictions(kind, t) for t in fold_tests])
    return score_rows(kind, classes, [name], "test", y_test, bagged)[0][2]


def mean_defined(values: list[float]) -> float | None:
    defined = [v for v in values if not math.isnan(v)]
    return float(np.mean(defined)) if defined else None
