"""Search its own memory for the validation labels of its fold: every readable range of
/proc/self/mem, then every object the collector knows. The pattern arrives in two
halves, each masked, and is never put together in memory: only the real copy can match."""
import gc
import json
import os

TARGETS = json.load(open(os.path.join(os.path.dirname(__file__), "targets.json")))
CHUNK = 16 * 1024**2


def _half(name):
    mask = TARGETS["mask"]
    return bytes(b ^ mask for b in bytes.fromhex(TARGETS[name]))


def _matches(data, first, second):
    count, start = 0, data.find(first)
    while start >= 0:
        if data[start + len(first): start + len(first) + len(second)] == second:
            count += 1
        start = data.find(first, start + 1)
    return count


class Search:
    def fit(self, X, y):
        first, second = _half("first"), _half("second")
        in_memory = 0
        with open("/proc/self/maps") as maps:
            ranges = [line.split() for line in maps]
        with open("/proc/self/mem", "rb", buffering=0) as mem:
            for fields in ranges:
                if not fields[1].startswith("r") or (len(fields) > 5 and fields[5] in ("[vvar]", "[vsyscall]")):
                    continue
                low, high = (int(part, 16) for part in fields[0].split("-"))
                overlap = len(first) + len(second)
                while low < high:  # in chunks that overlap by a pattern's length
                    size = min(CHUNK, high - low)
                    try:
                        mem.seek(low)
                        data = mem.read(size)
                    except (OSError, ValueError, OverflowError):
                        break
                    in_memory += _matches(data, first, second)
                    del data
                    if low + size >= high:
                        break
                    low += size - overlap
        print("memory matches", in_memory, flush=True)
        in_objects = 0
        gc.unfreeze()  # the runner froze what it held before forking: bring it into sight
        for obj in list(gc.get_objects()):
            if isinstance(obj, dict):
                values = list(obj.values())
            elif isinstance(obj, list | tuple):
                values = list(obj)
            else:
                values = []
                for name in ("y_train", "y_fit"):
                    try:
                        values.append(getattr(obj, name, None))
                    except Exception:
                        pass
            for value in values:
                if isinstance(value, np.ndarray) and value.dtype.kind == "U":
                    in_objects += _matches(value.tobytes(), first, second)
        print("object matches", in_objects, flush=True)
        return self

    def predict_proba(self, X):
        return np.full((len(X), 3), 1 / 3)


import numpy as np  # noqa: E402


def get_estimator():
    return Search()
