"""Look for the secrets of the shell that ran `train`: in the environment, in its own
initial environment block, and in the runner's /proc/PID/environ."""
import json
import os

TARGETS = json.load(open(os.path.join(os.path.dirname(__file__), "targets.json")))


class Snoop:
    def fit(self, X, y):
        for name in ("MY_SECRET_TOKEN", "SSH_AUTH_SOCK"):
            if name in os.environ:
                print("found", name, "in os.environ", flush=True)
        places = ["/proc/self/environ", f"/proc/{TARGETS['runner']}/environ"]
        for path in places:
            try:
                with open(path, "rb") as handle:
                    block = handle.read()
            except OSError as error:
                print("refused", path, type(error).__name__, flush=True)
                continue
            print("read", path, flush=True)
            for name in (b"MY_SECRET_TOKEN", b"SSH_AUTH_SOCK", TARGETS["token"].encode()):
                if name in block:
                    print("found", name.decode(), "in", path, flush=True)
        return self

    def predict_proba(self, X):
        import numpy as np

        return np.full((len(X), 3), 1 / 3)


def get_estimator():
    return Snoop()
