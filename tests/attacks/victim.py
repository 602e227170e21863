"""A well-behaved task that names itself (dr-victim) and takes a few seconds."""
import ctypes
import time

from sklearn.linear_model import LogisticRegression


class Victim(LogisticRegression):
    def fit(self, X, y):
        ctypes.CDLL(None).prctl(15, b"dr-victim", 0, 0, 0)
        time.sleep(4)
        return super().fit(X, y)


def get_estimator():
    return Victim(max_iter=500)
