"""Score types against sklearn.metrics, and bagging against a direct computation and
against ramp-workflow itself."""

import math

import numpy as np
import pytest
from sklearn import metrics

from datarun.errors import UsageError
from datarun.remote.scoring.scores import (
    SCORE_TYPES,
    bagged_scores,
    combine_predictions,
    get_score_type,
    task_scores,
)

CLASSES3 = np.array(["setosa", "versicolor", "virginica"])


def random_proba(rng, n, k):
    proba = rng.random((n, k)) + 0.05
    return proba / proba.sum(axis=1, keepdims=True)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def test_every_score_type_knows_its_direction():
    lower = {name for name, score in SCORE_TYPES.items() if score.lower_is_better}
    assert lower == {"log_loss", "rmse", "mae"}
    assert get_score_type("log_loss", "classification").is_better(0.1, 0.2)
    assert get_score_type("accuracy", "classification").is_better(0.9, 0.8)
    assert not get_score_type("r2", "regression").is_better(0.1, 0.2)
    assert {n for n, s in SCORE_TYPES.items() if s.takes_proba} == {"log_loss", "roc_auc"}


def test_multiclass_scores_equal_sklearn_metrics(rng):
    y = rng.choice(CLASSES3, size=60)
    proba = random_proba(rng, 60, 3)
    labels = CLASSES3[proba.argmax(axis=1)]
    expected = {
        "accuracy": metrics.accuracy_score(y, labels),
        "balanced_accuracy": metrics.balanced_accuracy_score(y, labels),
        "f1_macro": metrics.f1_score(y, labels, average="macro"),
        "log_loss": metrics.log_loss(y, proba, labels=CLASSES3),
        "roc_auc": metrics.roc_auc_score(y, proba, multi_class="ovr", average="macro",
                                         labels=CLASSES3),
    }
    for name, value in expected.items():
        assert get_score_type(name, "classification")(y, proba, CLASSES3) == pytest.approx(
            value, abs=1e-12), name


def test_binary_roc_auc_uses_the_second_class_probability(rng):
    classes = np.array([0, 1])
    y = rng.integers(0, 2, size=50)
    proba = random_proba(rng, 50, 2)
    score = get_score_type("roc_auc", "classification")(y, proba, classes)
    assert score == pytest.approx(metrics.roc_auc_score(y, proba[:, 1]))


def test_regression_scores_equal_sklearn_metrics(rng):
    y = rng.normal(size=40)
    pred = y + rng.normal(scale=0.3, size=40)
    assert get_score_type("rmse", "regression")(y, pred) == pytest.approx(
        math.sqrt(metrics.mean_squared_error(y, pred)))
    assert get_score_type("mae", "regression")(y, pred) == pytest.approx(
        metrics.mean_absolute_error(y, pred))
    assert get_score_type("r2", "regression")(y, pred) == pytest.approx(metrics.r2_score(y, pred))


def test_an_unknown_score_name_is_refused():
    with pytest.raises(UsageError, match="unknown score 'auc'.*accuracy"):
        get_score_type("auc", "classification")


def test_a_score_of_the_other_kind_is_refused():
    with pytest.raises(UsageError, match="score 'rmse' is for regression problems, not classification"):
        get_score_type("rmse", "classification")


def test_task_scores_score_train_and_valid_rows_of_the_full_training_predictions(rng):
    y_train = rng.choice(CLASSES3, size=30)
    y_test = rng.choice(CLASSES3, size=10)
    pred_train = random_proba(rng, 30, 3)
    pred_test = random_proba(rng, 10, 3)
    train_idx, valid_idx = np.arange(0, 20), np.arange(20, 30)
    rows = task_scores("classification", CLASSES3.tolist(), ["accuracy", "log_loss"], y_train,
                       y_test, train_idx, valid_idx, pred_train, pred_test)
    got = {(split, name): value for split, name, value in rows}
    assert len(rows) == 6
    for split, y, proba in (("train", y_train[:20], pred_train[:20]),
                            ("valid", y_train[20:], pred_train[20:]),
                            ("test", y_test, pred_test)):
        assert got[split, "accuracy"] == pytest.approx(
            metrics.accuracy_score(y, CLASSES3[proba.argmax(axis=1)]))
        assert got[split, "log_loss"] == pytest.approx(metrics.log_loss(y, proba, labels=CLASSES3))


def test_a_score_undefined_on_its_rows_is_recorded_as_missing(rng):
    y = np.array(["a", "a", "a", "b"])
    pred = random_proba(rng, 4, 2)
    rows = task_scores("classification", ["a", "b"], ["roc_auc"], y, y, np.array([3]),
                       np.array([0, 1, 2]), pred, pred)
    assert dict(((s, n), v) for s, n, v in rows)[("valid", "roc_auc")] is None
    assert dict(((s, n), v) for s, n, v in rows)[("test", "roc_auc")] is not None


def _folds(n, k):
    rows = np.arange(n)
    return [(np.setdiff1d(rows, rows[i::k]), rows[i::k]) for i in range(k)]


def test_bagged_regression_scores_equal_a_direct_computation(rng):
    y_train, y_test = rng.normal(size=30), rng.normal(size=12)
    # Shuffle-split-like folds that overlap and leave row 29 unpredicted.
    valid = [np.arange(0, 12), np.arange(8, 20), np.arange(15, 29)]
    preds_train = [y_train + rng.normal(scale=0.5, size=30) for _ in valid]
    preds_test = [y_test + rng.normal(scale=0.5, size=12) for _ in valid]
    rows = dict(((s, n), v) for s, n, v in bagged_scores(
        "regression", None, ["rmse", "r2"], y_train, y_test, valid, preds_train, preds_test))
    total = np.zeros(30)
    count = np.zeros(30)
    for idx, pred in zip(valid, preds_train, strict=True):
        total[idx] += pred[idx]
        count[idx] += 1
    seen = count > 0
    bagged_valid = total[seen] / count[seen]
    bagged_test = np.mean(preds_test, axis=0)
    assert seen.sum() == 29
    assert rows["valid", "rmse"] == pytest.approx(
        math.sqrt(metrics.mean_squared_error(y_train[seen], bagged_valid)))
    assert rows["valid", "r2"] == pytest.approx(metrics.r2_score(y_train[seen], bagged_valid))
    assert rows["test", "rmse"] == pytest.approx(
        math.sqrt(metrics.mean_squared_error(y_test, bagged_test)))


def test_bagged_classification_scores_equal_a_direct_computation(rng):
    y_train, y_test = rng.choice(CLASSES3, size=24), rng.choice(CLASSES3, size=9)
    folds = _folds(24, 4)
    preds_train = [random_proba(rng, 24, 3) for _ in folds]
    preds_test = [random_proba(rng, 9, 3) for _ in folds]
    rows = dict(((s, n), v) for s, n, v in bagged_scores(
        "classification", CLASSES3.tolist(), ["accuracy", "log_loss"], y_train, y_test,
        [valid for _, valid in folds], preds_train, preds_test))
    # k-fold: each training row is predicted by exactly one fold, so bagged valid
    # predictions are that fold's (normalised) probabilities.
    bagged_valid = np.empty((24, 3))
    for (_, valid), pred in zip(folds, preds_train, strict=True):
        bagged_valid[valid] = pred[valid] / pred[valid].sum(axis=1, keepdims=True)
    bagged_test = np.mean([p / p.sum(axis=1, keepdims=True) for p in preds_test], axis=0)
    assert rows["valid", "log_loss"] == pytest.approx(
        metrics.log_loss(y_train, bagged_valid, labels=CLASSES3))
    assert rows["test", "accuracy"] == pytest.approx(
        metrics.accuracy_score(y_test, CLASSES3[bagged_test.argmax(axis=1)]))
    assert rows["test", "log_loss"] == pytest.approx(
        metrics.log_loss(y_test, bagged_test, labels=CLASSES3))


def test_bagged_scores_agree_with_ramp_workflow(rng):
    from rampwf.prediction_types import make_multiclass
    from rampwf.score_types import Accuracy, NegativeLogLikelihood
    from rampwf.utils.combine import get_score_cv_bags

    labels = ["a", "b", "c"]
    Predictions = make_multiclass(label_names=labels)
    y_train = rng.choice(np.array(labels), size=30)
    valid = [np.sort(rng.choice(30, size=10, replace=False)) for _ in range(4)]
    preds_train = [random_proba(rng, 30, 3) * rng.uniform(0.5, 1.5) for _ in valid]
    # Some probabilities at 0 exercise ramp-workflow's clipping.
    preds_train[0][valid[0][:2]] = [1.0, 0.0, 0.0]
    ours = dict(((s, n), v) for s, n, v in bagged_scores(
        "classification", labels, ["accuracy", "log_loss"], y_train, y_train, valid,
        preds_train, []))
    ground_truth = Predictions(y_true=y_train)
    ramp_preds = [Predictions(y_pred=p, fold_is=v) for p, v in zip(preds_train, valid, strict=True)]
    for name, score_type in (("accuracy", Accuracy()), ("log_loss", NegativeLogLikelihood())):
        _, scores = get_score_cv_bags(score_type, ramp_preds, ground_truth, test_is_list=valid)
        assert ours["valid", name] == pytest.approx(scores[-1], abs=1e-12)
    assert ("test", "accuracy") not in ours


def test_combining_regression_predictions_ignores_rows_a_model_did_not_predict():
    combined = combine_predictions("regression", [np.array([1.0, np.nan, 3.0]),
                                                  np.array([3.0, 2.0, np.nan])])
    np.testing.assert_allclose(combined, [2.0, 2.0, 3.0])


def test_a_true_label_outside_the_classes_is_an_error_not_a_silent_score(rng):
    accuracy = get_score_type("accuracy", "classification")
    with pytest.raises(ValueError, match="not one of the problem's classes"):
        accuracy(np.array(["setosa", "rose"]), random_proba(rng, 2, 3), CLASSES3)


def test_non_finite_predictions_score_as_missing(rng):
    y = rng.choice(CLASSES3, size=6)
    proba = random_proba(rng, 6, 3)
    proba[2, 1] = np.nan
    with pytest.raises(ValueError, match="predictions hold NaN or infinite values"):
        get_score_type("accuracy", "classification")(y, proba, CLASSES3)
    rows = task_scores("classification", CLASSES3.tolist(), ["accuracy"], y, y,
                       np.arange(3), np.arange(3, 6), proba, proba)
    assert dict(((s, n), v) for s, n, v in rows)[("train", "accuracy")] is None
    assert dict(((s, n), v) for s, n, v in rows)[("valid", "accuracy")] is not None
