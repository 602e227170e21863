"""Overwrite another task's result.json with a perfect score of its own making."""
import json
import os

TARGETS = json.load(open(os.path.join(os.path.dirname(__file__), "targets.json")))


class Forger:
    def fit(self, X, y):
        with open(TARGETS["path"], "w") as handle:
            json.dump({"key": TARGETS["key"], "state": "done", "forged": True}, handle)
        print("forged", TARGETS["path"], flush=True)
        return self

    def predict_proba(self, X):
        import numpy as np

        return np.full((len(X), 3), 1 / 3)


def get_estimator():
    return Forger()
