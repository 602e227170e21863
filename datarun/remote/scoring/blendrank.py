"""Short-listing blend candidates: which submissions could be the next step's best.

`blending` picks each step's member on exact scores; these rankers only narrow the
candidates it scores. For log-loss a candidate's gain can only shrink as the ensemble
grows (lazy greedy, with bounds tightened at each join); for squared errors one
matrix-vector product ranks them all.
"""

import math

import numpy as np

from .blendscores import EPS


def _matvec(matrix: np.ndarray, vector: np.ndarray) -> np.ndarray:
    # einsum, not BLAS: a threaded BLAS gemv on a busy 2-core host was ten times slower
    return np.einsum("ij,j->i", matrix, vector)


class LazyLogLoss:
    """Short-lists log-loss candidates with gains that only shrink as the ensemble grows.

    A candidate's gain is sum_r log1p(p_r / total_r) over rows where clipping cannot bite;
    the rare rows where the ensemble gives the true class almost nothing are scored
    exactly for everyone at every step. A stale gain bounds the fresh one from above.
    When a submission joins, every stale bound is lowered by the least the candidate's gain
    can lose: per row that loss is convex in the candidate's probability, so its chord over
    [0, 1] bounds it, and all the chords cost one matrix-vector product.
    Gains are computed in float32 (several times faster) with a margin far wider than its
    rounding; the exact float64 scores decide among the short-listed.
    """

    def __init__(self, rows, total: np.ndarray, max_n: int):
        """rows: the fold's candidate features, with .all() (float64) and .all32()."""
        self.rows, self.rows32 = rows.all(), rows.all32()
        self.tau = EPS * (max_n + 2) * 2
        self.bound = np.full(rows.n, np.inf)
        self.normal: np.ndarray | None = None
        self.joined(total)

    def joining(self, row: np.ndarray, total: np.ndarray) -> None:
        with np.errstate(divide="ignore", invalid="ignore"):
            slope = np.log1p(row / total) - np.log1p(row / (total + 1))
        assert self.normal is not None  # set by joined() before the first join
        slope[~self.normal] = 0.0
        # a hair less than the float32 product, so a rounding error never makes it a non-bound
        self.bound -= _matvec(self.rows32, slope.astype(np.float32)) * (1 - 1e-4)

    def joined(self, total: np.ndarray) -> None:
        normal = total >= self.tau
        if self.normal is None or not np.array_equal(normal, self.normal):
            self.normal, self.bound[:] = normal, np.inf  # new rows count: old gains are no bound
            self.special = np.flatnonzero(~normal)
            self.kept = None if normal.all() else np.flatnonzero(normal)

    def shortlist(self, total: np.ndarray, k: int) -> np.ndarray:
        extra = np.zeros(len(self.rows))
        if len(self.special):
            sub = (self.rows[:, self.special] + total[self.special]) / (k + 1)
            extra = np.log(np.clip(sub, EPS, 1 - EPS)).sum(axis=1)
        kept = self.kept
        denominator = (total if kept is None else total[kept]).astype(np.float32)
        value = self.bound + extra
        order = np.argsort(-value, kind="stable")
        best, margin = -np.inf, 0.0
        start, size = 0, 8
        while start < len(order) and value[order[start]] >= best - margin:
            block = order[start : start + size]
            part = self.rows32[block] if kept is None else self.rows32[np.ix_(block, kept)]
            part /= denominator
            np.log1p(part, out=part)
            self.bound[block] = part.sum(axis=1, dtype=np.float64)
            value[block] = self.bound[block] + extra[block]
            best = max(best, float(value[block].max()))
            margin = 1e-5 * abs(best) + 1e-9 * len(total)  # float32 rounding is ~1e-7 of it
            start, size = start + size, size * 2
        return np.flatnonzero(value >= best - margin)


class SquaredError:
    """Ranks every candidate's sum of squared errors with one matrix-vector product."""

    def __init__(self, rows: np.ndarray, y: np.ndarray):
        self.rows, self.y = rows, y
        self.norms = np.einsum("ij,ij->i", rows, rows)

    def joining(self, row: np.ndarray, total: np.ndarray) -> None:
        pass

    def joined(self, total: np.ndarray) -> None:
        pass

    def shortlist(self, total: np.ndarray, k: int) -> np.ndarray:
        residual = total / (k + 1) - self.y
        value = (2 / (k + 1)) * _matvec(self.rows, residual) + self.norms / (k + 1) ** 2
        aa, qq = float(residual @ residual), float(self.norms.max()) / (k + 1) ** 2
        margin = 1e-9 * (aa + qq + 2 * math.sqrt(aa * qq)) + 1e-300
        return np.flatnonzero(value <= value.min() + margin)
