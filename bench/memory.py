"""The memory figure a task gets: an empty estimator's, and what 200 MB more reads as.

A runner (sandboxed tasks, one slot) runs, one after another, REPEAT times each:
- `empty`: a DummyClassifier, nearly nothing of its own;
- `alloc200`: the same, holding 200 MB (200 * 1000**2 bytes, every page written) for
  half a second during fit.
Each is measured by the cgroup of the task (as root, where datarun may make one) and by
the sum of its processes' private memory from /proc (the method without cgroups; forced
here with DATARUN_CGROUPS=0). Beside them, the baseline from the same run: the runner's
own resident size, which a summed-RSS figure (what datarun reported before) charges to
every task because a task shares those pages copy-on-write.

Goals: the empty estimator's figure at most 30 MB; alloc200 reads 200 +/- 20 MB more.

Run: .venv/bin/python bench/memory.py [--repeat N] [--quick] [--json]
"""

import io
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from baselines import MB, memory_bench_options  # noqa: E402
from common import finish, print_table, verdict  # noqa: E402

EMPTY_GOAL = 30 * MB
DIFF_GOAL, DIFF_TOLERANCE = 200 * MB, 20 * MB

EMPTY = """
from sklearn.dummy import DummyClassifier

def get_estimator():
    return DummyClassifier()
"""

ALLOC = """
import time
import numpy as np
from sklearn.dummy import DummyClassifier

class Holder(DummyClassifier):
    def fit(self, X, y):
        self.block = np.ones(200 * 1000**2 // 8)  # every page written
        time.sleep(0.5)
        return super().fit(X, y)

def get_estimator():
    return Holder()
"""


def run_method(method: str, repeat: int) -> dict:
    import psutil
    from harness_helpers import DATA_IRIS, stop_runner, submit, wait_finished, write_dataset

    from datarun.remote import ops

    os.environ["DATARUN_CGROUPS"] = "1" if method.startswith("cgroup") else "0"
    with tempfile.TemporaryDirectory(prefix="datarun-bench-memory-") as tmp:
        workdir = Path(tmp) / "work"
        meta = write_dataset(workdir, DATA_IRIS, "classification")
        runner = ops.start_runner(workdir, slots=1, threads=1, idle=60)
        figures: dict[str, list[int]] = {"empty": [], "alloc200": []}
        measured_by = set()
        try:
            for attempt in range(repeat):
                for name, code in (("empty", EMPTY), ("alloc200", ALLOC)):
                    key = f"{name}-{attempt}"
                    submit(workdir, key, code, meta, DATA_IRIS)
                    result = wait_finished(workdir, [key], timeout=120)[key]
                    if result["state"] != "done":
                        raise RuntimeError(f"{key}: {result['error']}")
                    figures[name].append(result["peak_memory"])
                    measured_by.add(result["measured_by"])
            runner_rss = psutil.Process(runner["pid"]).memory_info().rss  # imports paid by now
        finally:
            stop_runner(runner["pid"])
    empty = statistics.median(figures["empty"])
    alloc = statistics.median(figures["alloc200"])
    return {"method": method, "measured_by": sorted(measured_by), "runner_rss": runner_rss,
            "empty": empty, "alloc200": alloc, "difference": alloc - empty, "all": figures}


def main(argv: list[str] | None = None) -> dict:
    args, methods = memory_bench_options(__doc__, argv, quick_repeat=1)
    started = time.time()
    runs = [run_method(method, args.repeat) for method in methods]
    rows = []
    met = True
    for run in runs:
        empty_ok = run["empty"] <= EMPTY_GOAL
        diff_ok = abs(run["difference"] - DIFF_GOAL) <= DIFF_TOLERANCE
        met = met and empty_ok and diff_ok
        rows.append([", ".join(run["measured_by"]), f"{run['runner_rss'] / MB:.1f} MB",
                     f"{run['empty'] / MB:.1f} MB", f"{run['alloc200'] / MB:.1f} MB",
                     f"{run['difference'] / MB:+.1f} MB"])
    text = io.StringIO()
    print_table(f"memory figure of a sandboxed task (median of {args.repeat}; MB = 1000**2 bytes)",
                ["measured by", "runner RSS (baseline)", "empty", "alloc200", "difference"],
                rows, out=text)
    lines = [text.getvalue().rstrip()]
    for run in runs:
        lines.append(f"{run['measured_by'][0]}: empty estimator {run['empty'] / MB:.1f} MB, goal at "
                     f"most {EMPTY_GOAL / MB:.0f} MB: {verdict(run['empty'], EMPTY_GOAL)}; 200 MB reads "
                     f"{run['difference'] / MB:+.1f} MB, goal 200 +/- 20: "
                     f"{'met' if abs(run['difference'] - DIFF_GOAL) <= DIFF_TOLERANCE else 'MISSED'}")
    figures = {"runs": runs, "met": met, "seconds": time.time() - started}
    finish(figures, lines, args.json)
    return figures


if __name__ == "__main__":
    main(sys.argv[1:])
