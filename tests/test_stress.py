"""Limits under stress, through the whole `datarun train` path on the local host.

A memory bomb, CPU spinning in joblib's worker processes, an endless loop and a flood of
output each end as their error kind, with their whole process tree gone; the runner that
ran them is the one that runs the next, well-behaved submission to the end.
"""

import json

import psutil
import pytest
from test_operator import GOOD, flowers, submit, tasks_of  # noqa: F401  (flowers is a fixture)

from datarun.executors.local import local_layout

MEMORY_BOMB = """
import time
import numpy as np

class Bomb:
    def fit(self, X, y):
        hoard = []
        while True:  # 50 MB a step, every page touched
            hoard.append(np.ones(50 * 1024**2 // 8))
            time.sleep(0.01)

def get_estimator():
    return Bomb()
"""

SPINNING_WORKERS = """
import time
from joblib import Parallel, delayed

def spin(seconds):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass

class Spinner:
    def fit(self, X, y):
        Parallel(n_jobs=2)(delayed(spin)(60) for _ in range(2))

def get_estimator():
    return Spinner()
"""

ENDLESS_LOOP = """
class Loop:
    def fit(self, X, y):
        n = 0
        while True:
            n += 1

def get_estimator():
    return Loop()
"""

FLOOD = """
import sys

class Chatty:
    def fit(self, X, y):
        n = 0
        while True:
            sys.stdout.write(f"line {n} of an endless flood\\n")
            n += 1

def get_estimator():
    return Chatty()
"""


def runner_pid(workspace) -> int:
    return json.loads(local_layout(workspace).runner_json.read_text())["pid"]


def train_until_failed(cli, tmp_path, name: str, code: str, *limits: str) -> list[dict]:
    submission = submit(cli, tmp_path, name, code)
    result = cli("train", "--submission", submission, *limits, "--json")
    assert result.exit_code == 1, result.stderr
    assert result.json()["failed"] == 2
    return tasks_of(cli, submission)


def host_carries_on(workspace, cli, tmp_path, runner: int) -> None:
    """Nothing of the bad tasks is left, and the same runner runs a good submission."""
    # At most the sandbox made ahead for the next task is left (the runner's copy that made
    # it, the process waiting in it, its init): idle and small, unlike the bad tasks' processes.
    leftovers = [p for p in psutil.Process(runner).children(recursive=True)
                 if p.status() != psutil.STATUS_ZOMBIE]
    assert len(leftovers) <= 3 and [p.name() for p in leftovers].count("sleep") <= 1, leftovers
    for process in leftovers:
        cpu = process.cpu_times()
        assert cpu.user + cpu.system < 1.0 and process.memory_info().rss < 400 * 1000**2, process
    good = submit(cli, tmp_path, "good", GOOD)
    assert cli("train", "--submission", good).exit_code == 0
    assert {t["state"] for t in tasks_of(cli, good)} == {"done"}
    assert runner_pid(workspace) == runner and psutil.pid_exists(runner)


@pytest.fixture
def warm(flowers, cli, tmp_path):  # noqa: F811
    """The local host's runner started by a first, good submission."""
    first = submit(cli, tmp_path, "first", GOOD, team="warm")
    assert cli("train", "--submission", first).exit_code == 0
    return runner_pid(flowers)


def test_a_memory_bomb_ends_as_memory_limit(flowers, warm, cli, tmp_path):  # noqa: F811
    tasks = train_until_failed(cli, tmp_path, "bomb", MEMORY_BOMB, "--memory", "400MB")
    for task in tasks:
        assert task["error_kind"] == "memory_limit"
        assert task["error"].startswith("memory limit 400.0 MB exceeded: peak ")
        assert task["peak_memory"] > 400 * 1000**2
    host_carries_on(flowers, cli, tmp_path, warm)


def test_cpu_spinning_in_joblib_workers_ends_as_cpu_limit(flowers, warm, cli, tmp_path):  # noqa: F811
    tasks = train_until_failed(cli, tmp_path, "spin", SPINNING_WORKERS, "--cpu-time", "3s")
    for task in tasks:
        assert task["error_kind"] == "cpu_limit"
        assert task["error"].startswith("cpu time limit 3.0 s exceeded")
        assert task["cpu_time"] >= 3.0
        assert task["wall_time"] < 30
    host_carries_on(flowers, cli, tmp_path, warm)


def test_an_endless_loop_ends_as_timeout(flowers, warm, cli, tmp_path):  # noqa: F811
    tasks = train_until_failed(cli, tmp_path, "loop", ENDLESS_LOOP, "--wall-time", "2s")
    for task in tasks:
        assert task["error_kind"] == "timeout"
        assert task["error"].startswith("wall time limit 2.0 s exceeded")
        assert 2.0 <= task["wall_time"] < 10
    host_carries_on(flowers, cli, tmp_path, warm)


def test_a_flood_of_output_is_capped_with_its_head_and_tail_kept(flowers, warm, cli, tmp_path):  # noqa: F811
    tasks = train_until_failed(cli, tmp_path, "flood", FLOOD, "--wall-time", "2s")
    for task in tasks:
        assert task["error_kind"] == "timeout"
        log = cli("logs", task["id"]).stdout
        assert len(log.encode()) < (1 << 20) + 200  # the dispatcher's 1 MiB cap, plus the note
        assert log.startswith("line 0 of an endless flood\nline 1 of an endless flood\n")
        head, note, tail = log.partition(" bytes of output skipped ...]\n")
        skipped = int(head.rsplit("[... ", 1)[1])
        assert skipped > 1 << 20  # far more was printed than kept
        last = [line for line in tail.splitlines() if line.startswith("line ")][-1]
        assert int(last.split()[1]) > 100_000  # the tail is the end of the flood
    host_carries_on(flowers, cli, tmp_path, warm)
