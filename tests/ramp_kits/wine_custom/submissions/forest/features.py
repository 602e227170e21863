import numpy as np


class Features:
    """The raw columns and their logarithms."""

    def fit(self, X, y):
        return self

    def transform(self, X):
        return np.hstack([X, np.log1p(np.abs(X))])
