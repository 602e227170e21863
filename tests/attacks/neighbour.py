"""Find another task's process by its name among all processes, then signal and ptrace it."""
import ctypes
import os
import signal
import time

PTRACE_ATTACH = 16


class Neighbour:
    def fit(self, X, y):
        deadline = time.monotonic() + 3
        found = []
        while not found and time.monotonic() < deadline:
            for name in os.listdir("/proc"):
                if not name.isdigit():
                    continue
                try:
                    with open(f"/proc/{name}/comm") as handle:
                        if handle.read().strip() == "dr-victim":
                            found.append(int(name))
                except OSError:
                    continue
            time.sleep(0.05)
        if not found:
            print("no victim in sight", flush=True)
        libc = ctypes.CDLL(None, use_errno=True)
        libc.ptrace.restype = ctypes.c_long
        for pid in found:
            if libc.ptrace(PTRACE_ATTACH, pid, 0, 0) == 0:
                print("traced", pid, flush=True)
            try:
                os.kill(pid, signal.SIGKILL)
                print("killed", pid, flush=True)
            except OSError as error:
                print("refused", pid, type(error).__name__, flush=True)
        return self

    def predict_proba(self, X):
        import numpy as np

        return np.full((len(X), 3), 1 / 3)


def get_estimator():
    return Neighbour()
