"""What makes an array valid predictions, checked wherever predictions enter datarun.

Classification predictions are class probabilities: every value finite and within
[0, 1], every row summing to 1 within PROBABILITY_TOLERANCE. Regression predictions are
finite numbers. The harness runs this check on the host (`datarun/remote/workflows.py`),
the organiser runs it again on what a host sends back, and blending leaves
out stored predictions that fail it, so no later step meets predictions it cannot score.

The tolerance is the one scikit-learn's multiclass roc_auc accepts (`np.allclose`, a
relative 1e-5): a row accepted here is accepted by every scikit-learn score. float32
models pass with room to spare: their rows are off by less than 1e-6 (a float32 softmax
over 2 to 1,000 classes is off by at most 4e-7).
"""

import numpy as np

PROBABILITY_TOLERANCE = 1e-5
PROBABILITY_RULE = (f"class probabilities must be finite, within [0, 1] and sum to 1 per row "
                    f"(within {PROBABILITY_TOLERANCE:g})")
VALUE_RULE = "predictions must be finite numbers"


def _number(value: float) -> str:
    return f"{value:.6g}"


def prediction_fault(pred: np.ndarray, classification: bool) -> str | None:
    """None when pred is valid; else what is wrong with its first bad row, and the rule.

    pred is (n_rows, n_classes) of class probabilities when `classification`; otherwise
    any (n_rows, ...) array of numbers (regression values, or a RAMP kit's predictions,
    which keep whatever the kit's Predictions accept), checked to be finite only. Shapes
    are checked by the caller, which knows what they should be.
    """
    pred = np.asarray(pred, dtype=np.float64)
    if not pred.size:
        return None
    if not classification:
        bad = ~np.isfinite(pred.reshape(len(pred), -1))
        if not bad.any():
            return None
        i = int(np.argmax(bad.any(axis=1)))
        value = pred.reshape(len(pred), -1)[i][bad[i]][0]
        return f"row {i} holds {_number(value)}; {VALUE_RULE}"
    with np.errstate(invalid="ignore", over="ignore"):
        sums = pred.sum(axis=1)
        finite = np.asarray(np.isfinite(pred).all(axis=1), dtype=bool)
        within = np.asarray(((pred >= 0) & (pred <= 1)).all(axis=1), dtype=bool)
        ok = finite & within & (np.abs(sums - 1) <= PROBABILITY_TOLERANCE)
    if ok.all():
        return None
    i = int(np.argmin(ok))
    row, total = pred[i], _number(sums[i])
    if not finite[i]:
        value = row[~np.isfinite(row)][0]
        detail = f"row {i} holds {_number(value)} (the row sums to {total})"
    elif not within[i]:
        value = row[(row < 0) | (row > 1)][0]
        detail = f"row {i} holds {_number(value)}, outside [0, 1] (the row sums to {total})"
    else:
        detail = f"row {i} sums to {total}"
    return f"{detail}; {PROBABILITY_RULE}"
