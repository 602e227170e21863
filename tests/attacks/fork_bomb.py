"""Fork until the system says no (at most 200, so the negative control ends)."""
import os
import time


class Bomb:
    def fit(self, X, y):
        children = 0
        try:
            while children < 200:
                if os.fork() == 0:
                    time.sleep(30)
                    os._exit(0)
                children += 1
        finally:
            print("forked", children, flush=True)
        return self

    def predict_proba(self, X):
        import numpy as np

        return np.full((len(X), 3), 1 / 3)


def get_estimator():
    return Bomb()
