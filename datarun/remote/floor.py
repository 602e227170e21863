"""`floor`: what a task that does nothing measures on this host.

A memory limit below it kills every task, even an empty one, so the organiser refuses
such a limit (`problem add`, `train`). The figure depends on the host: its Python and
libraries, whether tasks are sandboxed (the sandbox's tmpfs is charged to the task), and
how memory is measured (a cgroup's charge or the private memory in /proc). So it is
measured, not guessed: an empty task (an estimator whose fit and predict do nothing, on
an eight-row data set) runs through a runner of its own, exactly as a submission's task
would, and its recorded peak memory is the answer.

The runner serves a workspace folder of its own (`<workspace id>-floor`), so the
workspace's own runner and tasks are never touched, and it is stopped once the task ends. Every file it needs is written here: nothing is shipped for it.
"""

import json
import os
import shutil
import signal
import time
from pathlib import Path

from .common import HarnessError, Layout, read_json

KEY = "floor-1"
WAIT = 120.0  # seconds: a runner's start (its imports) and one empty task

EMPTY_ESTIMATOR = '''\
import time

import numpy as np


class Empty:
    """Does nothing: what every task pays before its own work. It waits a fifth of a
    second in fit, so that a measure by sampling (/proc, every ~50 ms) sees it at all."""

    def fit(self, X, y):
        time.sleep(0.2)
        return self

    def predict_proba(self, X):
        return np.full((len(X), 2), 0.5)


def get_estimator():
    return Empty()
'''

DATA_CSV = "x\n" + "".join(f"{i}\n" for i in range(8))


def _write_dataset(layout: Layout) -> str:
    """The empty task's data set, under its content hash (as a shipped one would be)."""
    import numpy as np

    from .incoming import tree_hash

    staging = layout.data / f".tmp-floor-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    (staging / "X_train.csv").write_text(DATA_CSV)
    (staging / "X_test.csv").write_text(DATA_CSV)
    np.save(staging / "y_train.npy", np.array(["a", "b"] * 4), allow_pickle=False)
    meta = {"kind": "classification", "classes": ["a", "b"], "target": "y", "n_train": 8,
            "n_test": 8, "columns": ["x"]}
    (staging / "meta.json").write_text(json.dumps(meta))
    digest = tree_hash(staging)
    final = layout.data_set(digest)
    if Layout.is_complete(final):
        shutil.rmtree(staging, ignore_errors=True)
    else:
        shutil.rmtree(final, ignore_errors=True)
        os.rename(staging, final)
        Layout.mark_complete(final)
    return digest


def _write_task(layout: Layout, digest: str, isolation: str, threads: int) -> Path:
    import numpy as np

    folder = layout.task(KEY)
    shutil.rmtree(folder, ignore_errors=True)
    (folder / "submission").mkdir(parents=True)
    (folder / "submission" / "estimator.py").write_text(EMPTY_ESTIMATOR)
    np.save(folder / "train_idx.npy", np.arange(6), allow_pickle=False)
    np.save(folder / "valid_idx.npy", np.arange(6, 8), allow_pickle=False)
    task = {"key": KEY, "task_id": 0, "attempt": 1, "submission": 0, "fold": 0, "problem": "floor",
            "data": digest, "workflow": "estimator", "kind": "classification", "classes": ["a", "b"],
            "files": ["estimator.py"], "threads": threads, "max_output": 64 * 1024,
            "limits": {"wall_time": 60.0, "cpu_time": None, "memory": None}, "isolation": isolation}
    (folder / "task.json").write_text(json.dumps(task))
    layout.marker(KEY).touch()
    return folder


def _stop(pid: int, timeout: float = 10.0) -> None:
    """SIGTERM the runner this command started, and wait for it to be gone (it is our child)."""
    try:
        os.kill(pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return
        except ChildProcessError:  # not ours to reap: watch it instead
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
        time.sleep(0.02)


def measure(workdir: str | os.PathLike, space: str | None = None, isolation: str = "sandbox",
            threads: int = 1, python: str | None = None) -> dict:
    """Run one empty task on this host; {"floor": its peak memory in bytes, "measured_by",
    "isolation"}. A task that fails says why (HarnessError)."""
    from .ops import FLOOR_SUFFIX, start_runner

    if isolation not in ("sandbox", "none"):
        isolation = "sandbox"  # "user" is read as the sandbox, as the runner reads it
    layout = Layout(workdir, f"{space}{FLOOR_SUFFIX}" if space else FLOOR_SUFFIX.lstrip("-")).make()
    digest = _write_dataset(layout)
    folder = _write_task(layout, digest, isolation, max(1, int(threads)))
    runner = None
    try:
        started = start_runner(layout.root, 1, max(1, int(threads)), idle=1.0, python=python,
                               space=layout.space_id)
        runner = started["pid"] if started.get("started") else None
        deadline = time.monotonic() + WAIT
        result = None
        while time.monotonic() < deadline:
            result = read_json(folder / "result.json")
            if result is not None:
                break
            time.sleep(0.05)
        if result is None:
            raise HarnessError(f"an empty task did not finish within {WAIT:.0f} s; see {layout.runner_log}")
        if result.get("error_kind"):
            raise HarnessError(f"an empty task failed here ({result.get('error_kind')}): "
                               f"{str(result.get('error') or '')[-300:]}")
        peak = result.get("peak_memory")
        if isinstance(peak, bool) or not isinstance(peak, int | float) or peak <= 0:
            raise HarnessError("an empty task recorded no peak memory here")
        return {"floor": int(peak), "measured_by": result.get("measured_by"), "isolation": isolation}
    finally:
        if runner is not None:  # ours, started for this one task: it goes now, not when idle
            _stop(runner)
        shutil.rmtree(folder, ignore_errors=True)
        layout.marker(KEY).unlink(missing_ok=True)
