"""Leave a SysV shared-memory segment and files in the world-writable folders; report any
that an earlier task left (TARGETS["mark"] names them)."""
import ctypes
import json
import os

TARGETS = json.load(open(os.path.join(os.path.dirname(__file__), "targets.json")))
IPC_CREAT, IPC_EXCL = 0o1000, 0o2000
FOLDERS = ("/tmp", "/dev/shm", "/run/lock", "/var/tmp")


class Leaver:
    def fit(self, X, y):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.shmget.restype = ctypes.c_int
        key = TARGETS["key"]
        if libc.shmget(key, 0, 0) >= 0:
            print("saw segment", hex(key), flush=True)
        for folder in FOLDERS:
            if os.path.exists(os.path.join(folder, TARGETS["mark"])):
                print("saw file", folder, flush=True)
        if TARGETS["leave"]:
            segment = libc.shmget(key, 8 * 1024**2, IPC_CREAT | 0o666)
            print("segment", segment, flush=True)
            for folder in FOLDERS:
                try:
                    with open(os.path.join(folder, TARGETS["mark"]), "w") as handle:
                        handle.write("left behind")
                    print("left file", folder, flush=True)
                except OSError as error:
                    print("no file", folder, type(error).__name__, flush=True)
        return self

    def predict_proba(self, X):
        import numpy as np

        return np.full((len(X), 3), 1 / 3)


def get_estimator():
    return Leaver()
