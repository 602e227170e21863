"""The harness's CPU time and peak memory against /usr/bin/time -v for the same work.

The submission fits with two joblib worker processes, each holding 150 MiB while it spins
for two seconds of CPU. The same work runs as a standalone script under `/usr/bin/time -v`,
minus the same script doing only its imports (harness tasks inherit their imports).
`time -v` sees only the largest single process's memory; the harness sums the tree.
"""

import os
import re
import shutil
import subprocess
import sys

import pytest
from harness_helpers import DATA_IRIS, stop_runner, submit, wait_finished, write_dataset

from datarun.remote import ops
from datarun.remote.startup import thread_environment

MiB = 1024**2

WORKERS = """
import time

import numpy as np
from joblib import Parallel, delayed


def hold(megabytes, cpu_seconds):
    block = np.ones(megabytes * 1024**2 // 8)
    end = time.process_time() + cpu_seconds
    while time.process_time() < end:
        for _ in range(20_000):
            pass
    return float(block[::4096].sum())


class Pool:
    def fit(self, X, y):
        Parallel(n_jobs=2)(delayed(hold)(150, 2.0) for _ in range(2))
        return self

    def predict_proba(self, X):
        return np.full((len(X), 3), 1 / 3)


def get_estimator():
    return Pool()
"""

STANDALONE = """
import sys
sys.path.insert(0, sys.argv[1])
import estimator
if sys.argv[2] == "work":
    estimator.get_estimator().fit(None, None)
"""


def _time_v(script, folder, mode) -> tuple[float, int]:
    """(user+sys seconds, max RSS bytes) of `python script folder mode` under /usr/bin/time -v."""
    env = {**os.environ, **thread_environment(1)}
    run = subprocess.run(["/usr/bin/time", "-v", sys.executable, str(script), str(folder), mode],
                         capture_output=True, text=True, env=env, check=True)
    user = float(re.search(r"User time \(seconds\): ([\d.]+)", run.stderr).group(1))
    system = float(re.search(r"System time \(seconds\): ([\d.]+)", run.stderr).group(1))
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", run.stderr).group(1))
    return user + system, rss * 1024


def _harness_run(workdir, meta, key) -> dict:
    submit(workdir, key, WORKERS, meta, DATA_IRIS)
    result = wait_finished(workdir, [key], timeout=60)[key]
    assert result["state"] == "done", result["error"]
    return result


@pytest.mark.slow
# scripts/setup-test-env.sh installs GNU time as root (CI): only a run without root may lack it.
@pytest.mark.skipif(not shutil.which("/usr/bin/time") and os.geteuid() != 0,
                    reason="needs GNU time at /usr/bin/time (scripts/setup-test-env.sh installs it as root)")
def test_joblib_workers_are_measured_like_time_v_but_summed(tmp_path):
    workdir = tmp_path / "work"
    meta = write_dataset(workdir, DATA_IRIS, "classification")
    folder = tmp_path / "standalone"
    folder.mkdir()
    (folder / "estimator.py").write_text(WORKERS)
    script = folder / "run.py"
    script.write_text(STANDALONE)
    # Other work on the machine only ever adds CPU time: interleave the two ways of
    # measuring and compare the least each one saw.
    runner = ops.start_runner(workdir, slots=1, threads=1, idle=30)
    harness, standalone, largest_rss = [], [], 0
    try:
        for attempt in range(2):
            harness.append(_harness_run(workdir, meta, f"pool{attempt}"))
            work_cpu, rss = _time_v(script, folder, "work")
            imports_cpu, _ = _time_v(script, folder, "imports")
            standalone.append(work_cpu - imports_cpu)
            largest_rss = max(largest_rss, rss)
    finally:
        stop_runner(runner["pid"])
    measured = min(result["cpu_time"] for result in harness)
    expected = min(standalone)

    assert expected > 4.0
    assert abs(measured - expected) <= 0.10 * expected, (harness, standalone)
    for result in harness:
        # Each worker holds 150 MiB at the same time: the tree's peak is at least their
        # sum, where time -v reports only the largest process.
        assert result["peak_memory"] >= 2 * 150 * MiB
        assert result["peak_memory"] > largest_rss
        assert result["train_time"] >= 2.0
