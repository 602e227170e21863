"""One fold's greedy selection: ramp-blend's ensemble, built fast and replayed.

On a fold, greedy forward selection with replacement (Caruana et al. 2004) over every
submission's validation predictions. The ensemble starts from the best single submission
(by its own score); each step adds the submission whose addition scores best (the first
one on a tie) and the selection stops when no addition improves the score, or at the cap
on members. A submission whose own score is undefined on a fold is never chosen on that
fold; a fold where every submission's score is undefined has no ensemble.

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
every candidate is scored exactly, as ramp-workflow's scan needs. `_replay` fits a
newly appended submission into a fold's stored path and recomputes only from the first
step at which the newcomer would have been chosen.

`blending` builds these folds from a problem's predictions and reads the figures off them.
"""

from dataclasses import dataclass, field

import numpy as np

from .blendrank import LazyLogLoss, SquaredError
from .blendscores import _Score

CHUNK = 1 << 18  # numbers per block when scoring many candidates at once


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
