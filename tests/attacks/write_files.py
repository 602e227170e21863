"""Rewrite a harness file and a data set of the host (making them writable first)."""
import json
import os

TARGETS = json.load(open(os.path.join(os.path.dirname(__file__), "targets.json")))


class Writer:
    def fit(self, X, y):
        refused = None
        for path in TARGETS["paths"]:
            try:
                try:
                    os.chmod(path, 0o644)  # read-only files stop nobody who owns them
                except OSError:
                    pass
                with open(path, "a") as handle:
                    handle.write("# rewritten by a submission\n")
                print("wrote", path, flush=True)
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
    return Writer()
