"""Contributivity equals ramp-workflow's blending (`rampwf.utils.combine.blend_on_fold`,
as `ramp-blend` calls it) on the same synthetic predictions, and adding a submission to a
blend gives what a full recomputation gives."""

import contextlib
import io
import json
import math

import numpy as np
import pytest
from rampwf.prediction_types import make_multiclass, make_regression
from rampwf.score_types import RMSE, Accuracy, NegativeLogLikelihood
from rampwf.utils.combine import blend_on_fold
from sklearn.metrics import accuracy_score, log_loss, mean_squared_error

from datarun.remote.scoring.blending import contributivity

N_CLASSES = 3


def classification_folds(seed, n_sub=40, n_valid=300, n_folds=2, hard=False):
    """Probabilities of weak, noisy submissions: their ensembles grow long."""
    rng = np.random.default_rng(seed)
    ys, preds = [], []
    for _ in range(n_folds):
        y = rng.integers(0, N_CLASSES, n_valid)
        shared = rng.normal(size=(n_valid, N_CLASSES))
        strength = rng.uniform(0.8, 1.2, (n_sub, 1, 1))
        noise = rng.normal(scale=1.5, size=(n_sub, n_valid, N_CLASSES))
        logits = strength * np.eye(N_CLASSES)[y] + 0.1 * shared + noise
        proba = np.exp(logits)
        proba /= proba.sum(axis=2, keepdims=True)
        if hard:  # some submissions say 0 or 1 only: log-loss clips, rows with a 0 true class
            proba[::3] = np.eye(N_CLASSES)[proba[::3].argmax(axis=2)]
        ys.append(y)
        preds.append(proba)
    return ys, preds


def regression_folds(seed, n_sub=40, n_valid=300, n_folds=2):
    rng = np.random.default_rng(seed)
    ys, preds = [], []
    for _ in range(n_folds):
        y = rng.normal(size=n_valid) * 3
        bias = rng.normal(size=n_valid)
        noise = rng.uniform(0.5, 2.0, (n_sub, 1)) * rng.normal(size=(n_sub, n_valid))
        ys.append(y)
        preds.append(y + 0.3 * bias + noise)
    return ys, preds


def ramp_blend(kind, score_type, ys, preds, **options):
    """Members, contributivities and combined scores as ramp-blend computes them."""
    if kind == "classification":
        Predictions = make_multiclass(label_names=list(range(N_CLASSES)))
    else:
        Predictions = make_regression()
    members, combined = [], []
    contrib = np.zeros((len(preds[0]), len(preds)))
    for f, (y, p) in enumerate(zip(ys, preds, strict=True)):
        truth = Predictions(y_true=y)
        candidates = [Predictions(y_pred=q) for q in p]
        with contextlib.redirect_stdout(io.StringIO()):  # it prints every step
            chosen = blend_on_fold(candidates, truth, score_type, **options)
        for i in chosen:
            contrib[i, f] += 1.0 / len(chosen)
        members.append([int(i) for i in chosen])
        combined.append(score_type.score_function(truth, Predictions.combine(candidates, chosen)))
    return members, (contrib / len(preds)).sum(axis=1), combined


def assert_same_as_ramp(blend, kind, score_type, ys, preds, **options):
    members, contrib, combined = ramp_blend(kind, score_type, ys, preds, **options)
    assert blend.members == members
    np.testing.assert_allclose(blend.contributivity, contrib, rtol=0, atol=1e-15)
    np.testing.assert_allclose(blend.combined_scores, combined, rtol=1e-12)
    return members


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_log_loss_blend_equals_ramp_blend(seed):
    ys, preds = classification_folds(seed)
    blend = contributivity("classification", "log_loss", ys, preds)
    members = assert_same_as_ramp(blend, "classification", NegativeLogLikelihood(), ys, preds)
    assert max(len(m) for m in members) >= 8  # long enough to exercise the lazy short-list


def test_log_loss_with_zero_probabilities_equals_ramp_blend():
    ys, preds = classification_folds(3, hard=True)
    assert (np.take_along_axis(preds[0], ys[0][None, :, None], axis=2) == 0).any()
    blend = contributivity("classification", "log_loss", ys, preds)
    assert_same_as_ramp(blend, "classification", NegativeLogLikelihood(), ys, preds)


@pytest.mark.parametrize("seed", [0, 4])
def test_accuracy_blend_equals_ramp_blend(seed):
    ys, preds = classification_folds(seed)
    blend = contributivity("classification", "accuracy", ys, preds)
    assert_same_as_ramp(blend, "classification", Accuracy(), ys, preds)


@pytest.mark.parametrize("seed", [0, 5])
def test_rmse_blend_equals_ramp_blend(seed):
    ys, preds = regression_folds(seed)
    blend = contributivity("regression", "rmse", ys, preds)
    members = assert_same_as_ramp(blend, "regression", RMSE(), ys, preds)
    assert max(len(m) for m in members) >= 5


def test_min_improvement_and_ensemble_cap_follow_ramp_blend():
    ys, preds = classification_folds(6)
    blend = contributivity("classification", "log_loss", ys, preds, min_improvement=1e-3)
    assert_same_as_ramp(blend, "classification", NegativeLogLikelihood(), ys, preds, min_improvement=1e-3)
    capped = contributivity("classification", "log_loss", ys, preds, max_n_ensemble=3)
    assert_same_as_ramp(capped, "classification", NegativeLogLikelihood(), ys, preds, max_n_ensemble=3)
    assert [len(m) for m in capped.members] == [3, 3]


@pytest.mark.parametrize(
    "kind, name, function, lower",
    [
        ("classification", "log_loss", lambda y, p: log_loss(y, p, labels=range(N_CLASSES)), True),
        ("classification", "accuracy", lambda y, p: accuracy_score(y, p.argmax(axis=1)), False),
        ("regression", "rmse", lambda y, p: math.sqrt(mean_squared_error(y, p)), True),
    ],
)
def test_a_score_function_blends_like_the_built_in_score(kind, name, function, lower):
    make = classification_folds if kind == "classification" else regression_folds
    ys, preds = make(7, n_sub=15, n_valid=120, n_folds=2)
    with_function = contributivity(kind, function, ys, preds, lower_is_better=lower)
    built_in = contributivity(kind, name, ys, preds)
    assert with_function.members == built_in.members
    np.testing.assert_allclose(with_function.combined_scores, built_in.combined_scores, rtol=1e-12)


def test_contributivities_are_shares_that_sum_to_one():
    ys, preds = classification_folds(8)
    blend = contributivity("classification", "log_loss", ys, preds)
    assert blend.contributivity.sum() == pytest.approx(1.0, abs=1e-12)
    assert (blend.contributivity >= 0).all()
    per_fold = blend.fold_contributivity * len(ys)
    np.testing.assert_allclose(per_fold.sum(axis=0), 1.0)
    for f, members in enumerate(blend.members):
        counts = np.bincount(members, minlength=blend.n_submissions)
        np.testing.assert_allclose(per_fold[:, f], counts / len(members))
    # blending never does worse than the best single submission on its fold
    assert all(c <= b for c, b in zip(blend.combined_scores, blend.best_single_scores, strict=True))


def test_a_copy_of_the_best_submission_shares_its_credit_and_changes_no_score():
    ys, preds = classification_folds(9)
    before = contributivity("classification", "log_loss", ys, preds)
    best = int(np.argmax(before.contributivity))
    with_copy = [np.concatenate([p, p[best : best + 1]]) for p in preds]
    after = contributivity("classification", "log_loss", ys, with_copy)
    copy = len(preds[0])
    assert after.contributivity[best] + after.contributivity[copy] == pytest.approx(
        before.contributivity[best]
    )
    assert after.combined_scores == before.combined_scores
    # as in ramp-blend, a tie goes to the earlier submission: the copy gains nothing
    assert after.contributivity[copy] == 0
    assert_same_as_ramp(after, "classification", NegativeLogLikelihood(), ys, with_copy)


def newcomers(ys, preds, seed):
    """A typical new submission, one better than all (it starts every ensemble), a bad one."""
    rng = np.random.default_rng(seed)
    typical = [p[rng.integers(len(p))] ** 0.9 for p in preds]
    typical = [t / t.sum(axis=1, keepdims=True) for t in typical]
    strong = [0.7 * np.eye(N_CLASSES)[y] + 0.3 * p.mean(axis=0) for y, p in zip(ys, preds, strict=True)]
    weak = [np.full_like(p[0], 1 / N_CLASSES) for p in preds]
    return {"typical": typical, "strong": strong, "weak": weak}


@pytest.mark.parametrize("which", ["typical", "strong", "weak"])
def test_adding_a_submission_gives_what_a_full_recomputation_gives(which):
    ys, preds = classification_folds(10)
    new = newcomers(ys, preds, 11)[which]
    blend = contributivity("classification", "log_loss", ys, preds).add(new)
    everyone = [np.concatenate([p, n[None]]) for p, n in zip(preds, new, strict=True)]
    full = contributivity("classification", "log_loss", ys, everyone)
    assert blend.n_submissions == len(preds[0]) + 1
    assert blend.members == full.members
    assert blend.combined_scores == full.combined_scores
    if which == "strong":
        assert all(m[0] == len(preds[0]) for m in blend.members)
    if which == "weak":
        assert blend.contributivity[-1] == 0


def test_adding_submissions_one_by_one_to_a_regression_blend():
    ys, preds = regression_folds(12, n_sub=30)
    blend = contributivity("regression", "rmse", ys, [p[:20] for p in preds])
    for j in range(20, 30):
        blend.add([p[j] for p in preds])
    full = contributivity("regression", "rmse", ys, preds)
    assert blend.members == full.members


def test_a_stored_state_resumes_in_another_call():
    ys, preds = classification_folds(13)
    first = contributivity("classification", "log_loss", ys, [p[:30] for p in preds])
    state = json.loads(json.dumps(first.state()))
    resumed = contributivity("classification", "log_loss", ys, preds, previous=state)
    full = contributivity("classification", "log_loss", ys, preds)
    assert resumed.members == full.members
    assert resumed.combined_scores == full.combined_scores


@pytest.mark.parametrize(
    "change",
    [
        lambda s: s.update(score="accuracy"),
        lambda s: s.update(max_n_ensemble=5),
        lambda s: s["folds"].pop(),
        lambda s: s["folds"][0]["members"].__setitem__(0, 10_000),
        lambda s: s["folds"][0]["scores"].__setitem__(-1, 0.123),  # predictions changed since
        lambda s: s.pop("folds"),
    ],
)
def test_a_state_that_does_not_fit_is_ignored(change):
    ys, preds = classification_folds(14, n_sub=20)
    state = contributivity("classification", "log_loss", ys, [p[:15] for p in preds]).state()
    change(state)
    resumed = contributivity("classification", "log_loss", ys, preds, previous=state)
    assert resumed.members == contributivity("classification", "log_loss", ys, preds).members


def test_more_scores_run_and_agree_with_their_definition():
    ys, preds = classification_folds(15, n_sub=12, n_valid=150, n_folds=2)
    blend = contributivity("classification", "balanced_accuracy", ys, preds)
    from sklearn.metrics import balanced_accuracy_score

    for y, p, members, score in zip(ys, preds, blend.members, blend.combined_scores, strict=True):
        assert score == pytest.approx(balanced_accuracy_score(y, p[members].mean(axis=0).argmax(axis=1)))
    ys, preds = regression_folds(15, n_sub=12, n_valid=150, n_folds=2)
    from sklearn.metrics import mean_absolute_error, r2_score

    for name, function in [("mae", mean_absolute_error), ("r2", r2_score)]:
        blend = contributivity("regression", name, ys, preds)
        for y, p, members, score in zip(ys, preds, blend.members, blend.combined_scores, strict=True):
            assert score == pytest.approx(function(y, p[members].mean(axis=0)))
        assert blend.lower_is_better == (name == "mae")


@pytest.mark.parametrize("score, options", [("accuracy", {}), ("log_loss", {"min_improvement": 1e-3})])
@pytest.mark.parametrize("which", ["typical", "strong"])
def test_adding_follows_the_score_and_the_options(score, options, which):
    ys, preds = classification_folds(16, n_sub=25)
    new = newcomers(ys, preds, 17)[which]
    blend = contributivity("classification", score, ys, preds, **options).add(new)
    everyone = [np.concatenate([p, n[None]]) for p, n in zip(preds, new, strict=True)]
    assert blend.members == contributivity("classification", score, ys, everyone, **options).members


# --- ramp-workflow's combination, and undefined scores -----------------------------------


def test_ensembles_giving_the_true_class_zero_are_scored_as_ramp_blend_scores_them():
    """Every member says 0 for the true class on some rows: ramp-workflow's combine clips
    to 1e-15 and renormalises, where a raw mean would be clipped by log_loss at 2.2e-16."""
    rng = np.random.default_rng(21)
    ys, preds = [], []
    for _ in range(2):
        y = rng.integers(0, N_CLASSES, 200)
        flipped = rng.random(200) < 0.1  # mislabelled rows: every model is sure of another class
        seen = np.where(flipped, (y + 1) % N_CLASSES, y)
        guess = np.where(rng.random((12, 200)) < 0.8, seen, rng.integers(0, N_CLASSES, (12, 200)))
        guess[:, flipped] = seen[flipped]
        hard = np.eye(N_CLASSES)[guess]  # trees: 0 or 1
        votes = np.stack([np.eye(N_CLASSES)[np.where(rng.random((12, 200)) < 0.7, seen,
                                                     rng.integers(0, N_CLASSES, (12, 200)))]
                          for _ in range(5)]).sum(axis=0)
        votes[:, flipped] = 5 * np.eye(N_CLASSES)[seen[flipped]]
        ys.append(y)
        preds.append(np.concatenate([hard, votes / 5]))  # kNN: votes of 5 neighbours
    blend = contributivity("classification", "log_loss", ys, preds)
    members = assert_same_as_ramp(blend, "classification", NegativeLogLikelihood(), ys, preds)
    for y, p, chosen, score in zip(ys, preds, members, blend.combined_scores, strict=True):
        raw = p[chosen].mean(axis=0)
        assert (raw[np.arange(len(y)), y] == 0).any()  # the case the clipping decides
        assert abs(log_loss(y, raw, labels=range(N_CLASSES)) - score) > 1e-3


def test_probabilities_outside_zero_one_are_combined_as_ramp_workflow_combines_them():
    ys, preds = classification_folds(22, n_sub=10, n_valid=80)
    scaled = [p * np.linspace(0.5, 1.5, len(p))[:, None, None] for p in preds]  # rows off 1
    for p in scaled:
        p[3, ::2] = [-0.2, 0.6, 0.6]  # negative values
        p[7, ::3] = [1.5, -0.25, -0.25]  # above one
    blend = contributivity("classification", "accuracy", ys, scaled)
    assert_same_as_ramp(blend, "classification", Accuracy(), ys, scaled)
    blend = contributivity("classification", "log_loss", ys, scaled)  # no error: combined first
    assert all(np.isfinite(blend.combined_scores))


def undefined_on(folds_and_candidates):
    """accuracy, undefined (NaN) for the given (fold size, candidate rows) pairs."""

    def score(y, p):
        if len(y) in folds_and_candidates.get("folds", ()):
            return math.nan
        if float(p[0, 0]) in folds_and_candidates.get("first_values", ()):
            return math.nan
        return float(np.mean(p.argmax(axis=1) == y))

    return score


def test_a_fold_undefined_for_every_submission_gives_no_contributivity():
    ys, preds = classification_folds(23, n_sub=12, n_valid=100, n_folds=3)
    ys[1], preds[1] = ys[1][:90], preds[1][:, :90]  # fold 1 is told apart by its size
    blend = contributivity("classification", undefined_on({"folds": (90,)}), ys, preds,
                           lower_is_better=False)
    assert blend.members[1] == [] and blend.n_blended_folds == 2
    assert math.isnan(blend.combined_scores[1]) and math.isnan(blend.best_single_scores[1])
    assert (blend.fold_contributivity[:, 1] == 0).all()
    assert blend.contributivity.sum() == pytest.approx(1.0)
    defined = contributivity("classification", "accuracy", [ys[0], ys[2]], [preds[0], preds[2]])
    np.testing.assert_allclose(blend.contributivity, defined.contributivity, atol=1e-15)


def test_nothing_defined_anywhere_gives_no_contributivity_at_all():
    ys, preds = classification_folds(24, n_sub=5, n_valid=50)
    blend = contributivity("classification", lambda y, p: math.nan, ys, preds, lower_is_better=True)
    assert blend.members == [[], []] and blend.n_blended_folds == 0
    assert (blend.contributivity == 0).all()


def test_a_submission_undefined_on_a_fold_is_never_chosen_there():
    ys, preds = classification_folds(25, n_sub=15, n_valid=120)
    best = contributivity("classification", "accuracy", ys, preds)
    first = best.members[0][0]
    marked = [p.copy() for p in preds]
    marked[0][first, 0] = [0.5, 0.25, 0.25]  # its mark: a first row no other has
    score = undefined_on({"first_values": (0.5,)})
    blend = contributivity("classification", score, ys, marked, lower_is_better=False)
    assert first not in blend.members[0] and blend.fold_contributivity[first, 0] == 0
    # On the other fold, where its score is defined, the blend is accuracy's.
    assert blend.members[1] == contributivity("classification", "accuracy", ys, marked).members[1]


@pytest.mark.parametrize("how", ["add", "resume"])
def test_undefined_folds_survive_adding_and_resuming(how):
    ys, preds = classification_folds(26, n_sub=14, n_valid=100, n_folds=3)
    ys[2], preds[2] = ys[2][:90], preds[2][:, :90]
    score = undefined_on({"folds": (90,)})
    full = contributivity("classification", score, ys, preds, lower_is_better=False)
    if how == "add":
        blend = contributivity("classification", score, ys, [p[:10] for p in preds],
                               lower_is_better=False)
        for j in range(10, 14):
            blend.add([p[j] for p in preds])
    else:
        state = json.loads(json.dumps(contributivity(
            "classification", score, ys, [p[:10] for p in preds], lower_is_better=False).state()))
        blend = contributivity("classification", score, ys, preds, lower_is_better=False,
                               previous=state)
    assert blend.members == full.members and blend.members[2] == []
    np.testing.assert_allclose(blend.contributivity, full.contributivity)


def test_a_state_stored_before_blends_clipped_is_not_resumed():
    ys, preds = classification_folds(27, n_sub=12)
    state = contributivity("classification", "log_loss", ys, [p[:8] for p in preds]).state()
    del state["combine"]
    resumed = contributivity("classification", "log_loss", ys, preds, previous=state)
    assert resumed.members == contributivity("classification", "log_loss", ys, preds).members
