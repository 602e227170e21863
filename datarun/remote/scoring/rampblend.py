"""Contributivity of a RAMP problem: ramp-blend's greedy, with the kit's own classes.

ramp-blend (rampwf.utils.testing.blend_submissions) works per fold: every submission's
validation predictions as the kit's `Predictions`, the best single one by the kit's first
score type, then greedy forward selection with replacement, each step scoring
`Predictions.combine` of the ensemble plus each candidate in turn and keeping the first
strictly best, until no candidate improves the ensemble or it has 80 members. The blended
test score combines each fold's members' test predictions with `Predictions.combine` and
bags the folds with `get_score_cv_bags`. This module does the same, with any prediction
shape and any `Predictions` type, and gives the same members:

- ramp-workflow's own `combine`s (the nan-mean of `BasePrediction`, and multiclass's,
  which first clips and normalises each member's probabilities) are a mean, so the
  ensemble's running sum is kept and a candidate costs one addition (the same additions in
  the same order as numpy's mean over the stacked members, so the same bits); the kit's
  score function then scores `Predictions(y_pred=mean)`;
- any other `combine` (the kit's own) is called as ramp-blend calls it.

A new submission is fitted into each fold's stored path (`replay`) rather than re-running
the whole selection: the newcomer comes last in the scan, so it changes a step only when it
is strictly better than what that step chose. A kit whose predictions cannot be combined
(its combine raises, as ramp-blend would) gets no contributivity and a one-line note.
"""

import math

import numpy as np

MAX_N_ENSEMBLE = 80  # ramp-blend's cap on the ensemble's size
STATE_KIND = "ramp-blend"


def _mean_kind(P) -> str | None:
    """'mean' or 'multiclass' when P.combine is one of ramp-workflow's own, else None."""
    try:
        from rampwf.prediction_types import multiclass
        from rampwf.prediction_types.base import BasePrediction
    except ImportError:
        return None
    function = getattr(P.combine, "__func__", None)
    if function is BasePrediction.combine.__func__:
        return "mean"
    if function is multiclass._combine.__func__:
        return "multiclass"
    return None


def _multiclass_member(array: np.ndarray) -> np.ndarray:
    """What ramp-workflow's multiclass combine makes of one member before averaging."""
    clipped = np.clip(array, 10 ** -15, 1 - 10 ** -15)
    return clipped / np.sum(clipped, axis=-1, keepdims=True)


class _Mean:
    """Ensembles as running sums: ramp-workflow's own combines, exactly."""

    def __init__(self, P, arrays: list[np.ndarray], kind: str):
        self.P = P
        self.rows = [_multiclass_member(a) if kind == "multiclass" else a for a in arrays]

    def total(self, members: list[int]):
        total = self.rows[members[0]].copy()
        for m in members[1:]:
            total += self.rows[m]
        return total

    def combined(self, total, k: int):
        return self.P(y_pred=total / k)

    def plus(self, total, k: int, i: int):
        return self.P(y_pred=(total + self.rows[i]) / (k + 1))

    def grow(self, total, i: int):
        total += self.rows[i]
        return total


class _KitCombine:
    """Ensembles through the kit's own Predictions.combine, as ramp-blend calls it."""

    def __init__(self, P, arrays: list[np.ndarray]):
        self.P = P
        self.preds = [P(y_pred=a) for a in arrays]

    def total(self, members: list[int]):
        return list(members)

    def combined(self, total, k: int):
        return self.P.combine([self.preds[m] for m in total])

    def plus(self, total, k: int, i: int):
        return self.P.combine([self.preds[m] for m in total] + [self.preds[i]])

    def grow(self, total, i: int):
        return [*total, i]


def _defined_score(score, truth):
    """The kit's score of some predictions; NaN (undefined) where the kit's function raises,
    so that a submission the kit cannot score is never chosen (ramp-blend would stop)."""

    def scored(predictions) -> float:
        try:
            return float(score(truth, predictions))
        except Exception:
            return math.nan

    return scored


class _Fold:
    def __init__(self, score, lower: bool, truth, P, arrays: list[np.ndarray], mean: str | None):
        self.score = _defined_score(score, truth)
        self.lower = lower
        self.P = P
        self.arrays = arrays
        self.combiner = _Mean(P, arrays, mean) if mean else _KitCombine(P, arrays)
        self.members: list[int] = []
        self.single = math.nan  # the best single submission's own score
        self.scores: list[float] = []  # the ensemble's score after 1, 2, ... members

    def better(self, a: float, b: float) -> bool:
        return a < b if self.lower else a > b

    def single_score(self, i: int) -> float:
        return self.score(self.P(y_pred=self.arrays[i]))

    def run(self, n: int) -> None:
        """The whole selection over the first n submissions, as ramp-blend runs it."""
        singles = [self.single_score(i) for i in range(n)]
        if all(math.isnan(s) for s in singles):  # no ensemble: no one contributes on this fold
            self.members, self.scores, self.single = [], [], math.nan
            return
        best = int(np.nanargmin(singles) if self.lower else np.nanargmax(singles))
        self.single = singles[best]
        self.members = [best]
        self.scores = [self.score(self.combiner.combined(self.combiner.total([best]), 1))]
        self.grow(n)

    def grow(self, n: int) -> None:
        """Greedy steps from the current members on, candidates 0..n-1 in order."""
        if not self.members:
            return
        total = self.combiner.total(self.members)
        while len(self.members) < MAX_N_ENSEMBLE:
            k, current = len(self.members), self.scores[-1]
            chosen, chosen_score = -1, current
            for i in range(n):
                s = self.score(self.combiner.plus(total, k, i))
                if self.better(s, chosen_score):
                    chosen, chosen_score = i, s
            if chosen < 0:
                return
            total = self.combiner.grow(total, chosen)
            self.members.append(chosen)
            self.scores.append(chosen_score)

    def replay(self, new: int) -> None:
        """Fit submission `new` (the last of new + 1) into the stored path."""
        if not self.members or self.better(self.single_score(new), self.single):
            self.run(new + 1)
            return
        total = None
        for t in range(1, len(self.members) + 1):
            total = (self.combiner.total(self.members[:t]) if total is None
                     else self.combiner.grow(total, self.members[t - 1]))
            if t == len(self.members) and t >= MAX_N_ENSEMBLE:
                return
            s = self.score(self.combiner.plus(total, t, new))
            if self.better(s, self.scores[t] if t < len(self.members) else self.scores[-1]):
                self.members = self.members[:t] + [new]
                self.scores = self.scores[:t] + [s]
                self.grow(new + 1)
                return

    def state(self) -> dict:
        return {"n_valid": len(self.arrays[0]), "members": self.members, "single": self.single,
                "scores": self.scores}

    def resume(self, stored: dict) -> bool:
        """Take a stored path if it still scores as stored (the predictions did not change)."""
        try:
            members = [int(m) for m in stored["members"]]
            scores = [float(s) for s in stored["scores"]]
            if (stored["n_valid"] != len(self.arrays[0]) or not members
                    or len(scores) != len(members) or max(members) >= len(self.arrays)):
                return False
            final = self.score(self.combiner.combined(self.combiner.total(members), len(members)))
        except (KeyError, TypeError, ValueError):
            return False
        if not math.isclose(final, scores[-1], rel_tol=1e-12, abs_tol=1e-15):
            return False
        self.members, self.scores, self.single = members, scores, float(stored["single"])
        return True


def blend(scorer, valid_indices: list[np.ndarray], preds: list[list[np.ndarray]],
          previous: dict | None = None) -> tuple[list[_Fold], dict]:
    """Per fold, ramp-blend's ensemble of the submissions' validation predictions.

    preds[f][s]: submission s's predictions on every training row, for fold f. `previous`
    is the state of an earlier blend of the first submissions (appended since)."""
    P, score_type = scorer.Predictions, scorer.score_types[0]
    n = len(preds[0])
    float64 = all(p.dtype == np.float64 for fold in preds for p in fold)
    mean = _mean_kind(P) if float64 else None
    folds = []
    for valid, fold_preds in zip(valid_indices, preds, strict=True):
        truth = P(y_true=scorer.truth_train, fold_is=valid)
        folds.append(_Fold(score_type.score_function, bool(score_type.is_lower_the_better),
                           truth, P, [np.asarray(p[valid]) for p in fold_preds], mean))
    n_old = 0
    if (previous and previous.get("kind") == STATE_KIND
            and previous.get("score") == score_type.name
            and len(previous.get("folds", [])) == len(folds)
            and 0 < int(previous.get("n_submissions", 0)) <= n):
        if all(fold.resume(stored) for fold, stored in zip(folds, previous["folds"], strict=True)):
            n_old = int(previous["n_submissions"])
    for fold in folds:
        if not n_old:
            fold.run(n)
        else:
            for new in range(n_old, n):
                fold.replay(new)
    state = {"kind": STATE_KIND, "score": score_type.name, "n_submissions": n,
             "combine": mean or "kit", "folds": [fold.state() for fold in folds]}
    return folds, state


def combined_test_score(scorer, members: list[list[int]], tests: list[list[np.ndarray]]):
    """ramp-blend's combined test score: each fold's members combined, the folds bagged."""
    from rampwf.utils.combine import get_score_cv_bags

    P = scorer.Predictions
    combined = []
    for fold_members, fold_tests in zip(members, tests, strict=True):
        predictions = [P(y_pred=t) for t in fold_tests]
        combined.append(P.combine(predictions, list(fold_members)))
    _, scores = get_score_cv_bags(scorer.score_types[0], combined, P(y_true=scorer.truth_test))
    value = float(scores[-1])
    return None if math.isnan(value) else value


class RampBlend:
    """The per-fold ensembles of `blend`, read as a `scoring.blending` blend: each submission's
    share of each fold's members, averaged over the folds that have an ensemble."""

    def __init__(self, folds: list, state: dict, n: int):
        self.members = [fold.members for fold in folds]  # [] where no one can be scored
        blended = [fold for fold in folds if fold.members]
        self.contributivity = np.zeros(n)
        for fold in blended:  # shares averaged over the folds that have an ensemble
            np.add.at(self.contributivity, fold.members, 1.0 / len(fold.members) / len(blended))
        self.n_blended_folds = len(blended)
        self.combined_scores = [fold.scores[-1] for fold in blended]
        self.best_single_scores = [fold.single for fold in blended]
        self._state = state

    def state(self) -> dict:
        return self._state


def blended_test(scorer, members: list[list[int]], tests: list[list[np.ndarray]]) -> float | None:
    """The blended test score over the folds that have an ensemble: tests[f][s] is candidate
    s's test predictions for fold f; members[f] the indices fold f's ensemble holds."""
    blended = [i for i, fold_members in enumerate(members) if fold_members]
    if not blended:
        return None
    return combined_test_score(scorer, [members[i] for i in blended], [tests[i] for i in blended])
