"""RAMP contributivity: the same ensembles as ramp-workflow's own blend_on_fold.

Random predictions of many submissions, scored with ramp-workflow's score types and
combined with its Predictions types (multiclass, three-target regression) and with a
combine of a kit's own; `datarun.remote.scoring.rampblend` must pick the very members
ramp-workflow picks on every fold, whether it blends everyone at once or takes the
submissions one at a time (the replay), and give ramp-blend's combined test score.
"""

from types import SimpleNamespace

import numpy as np
import pytest

rw = pytest.importorskip("rampwf")

N_TRAIN, N_TEST, N_SUBMISSIONS = 90, 40, 14


def median_predictions():
    """A regression type with a combine of its own: the median, not the mean."""
    Base = rw.prediction_types.make_regression()

    class Median(Base):
        @classmethod
        def combine(cls, predictions_list, index_list=None):
            if index_list is None:
                index_list = range(len(predictions_list))
            return cls(y_pred=np.median([predictions_list[i].y_pred for i in index_list], axis=0))

    return Median


def problem(kind: str, rng):
    """(scorer-like object, per-submission train predictions, per-submission test predictions)."""
    if kind == "multiclass":
        P = rw.prediction_types.make_multiclass(label_names=["a", "b", "c"])
        score = rw.score_types.NegativeLogLikelihood()
        labels = np.array(["a", "b", "c"])
        truth_train, truth_test = labels[rng.integers(0, 3, N_TRAIN)], labels[rng.integers(0, 3, N_TEST)]

        def preds(n):
            return rng.dirichlet(np.ones(3) * 0.7, size=n)
    elif kind == "multi-target":
        P = rw.prediction_types.make_regression(label_names=["x", "y", "z"])
        score = rw.score_types.RMSE()
        truth_train, truth_test = rng.normal(size=(N_TRAIN, 3)), rng.normal(size=(N_TEST, 3))

        def preds(n):
            return rng.normal(size=(n, 3)) * rng.uniform(0.5, 1.5)
    else:
        P = median_predictions()
        score = rw.score_types.RMSE()
        truth_train, truth_test = rng.normal(size=N_TRAIN), rng.normal(size=N_TEST)

        def preds(n):
            return rng.normal(size=n) * rng.uniform(0.3, 1.5)
    scorer = SimpleNamespace(Predictions=P, score_types=[score], truth_train=truth_train,
                             truth_test=truth_test)
    trains = [preds(N_TRAIN) for _ in range(N_SUBMISSIONS)]
    tests = [preds(N_TEST) for _ in range(N_SUBMISSIONS)]
    return scorer, trains, tests


def folds(rng, n_folds=3):
    order = rng.permutation(N_TRAIN)
    return [np.sort(part) for part in np.array_split(order, n_folds)]


def rampwf_members(scorer, valid, trains, capsys):
    from rampwf.utils.combine import blend_on_fold

    P = scorer.Predictions
    members = blend_on_fold([P(y_pred=t, fold_is=valid) for t in trains],
                            P(y_true=scorer.truth_train, fold_is=valid), scorer.score_types[0])
    capsys.readouterr()  # blend_on_fold prints its steps
    return [int(m) for m in members]


@pytest.mark.parametrize("kind", ["multiclass", "multi-target", "kit-combine"])
def test_ensembles_are_ramp_workflows_on_every_fold(kind, capsys):
    from datarun.remote.scoring.rampblend import blend, combined_test_score

    rng = np.random.default_rng({"multiclass": 1, "multi-target": 2, "kit-combine": 3}[kind])
    scorer, trains, tests = problem(kind, rng)
    valid = folds(rng)
    preds = [trains for _ in valid]
    ensembles, state = blend(scorer, valid, preds)
    assert state["combine"] == ("kit" if kind == "kit-combine" else
                                "multiclass" if kind == "multiclass" else "mean")
    expected = [rampwf_members(scorer, v, trains, capsys) for v in valid]
    assert [e.members for e in ensembles] == expected
    assert any(len(m) > 2 for m in expected)  # the greedy did run

    # One at a time, as submissions are scored: the replay reaches the same ensembles.
    previous = None
    for n in range(1, N_SUBMISSIONS + 1):
        step, previous = blend(scorer, valid, [t[:n] for t in preds], previous)
        assert previous["n_submissions"] == n
    assert [e.members for e in step] == expected
    assert [e.scores for e in step] == [e.scores for e in ensembles]

    # ramp-blend's combined test score: each fold's members combined, the folds bagged.
    from rampwf.utils.combine import get_score_cv_bags

    P = scorer.Predictions
    combined = [P.combine([P(y_pred=t) for t in tests], members) for members in expected]
    _, bagged = get_score_cv_bags(scorer.score_types[0], combined, P(y_true=scorer.truth_test))
    got = combined_test_score(scorer, expected, [tests for _ in valid])
    assert got == pytest.approx(bagged[-1], rel=1e-12)


def test_a_stored_path_whose_predictions_changed_is_not_resumed():
    from datarun.remote.scoring.rampblend import blend

    rng = np.random.default_rng(5)
    scorer, trains, _ = problem("multi-target", rng)
    valid = folds(rng)
    ensembles, state = blend(scorer, valid, [trains for _ in valid])
    changed = [t + 0.5 for t in trains]
    again, _ = blend(scorer, valid, [changed for _ in valid], state)
    fresh, _ = blend(scorer, valid, [changed for _ in valid])
    assert [e.members for e in again] == [e.members for e in fresh]
    assert [e.scores for e in again] == [e.scores for e in fresh]
