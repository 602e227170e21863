"""Becoming a runner: the lock on WORKDIR, thread pools sized before any import, the heavy
imports and a warm-up paid once, then the runner's loop (runner.py).

Everything here happens before the first fork, so every task inherits it: libraries
already imported, thread pools already limited, scikit-learn's first-call costs paid.
"""

import ctypes
import importlib
import os
import time

from .common import Layout, try_lock, write_json
from .runner import Runner, log

THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                    "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS")
PR_SET_CHILD_SUBREAPER = 36
# Imported once by the runner so that tasks, forked from it, find them loaded.
PRELOAD = (
    "numpy", "pandas", "sklearn", "sklearn.base", "sklearn.linear_model", "sklearn.ensemble",
    "sklearn.tree", "sklearn.pipeline", "sklearn.preprocessing", "sklearn.impute",
    "sklearn.compose", "sklearn.model_selection", "sklearn.neighbors", "sklearn.svm",
    "sklearn.dummy", "sklearn.naive_bayes", "sklearn.decomposition", "sklearn.metrics",
    "joblib", "threadpoolctl", "psutil",
)

REQUIRED = ("numpy", "pandas", "sklearn", "psutil")


def thread_environment(threads: int) -> dict[str, str]:
    return {name: str(int(threads)) for name in THREAD_VARIABLES}


def become_subreaper() -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # not Linux: orphans go to init and only live samples count them


def warm_up(threads: int) -> None:
    """Pay once, before any fork, what every task's first fit would pay again."""
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=threads)  # inherited by every forked task
    except ImportError:
        pass
    try:
        import numpy as np
        import pandas as pd
        from sklearn.dummy import DummyClassifier

        X = pd.DataFrame({"a": np.arange(4.0), "b": np.arange(4.0)})
        DummyClassifier().fit(X, np.array([0, 1, 0, 1])).predict_proba(X)
    except Exception:
        pass


def serve(workdir: str | os.PathLike, slots: int, threads: int, idle: float = 60.0,
          space: str | None = None, parent: int | None = None) -> dict:
    """Run the runner in this process until idle; returns at once if another one holds the
    workspace's folder (`space`: the workspace id, see common.Layout)."""
    layout = Layout(workdir, space).make()
    # Thread pools read these when numpy and friends load: set them before any import.
    os.environ.update(thread_environment(threads))
    lock_fd = try_lock(layout.runner_lock, attempts=20)
    if lock_fd is None:
        return {"pid": os.getpid(), "served": False, "reason": "another runner holds this folder"}
    become_subreaper()
    write_json(layout.runner_json, {
        "pid": os.getpid(), "started_at": time.time(), "heartbeat": time.time(),
        "slots": slots, "threads": threads, "state": "starting", "running": [],
    })
    try:
        # What a task process runs is imported now: a sandboxed task cannot import the
        # harness from disk (its folder is not in the sandbox).
        from . import accounting, channel, child, sandbox, workflows  # noqa: F401
        from .scoring import predictions  # noqa: F401

        for name in PRELOAD:
            try:
                importlib.import_module(name)
            except ImportError:
                if name in REQUIRED:
                    raise
        warm_up(threads)
        runner = Runner(layout, slots, threads, idle, lock_fd, parent=parent)
        runner._write_runner_json()
        log(f"runner {os.getpid()} serving {layout.space} with {slots} slots x {threads} threads")
        runner.serve()
    finally:
        os.close(lock_fd)
    return {"pid": os.getpid(), "served": True}
