"""Read files by absolute path: labels, a kit's test.csv, another team's task, the
database, an SSH key, the runner's environment."""
import json
import os

TARGETS = json.load(open(os.path.join(os.path.dirname(__file__), "targets.json")))


class Reader:
    def fit(self, X, y):
        refused = None
        for path in TARGETS["paths"]:
            try:
                with open(path, "rb") as handle:
                    data = handle.read()
                print("read", path, len(data), flush=True)
            except OSError as error:
                print("refused", path, type(error).__name__, flush=True)
                refused = error
        if refused is not None:
            raise refused
        return self

    def predict_proba(self, X):
        import numpy as np

        return np.full((len(X), 3), 1 / 3)


def get_estimator():
    return Reader()
