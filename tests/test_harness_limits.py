"""Each limit hit for real: the task's whole tree dies, the limit is named, the runner goes on.

The submissions here are written to exceed one limit each; they name the processes they
start (their command line or their `comm`), so the test can look for them among the
host's processes afterwards (a sandboxed task sees only its own PID namespace: the pids
it could write down would mean nothing outside).
"""

import pytest
from harness_helpers import (
    DATA_IRIS,
    LOGISTIC,
    alive_named,
    stop_runner,
    submit,
    wait_finished,
    write_dataset,
)

from datarun.remote import ops

NAME = """
import ctypes

def name(text):
    ctypes.CDLL(None).prctl(15, text.encode(), 0, 0, 0)  # PR_SET_NAME: /proc/PID/comm
"""

SLEEPS_WITH_A_GRANDCHILD = NAME + """
import os, subprocess, time
from sklearn.linear_model import LogisticRegression

class Sleepy(LogisticRegression):
    def fit(self, X, y):
        name("dr-wall")
        subprocess.Popen(["sleep", "60.0417"])
        time.sleep(60)

def get_estimator():
    return Sleepy()
"""

SPINS_IN_WORKERS = NAME + """
import os, time
from joblib import Parallel, delayed

def spin(seconds):
    name("dr-spin")
    print("worker", os.getpid(), flush=True)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass
    return 0

class Spinner:  # no scikit-learn import: the workers start light and spin at once
    def fit(self, X, y):
        name("dr-spin")
        Parallel(n_jobs=2)(delayed(spin)(30) for _ in range(2))

def get_estimator():
    return Spinner()
"""

GROWS = NAME + """
import os, time
import numpy as np
from sklearn.linear_model import LogisticRegression

class Hungry(LogisticRegression):
    def fit(self, X, y):
        name("dr-grow")
        chunks = []
        for _ in range(60):  # up to 3 GB, 50 MB at a time, every page touched
            chunks.append(np.ones(50 * 1024**2 // 8))
            time.sleep(0.02)

def get_estimator():
    return Hungry()
"""

ONE_HUGE_ARRAY = """
import numpy as np
from sklearn.linear_model import LogisticRegression

class Greedy(LogisticRegression):
    def fit(self, X, y):
        self.big = np.ones(20 * 1000**3 // 8)

def get_estimator():
    return Greedy()
"""

WORKERS_HOLD_MEMORY = """
import time
import numpy as np
from joblib import Parallel, delayed

def hold(megabytes, seconds):
    block = np.ones(megabytes * 1024**2 // 8)
    time.sleep(seconds)
    return float(block[::4096].sum())

class Pool:
    def fit(self, X, y):
        Parallel(n_jobs=2)(delayed(hold)(400, 30) for _ in range(2))

def get_estimator():
    return Pool()
"""


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("host") / "work"
    meta = write_dataset(workdir, DATA_IRIS, "classification")
    runner = ops.start_runner(workdir, slots=2, threads=1, idle=30)
    yield workdir, meta
    stop_runner(runner["pid"])


def _run(host, key, code, limits):
    workdir, meta = host
    submit(workdir, key, code, meta, DATA_IRIS, limits=limits)
    result = wait_finished(workdir, [key], timeout=60)[key]
    return result, workdir / "tasks" / key


def _assert_tree_dead(*names: str) -> None:
    for name in names:
        assert alive_named(name) == [], name


def _assert_runner_goes_on(host, key):
    result, _ = _run(host, key, LOGISTIC, {})
    assert result["state"] == "done", result["error"]


def test_wall_time_limit_kills_the_task_and_its_grandchildren(host):
    result, folder = _run(host, "wall", SLEEPS_WITH_A_GRANDCHILD, {"wall_time": 1.0})
    assert result["state"] == "failed" and result["error_kind"] == "timeout"
    assert result["error"].startswith("wall time limit 1.0 s exceeded")
    assert 1.0 <= result["wall_time"] < 5.0
    assert result["predictions"] is None
    _assert_tree_dead("dr-wall", "60.0417")
    _assert_runner_goes_on(host, "after-wall")


def test_cpu_time_limit_counts_the_joblib_workers(host):
    result, folder = _run(host, "cpu", SPINS_IN_WORKERS, {"cpu_time": 3.0, "wall_time": 60.0})
    assert result["state"] == "failed" and result["error_kind"] == "cpu_limit"
    assert result["error"].startswith("cpu time limit 3.0 s exceeded")
    # The spinning happens in two workers: the task's own process would never reach 3 s.
    assert result["cpu_time"] >= 3.0
    log = (folder / "output.log").read_text()
    assert len({line for line in log.splitlines() if line.startswith("worker ")}) == 2, log
    _assert_tree_dead("dr-spin")
    _assert_runner_goes_on(host, "after-cpu")


def test_memory_limit_stops_a_growing_task(host):
    limit = 600 * 1000**2
    result, folder = _run(host, "memory", GROWS, {"memory": limit})
    assert result["state"] == "failed" and result["error_kind"] == "memory_limit"
    assert result["error"].startswith("memory limit 600.0 MB exceeded: peak ")
    assert result["peak_memory"] > limit
    _assert_tree_dead("dr-grow")
    _assert_runner_goes_on(host, "after-memory")


def test_one_allocation_beyond_the_backstop_is_a_memory_error(host):
    result, _ = _run(host, "huge", ONE_HUGE_ARRAY, {"memory": 500 * 1000**2})
    assert result["state"] == "failed" and result["error_kind"] == "memory_limit"
    assert "MemoryError" in result["error"]
    assert "submission/estimator.py" in result["error"]


def test_memory_limit_applies_to_the_sum_of_the_workers(host):
    # No single process reaches the limit: each worker holds 400 MiB, together over 700 MB.
    limit = 700 * 1000**2
    result, _ = _run(host, "pool", WORKERS_HOLD_MEMORY, {"memory": limit, "wall_time": 30.0})
    assert result["error_kind"] == "memory_limit", result["error"]
    assert result["peak_memory"] > limit
    assert result["wall_time"] < 25
