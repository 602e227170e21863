"""A submission that needs ~2 GB in fit, to show a task stopped at the memory limit."""

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

CHUNK = 100_000_000  # bytes


class MemoryHog(ClassifierMixin, BaseEstimator):
    def fit(self, X, y):
        chunks = []
        for _ in range(20):  # 20 x 100 MB, every page written so it is really resident
            chunks.append(np.ones(CHUNK // 8))
        self.total_ = sum(chunk.nbytes for chunk in chunks)
        return self

    def predict_proba(self, X):
        return np.full((len(X), 3), 1 / 3)


def get_estimator():
    return MemoryHog()
