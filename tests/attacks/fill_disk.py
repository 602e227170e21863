"""Write 1 MB files into its folder, /tmp, /var/tmp and /dev/shm until the disk says no
(at most 64 MB each, so the negative control ends; it removes them then)."""
import os


class Filler:
    def fit(self, X, y):
        block = b"x" * 1024**2
        written, files = 0, []
        try:
            for folder in (".", "/tmp", "/var/tmp", "/dev/shm"):
                for n in range(64):
                    path = os.path.join(folder, f"dr-fill-{os.getpid()}-{n}")
                    with open(path, "wb") as handle:
                        files.append(path)
                        handle.write(block)
                    written += len(block)
        finally:
            print("wrote", written, flush=True)
            for path in files:
                try:
                    os.unlink(path)
                except OSError:
                    pass
        return self

    def predict_proba(self, X):
        import numpy as np

        return np.full((len(X), 3), 1 / 3)


def get_estimator():
    return Filler()
