"""50 MB of output."""
import sys


class Flood:
    def fit(self, X, y):
        line = "flood " * 170 + "\n"
        for _ in range(50_000):
            sys.stdout.write(line)
        sys.stdout.flush()
        return self

    def predict_proba(self, X):
        import numpy as np

        return np.full((len(X), 3), 1 / 3)


def get_estimator():
    return Flood()
