"""Send the labels to a server on the host's loopback."""
import json
import os
import socket

TARGETS = json.load(open(os.path.join(os.path.dirname(__file__), "targets.json")))


class Caller:
    def fit(self, X, y):
        with socket.create_connection(("127.0.0.1", TARGETS["port"]), timeout=5) as conn:
            conn.sendall(b"labels please")
        print("connected", flush=True)
        return self

    def predict_proba(self, X):
        import numpy as np

        return np.full((len(X), 3), 1 / 3)


def get_estimator():
    return Caller()
