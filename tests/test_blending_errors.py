"""Every bad input to the blending core is refused with a one-line message that says what to fix."""

import numpy as np
import pytest

from datarun.errors import EXIT_USAGE, UsageError
from datarun.remote.scoring.blending import contributivity


def small(n_sub=4, n_valid=6, n_folds=2, seed=0):
    rng = np.random.default_rng(seed)
    ys = [np.arange(n_valid) % 3 for _ in range(n_folds)]
    preds = []
    for _ in range(n_folds):
        p = rng.random((n_sub, n_valid, 3))
        preds.append(p / p.sum(axis=2, keepdims=True))
    return ys, preds


def refused(match, *args, **kwargs):
    with pytest.raises(UsageError, match=match) as caught:
        contributivity(*args, **kwargs)
    assert caught.value.exit_code == EXIT_USAGE
    assert "\n" not in str(caught.value)
    return str(caught.value)


def test_an_unknown_kind_is_refused():
    ys, preds = small()
    refused(r"kind must be classification or regression, not 'clustering'", "clustering", "log_loss", ys, preds)


def test_a_score_without_fast_blending_is_refused_by_name():
    ys, preds = small()
    message = refused(r"no fast blending for score 'f1_macro'", "classification", "f1_macro", ys, preds)
    assert "log_loss" in message and "lower_is_better" in message


def test_a_score_function_needs_its_direction():
    ys, preds = small()
    refused(r"needs lower_is_better=True or False", "classification", lambda y, p: 0.0, ys, preds)


def test_folds_of_truth_and_predictions_must_match():
    ys, preds = small()
    refused(r"2 folds of true values but 1 folds of predictions", "classification", "log_loss", ys, preds[:1])
    refused(r"0 folds of true values but 0 folds", "classification", "log_loss", [], [])


def test_ensemble_options_must_make_sense():
    ys, preds = small()
    refused(r"max_n_ensemble must be at least 1", "classification", "log_loss", ys, preds, max_n_ensemble=0)
    refused(r"min_improvement at least 0", "classification", "log_loss", ys, preds, min_improvement=-1)


def test_no_submissions_is_refused():
    ys, _ = small()
    refused(r"no submissions to blend", "classification", "log_loss", ys, [np.zeros((0, 6, 3))] * 2)


def test_classification_truth_must_be_class_indices():
    ys, preds = small()
    refused(r"must be class indices \(integers\)", "classification", "log_loss", [y + 0.5 for y in ys], preds)
    bad = [ys[0], ys[1] + 1]
    refused(r"fold 1: true classes must be indices 0\.\.2", "classification", "log_loss", bad, preds)


def test_prediction_shapes_must_match_the_kind_and_the_folds():
    ys, preds = small()
    refused(
        r"fold 0: predictions of shape \(4, 6\); classification needs \(n_submissions, n_valid, n_classes\)",
        "classification", "log_loss", ys, [p[..., 0] for p in preds],
    )
    refused(r"fold 1: predictions of shape \(3, 6, 3\)", "classification", "log_loss", ys, [preds[0], preds[1][:3]])
    refused(r"fold 0: predictions of shape \(4, 5, 3\)", "classification", "log_loss", ys, [p[:, :5] for p in preds])
    refused(r"regression needs \(n_submissions, n_valid\) = \(4, 6\)", "regression", "rmse", ys, preds)


def test_predictions_must_be_finite():
    ys, preds = small()
    broken = [preds[0].copy(), preds[1]]
    broken[0][1, 2, 0] = np.nan
    refused(r"fold 0: predictions hold NaN or infinite values", "classification", "log_loss", ys, broken)
    broken[0][1, 2, 0] = -np.inf
    refused(r"fold 0: predictions hold NaN or infinite values", "classification", "log_loss", ys, broken)


def test_a_new_submission_must_fit_the_blend():
    ys, preds = small()
    blend = contributivity("classification", "log_loss", ys, preds)
    with pytest.raises(UsageError, match=r"has predictions for 1 folds; the blend has 2") as caught:
        blend.add([preds[0][0]])
    assert caught.value.exit_code == EXIT_USAGE
    with pytest.raises(UsageError, match=r"fold 1: the new submission's predictions have shape \(6,\); "
                       r"the others' have \(6, 3\)"):
        blend.add([preds[0][0], preds[1][0][:, 0]])
    assert blend.n_submissions == 4  # nothing was added half
