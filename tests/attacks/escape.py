"""fork, setsid, fork: a grandchild (named TARGETS["name"]) outside the task's session
burns TARGETS["spin"] seconds of CPU, then says so on a pipe; the task waits for that at
most TARGETS["wait"] seconds, then returns."""
import ctypes
import json
import os
import select
import time

TARGETS = json.load(open(os.path.join(os.path.dirname(__file__), "targets.json")))


class Escape:
    def fit(self, X, y):
        done_r, done_w = os.pipe()
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                ctypes.CDLL(None).prctl(15, TARGETS["name"].encode(), 0, 0, 0)
                end = time.process_time() + TARGETS["spin"]
                while time.process_time() < end:
                    pass
                os.write(done_w, b"x")
                time.sleep(60)
                os._exit(0)
            os._exit(0)
        os.close(done_w)
        select.select([done_r], [], [], TARGETS["wait"])
        return self

    def predict_proba(self, X):
        import numpy as np

        return np.full((len(X), 3), 1 / 3)


def get_estimator():
    return Escape()
