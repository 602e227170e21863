"""Contributivity: each submission's share of the best ensemble, and the blended score.

The definition is ramp-workflow's (`ramp-blend`): on each fold, greedy forward selection
with replacement (Caruana et al. 2004) over every submission's validation predictions.
The ensemble starts from the best single submission (by its own score); its prediction
is its members' predictions combined as ramp-workflow's `Predictions.combine` does:
class probabilities clipped to [1e-15, 1 - 1e-15] and renormalised per row, then
averaged; regression values averaged. Each step adds the submission whose addition
scores best (the first one on a tie) and the selection stops when no addition improves
the score, or at 80 members. A submission's contributivity is its share of the members,
averaged over the folds that have an ensemble.

Where ramp-blend meets an undefined score (NaN, e.g. roc_auc on a fold whose validation
rows lack a class) it takes the first submission by default; here a submission whose own
score is undefined on a fold is never chosen on that fold, and a fold where every
submission's score is undefined has no ensemble and gives no contributivity to anyone.

Each fold's selection, and what makes it fast, is `blendgreedy`'s. Here: the inputs
checked and brought to the form the score reads, the `Blend` the figures are read from,
and its incremental state. `Blend.add` replays the stored path with a new submission and
recomputes only from the first step at which the newcomer would have been chosen;
`Blend.state` is a small JSON-able summary from which `contributivity(previous=...)`
resumes in another process.
"""

import math
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from ..errors import UsageError
from .blendgreedy import CHUNK, _Fold, _grow, _replay, _Rows
from .blendscores import _identity, _resolve_score, _Score, _true_class

MAX_N_ENSEMBLE = 80  # ramp-blend's cap on the ensemble's size
KINDS = ("classification", "regression")
CLIP = 1e-15  # ramp-workflow's multiclass combine clips probabilities to [CLIP, 1 - CLIP]
COMBINE = "clip-renormalise-mean"  # in a stored state: the combination it was built with


@dataclass
class Blend:
    """Per-fold ensembles of a set of submissions, and what they say about each submission."""

    score: str
    lower_is_better: bool
    max_n_ensemble: int
    min_improvement: float
    _folds: list[_Fold] = field(repr=False)
    _score: _Score = field(repr=False)
    _kind: str = field(repr=False)
    n_jobs: int = field(default=1, repr=False)

    @property
    def n_submissions(self) -> int:
        return self._folds[0].rows.n

    @property
    def members(self) -> list[list[int]]:
        """Per fold, the ensemble's members in the order they joined, repeats included."""
        return [list(f.members) for f in self._folds]

    @property
    def n_blended_folds(self) -> int:
        """Folds with an ensemble: those where some submission's score is defined."""
        return sum(1 for f in self._folds if f.members)

    @property
    def fold_contributivity(self) -> np.ndarray:
        """(n_submissions, n_folds): each submission's share of a fold's ensemble, divided by
        the number of folds with an ensemble (a fold without one has a column of zeros)."""
        out = np.zeros((self.n_submissions, len(self._folds)))
        for f, fold in enumerate(self._folds):
            if fold.members:
                np.add.at(out[:, f], fold.members, 1.0 / len(fold.members))
        return out / max(1, self.n_blended_folds)

    @property
    def contributivity(self) -> np.ndarray:
        """(n_submissions,): shares of the ensembles' members averaged over the folds that
        have an ensemble; sums to 1, or is all zeros when no fold has one."""
        return self.fold_contributivity.sum(axis=1)

    @property
    def combined_scores(self) -> list[float]:
        """Per fold, the valid score of the blended ensemble (NaN: no ensemble)."""
        return [f.scores[-1] if f.members else math.nan for f in self._folds]

    @property
    def best_single_scores(self) -> list[float]:
        """Per fold, the best single submission's own valid score (NaN: none defined)."""
        return [float(f.singles[f.members[0]]) if f.members else math.nan for f in self._folds]

    def add(self, preds_per_fold: Sequence[np.ndarray]) -> "Blend":
        """Add one submission (per fold: n_valid[, n_classes]) as the last one; in place."""
        if len(preds_per_fold) != len(self._folds):
            raise UsageError(
                f"the new submission has predictions for {len(preds_per_fold)} folds; "
                f"the blend has {len(self._folds)}"
            )
        rows = []
        for f, (fold, p) in enumerate(zip(self._folds, preds_per_fold, strict=True)):
            if np.shape(p) != fold.shape:
                raise UsageError(
                    f"fold {f}: the new submission's predictions have shape {np.shape(p)}; "
                    f"the others' have {fold.shape}"
                )
            rows.append(_features(self._kind, self._score, f, fold.y, np.asarray(p)[None], 1))
        for fold, (row, singles) in zip(self._folds, rows, strict=True):
            fold.rows.append(row.all()[0])
            fold.singles = np.append(fold.singles[: fold.rows.n - 1], singles)
        self._each_fold(_replay)
        return self

    def state(self) -> dict:
        """A small JSON-able summary from which `contributivity(previous=...)` resumes."""
        return {
            "combine": COMBINE,
            "score": self.score,
            "lower_is_better": self.lower_is_better,
            "max_n_ensemble": self.max_n_ensemble,
            "min_improvement": self.min_improvement,
            "n_submissions": self.n_submissions,
            "folds": [
                {"n_valid": len(f.y), "members": list(f.members), "scores": list(f.scores)}
                for f in self._folds
            ],
        }

    def _each_fold(self, step: Callable) -> None:
        args = (self._score, self.max_n_ensemble, self.min_improvement)
        if self.n_jobs > 1 and len(self._folds) > 1:
            with ThreadPoolExecutor(min(self.n_jobs, len(self._folds))) as pool:
                list(pool.map(lambda fold: step(fold, *args), self._folds))
        else:
            for fold in self._folds:
                step(fold, *args)


def combinable(kind: str, preds: np.ndarray) -> np.ndarray:
    """Predictions as ramp-workflow's combine uses them: a new array.

    Class probabilities are clipped to [1e-15, 1 - 1e-15] and renormalised per row (the
    last axis), so their mean is ramp-blend's combination; regression values are as given.
    """
    if kind != "classification":
        return np.array(preds, dtype=np.float64)
    out = np.clip(preds, CLIP, 1 - CLIP)
    out /= _clipped_row_sums(preds)[..., None]
    return out


def _clipped_row_sums(preds: np.ndarray) -> np.ndarray:
    """Each row's sum once clipped, as np.sum gives it. numpy sums a short last axis slowly
    (several times slower than adding its columns); below 8 classes its sum is the plain
    left-to-right one, which adding the columns repeats exactly."""
    # Most models' probabilities need no clipping (trees' and kNN's zeros do): then skip it.
    if preds.size and (preds.min() < CLIP or preds.max() > 1 - CLIP):
        preds = np.clip(preds, CLIP, 1 - CLIP)
    if preds.shape[-1] >= 8:
        return preds.sum(axis=-1)
    total = preds[..., 0].copy()
    for c in range(1, preds.shape[-1]):
        total += preds[..., c]
    return total


def _features(kind: str, score: _Score, f: int, y: np.ndarray, preds,
              n_submissions: int) -> tuple[_Rows, np.ndarray]:
    """Check one fold's predictions; return what the score reads of their combinable form,
    and each submission's own score on the raw predictions (NaN where undefined)."""
    preds = np.asarray(preds, dtype=np.float64)
    per_row = ", n_classes" if kind == "classification" else ""
    if preds.ndim != (3 if per_row else 2) or preds.shape[:2] != (n_submissions, len(y)):
        raise UsageError(
            f"fold {f}: predictions of shape {preds.shape}; {kind} needs (n_submissions, "
            f"n_valid{per_row}) = ({n_submissions}, {len(y)}{per_row}) on every fold"
        )
    if not np.isfinite(preds.sum()):
        raise UsageError(f"fold {f}: predictions hold NaN or infinite values")
    if kind == "classification" and len(y) and (y.min() < 0 or y.max() >= preds.shape[2]):
        raise UsageError(f"fold {f}: true classes must be indices 0..{preds.shape[2] - 1}")
    rows = _Rows(n_submissions, preds.shape[1:] if score.features is _identity else (len(y),))
    score.features(y, preds, rows.all())
    singles = np.empty(n_submissions)
    per = max(1, CHUNK // max(1, rows.all()[0].size)) if rows.n else 1
    with np.errstate(all="ignore"):
        for start in range(0, rows.n, per):  # in blocks that stay in the cache
            singles[start : start + per] = score.exact(y, rows.all()[start : start + per])
    if kind == "classification" and score.features is _true_class:
        # Only the true class's share of each clipped row is read: no full copy needed.
        share = rows.all()
        np.clip(share, CLIP, 1 - CLIP, out=share)
        share /= _clipped_row_sums(preds)
    elif kind == "classification":
        score.features(y, combinable(kind, preds), rows.all())
    return rows, singles


def _resumable(previous: dict, blend: Blend, n_submissions: int) -> int:
    """How many submissions a stored state covers, or 0 if it does not fit these inputs."""
    try:
        folds, n_old = previous["folds"], int(previous["n_submissions"])
        if (
            previous.get("combine") != COMBINE
            or (previous["score"], previous["lower_is_better"]) != (blend.score, blend.lower_is_better)
            or (previous["max_n_ensemble"], previous["min_improvement"])
            != (blend.max_n_ensemble, blend.min_improvement)
            or len(folds) != len(blend._folds)
            or not 0 < n_old <= n_submissions
        ):
            return 0
        for stored, fold in zip(folds, blend._folds, strict=True):
            members, scores = [int(m) for m in stored["members"]], [float(s) for s in stored["scores"]]
            if stored["n_valid"] != len(fold.y) or len(members) != len(scores):
                return 0
            eligible = fold.eligible(n_old)
            if not members:  # right only if no one's score was defined on this fold
                if eligible.any():
                    return 0
                continue
            if min(members) < 0 or max(members) >= n_old or not eligible[members].all():
                return 0
            total = fold.rows.all()[members].sum(axis=0) / len(members)
            if not math.isclose(blend._score.exact(fold.y, total[None])[0], scores[-1], rel_tol=1e-9):
                return 0  # the predictions changed since the state was stored
    except (KeyError, TypeError, ValueError):
        return 0
    return n_old


def contributivity(
    kind: str,
    score: str | Callable[[np.ndarray, np.ndarray], float],
    y_true_per_fold: Sequence[np.ndarray],
    preds_per_fold: Sequence[np.ndarray],
    *,
    lower_is_better: bool | None = None,
    max_n_ensemble: int = MAX_N_ENSEMBLE,
    min_improvement: float = 0.0,
    previous: dict | None = None,
    n_jobs: int = 1,
) -> Blend:
    """Blend every submission on every fold and return each one's contributivity.

    kind: "classification" (predictions (n_submissions, n_valid, n_classes) of
    probabilities, true values as class indices) or "regression" (predictions
    (n_submissions, n_valid)). score: a built-in name (see BUILTIN) or a function
    score(y_true, y_pred) -> float with lower_is_better. previous: a `Blend.state()` of
    the same inputs' first submissions (submissions only ever appended); the ones after
    it are added incrementally. A state that does not fit is ignored.
    """
    if kind not in KINDS:
        raise UsageError(f"kind must be classification or regression, not {kind!r}")
    resolved = _resolve_score(score, lower_is_better)
    if len(y_true_per_fold) != len(preds_per_fold) or not preds_per_fold:
        raise UsageError(
            f"{len(y_true_per_fold)} folds of true values but {len(preds_per_fold)} folds of "
            "predictions; give both for the same folds, at least one"
        )
    if max_n_ensemble < 1 or min_improvement < 0:
        raise UsageError("max_n_ensemble must be at least 1 and min_improvement at least 0")
    n_submissions = len(preds_per_fold[0])
    if n_submissions == 0:
        raise UsageError("no submissions to blend")
    ys = [np.asarray(y) for y in y_true_per_fold]
    if kind == "classification" and not all(np.issubdtype(y.dtype, np.integer) for y in ys):
        raise UsageError("classification true values must be class indices (integers)")
    folds = []
    for f, (y, p) in enumerate(zip(ys, preds_per_fold, strict=True)):
        rows, singles = _features(kind, resolved, f, y, p, n_submissions)
        folds.append(_Fold(y, rows, np.shape(p)[1:], singles))
    blend = Blend(
        resolved.name, resolved.lower_is_better, max_n_ensemble, float(min_improvement),
        folds, resolved, kind, n_jobs,
    )
    n_old = _resumable(previous, blend, n_submissions) if previous else 0
    if not n_old or previous is None:
        blend._each_fold(_grow)
        return blend
    for stored, fold in zip(previous["folds"], folds, strict=True):
        fold.members = [int(m) for m in stored["members"]]
        fold.scores = [float(s) for s in stored["scores"]]
        fold.rows.n = n_old  # the later ones join one at a time, as if submitted in order
    for j in range(n_old, n_submissions):
        for fold in folds:
            fold.rows.n = j + 1
        blend._each_fold(_replay)
    return blend
