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

ramp-workflow re-averages the whole ensemble for every candidate, which is what made
ramp-board drop contributivity from its loop. Here a step costs far less:
- the ensemble's running sum is kept, so a candidate costs one addition;
- candidates are scored together with numpy, on only what the score reads (for
  log-loss, the probability of the true class);
- for log-loss the gain of adding a candidate can only shrink as the ensemble grows (the
  running sum only grows and log is concave), so a step re-scores only the candidates
  whose bound on their gain could still win (lazy greedy, Minoux 1978, with bounds
  tightened at each join by one matrix-vector product); for squared errors one
  matrix-vector product ranks every candidate.
The rankings only short-list; each step's choice is made on exact scores computed as
ramp-workflow computes them, so the ensembles are the same. With a min_improvement
every candidate is scored exactly, as ramp-workflow's scan needs. `Blend.add` replays the
stored path with a new submission and recomputes only from the first step at which the
newcomer would have been chosen; `Blend.state` is a small JSON-able summary from which
`contributivity(previous=...)` resumes in another process.
"""

import math
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from ..errors import UsageError
from .blendrank import LazyLogLoss, SquaredError
from .blendscores import _identity, _resolve_score, _Score, _true_class

MAX_N_ENSEMBLE = 80  # ramp-blend's cap on the ensemble's size
CHUNK = 1 << 18  # numbers per block when scoring many candidates at once
KINDS = ("classification", "regression")
CLIP = 1e-15  # ramp-workflow's multiclass combine clips probabilities to [CLIP, 1 - CLIP]
COMBINE = "clip-renormalise-mean"  # in a stored state: the combination it was built with


# --- per-fold state and the greedy selection


class _Rows:
    """One fold's per-submission arrays, with room to append a submission without a copy."""

    def __init__(self, n: int, shape: tuple):
        self.n = n
        # Zeros, not empty: all32 casts the whole buffer, and garbage past the rows
        # written could overflow float32.
        self.data = np.zeros((n + max(8, n // 8),) + shape)
        self.data32: np.ndarray | None = None  # a float32 copy, made when a ranking asks for it

    def all(self) -> np.ndarray:
        return self.data[: self.n]

    def all32(self) -> np.ndarray:
        if self.data32 is None:
            self.data32 = self.data.astype(np.float32)
        return self.data32[: self.n]

    def append(self, row: np.ndarray) -> None:
        if self.n == len(self.data):
            grown = np.zeros((2 * self.n,) + self.data.shape[1:])
            grown[: self.n] = self.all()
            self.data, self.data32 = grown, None
        self.data[self.n] = row
        if self.data32 is not None:
            self.data32[self.n] = row
        self.n += 1


@dataclass
class _Fold:
    y: np.ndarray
    rows: _Rows  # what the score reads of each submission's combinable predictions
    shape: tuple  # one submission's predictions on this fold: (n_valid[, n_classes])
    singles: np.ndarray  # each submission's own score on the fold (NaN: undefined)
    members: list[int] = field(default_factory=list)  # empty: no submission has a score here
    scores: list[float] = field(default_factory=list)  # the ensemble's score after each join

    def eligible(self, n: int | None = None) -> np.ndarray:
        """Which of the first n submissions may be chosen on this fold."""
        return ~np.isnan(self.singles[: self.rows.n if n is None else n])


def _better(a: float, b: float, lower: bool, min_improvement: float) -> bool:
    return a < b - min_improvement if lower else a > b + min_improvement


def _scores_of(score: _Score, fold: _Fold, total, k: int, candidates) -> np.ndarray:
    """Exact scores of the ensembles `total + candidate` of k + 1 members, in blocks."""
    rows = fold.rows.all()
    out = np.empty(len(candidates))
    per = max(1, CHUNK // max(1, rows[0].size))
    for start in range(0, len(candidates), per):
        block = rows[candidates[start : start + per]]  # a copy: safe to change in place
        if total is not None:
            block += total  # the same additions, in the same order, as ramp-workflow's mean
            block /= k + 1
        out[start : start + per] = score.exact(fold.y, block)
    return out


def _pick(scores: np.ndarray, current: float, lower: bool, min_improvement: float) -> int | None:
    """The candidate ramp-workflow's scan keeps: each one must beat the best so far. An
    undefined (NaN) score never does."""
    if min_improvement == 0:
        defined = ~np.isnan(scores)
        if not defined.any():
            return None
        masked = np.where(defined, scores, np.inf if lower else -np.inf)
        i = int(np.argmin(masked) if lower else np.argmax(masked))
        return i if _better(scores[i], current, lower, 0.0) else None
    best, pick = current, None
    for i, s in enumerate(scores):
        if _better(s, best, lower, min_improvement):
            best, pick = s, i
    return pick


def _ranker(score: _Score, fold: _Fold, total: np.ndarray, max_n: int):
    if score.ranking == "log_loss":
        return LazyLogLoss(fold.rows, total, max_n)
    if score.ranking == "squared_error":
        return SquaredError(fold.rows.all(), fold.y)
    return None


def _grow(fold: _Fold, score: _Score, max_n: int, min_improvement: float) -> None:
    """Run the greedy selection from the fold's current members to its end."""
    rows, lower = fold.rows.all(), score.lower_is_better
    eligible = fold.eligible()
    if not eligible.any():
        fold.members, fold.scores = [], []
        return
    everyone = np.flatnonzero(eligible)
    if not fold.members:
        # ramp-blend picks the first member by the submissions' own scores (argmin: the
        # first one on a tie); the ensemble's score is then that of its combination.
        singles = fold.singles[everyone]
        best = int(everyone[np.argmin(singles) if lower else np.argmax(singles)])
        first = _scores_of(score, fold, None, 0, np.array([best]))[0]
        fold.members, fold.scores = [best], [float(first)]
    total = rows[fold.members[0]].copy()
    for c in fold.members[1:]:
        total += rows[c]
    # The rankers short-list among every submission: with some left out, score the rest.
    ranker = _ranker(score, fold, total, max_n) if min_improvement == 0 and eligible.all() else None
    while len(fold.members) < max_n:
        k = len(fold.members)
        candidates = ranker.shortlist(total, k) if ranker else everyone
        scores = _scores_of(score, fold, total, k, candidates)
        scores[~eligible[candidates]] = np.nan
        i = _pick(scores, fold.scores[-1], lower, min_improvement)
        if i is None:
            break
        c = int(candidates[i])
        if ranker:
            ranker.joining(rows[c], total)
        total += rows[c]
        fold.members.append(c)
        fold.scores.append(float(scores[i]))
        if ranker:
            ranker.joined(total)


def _replay(fold: _Fold, score: _Score, max_n: int, min_improvement: float) -> None:
    """Fit the fold's last submission into its stored path, recomputing from where it joins."""
    rows, lower = fold.rows.all(), score.lower_is_better
    new, members, scores = len(rows) - 1, fold.members, fold.scores
    if np.isnan(fold.singles[new]):
        return  # its own score is undefined here: never chosen on this fold
    if not members:  # no one had a score on this fold: it starts the ensemble
        _grow(fold, score, max_n, min_improvement)
        return
    n_members = len(members)
    sums = np.cumsum(rows[members], axis=0)  # the running sums, as the greedy built them
    combined = np.empty((n_members + 1,) + rows.shape[1:])
    combined[0] = rows[new]
    np.add(sums, rows[new], out=combined[1:])
    combined[1:] /= np.arange(2, n_members + 2).reshape((-1,) + (1,) * (rows.ndim - 1))
    new_scores = score.exact(fold.y, combined)
    joins = None
    if _better(fold.singles[new], fold.singles[members[0]], lower, 0.0):
        joins = 0
    else:
        for t in range(1, n_members + 1):
            if t == n_members and n_members >= max_n:
                break
            target = scores[t] if t < n_members else scores[-1]
            if _better(new_scores[t], target, lower, min_improvement):
                joins = t
                break
    if joins is not None:
        fold.members = members[:joins] + [new]
        fold.scores = scores[:joins] + [float(new_scores[joins])]
        _grow(fold, score, max_n, min_improvement)


# --- the public side


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
