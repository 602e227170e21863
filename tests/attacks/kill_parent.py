"""SIGKILL its parent and the runner (whose pid it is told)."""
import json
import os
import signal
import time

TARGETS = json.load(open(os.path.join(os.path.dirname(__file__), "targets.json")))


class Killer:
    def fit(self, X, y):
        pids = [os.getppid(), TARGETS["runner"]]
        if TARGETS.get("first") == "runner":  # its parent last: it may be its own group
            pids.reverse()
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
                print("killed", pid, flush=True)
            except OSError as error:
                print("refused", pid, type(error).__name__, flush=True)
        time.sleep(0.5)
        return self

    def predict_proba(self, X):
        import numpy as np

        return np.full((len(X), 3), 1 / 3)


def get_estimator():
    return Killer()
