"""The memory floor `host check` measures: what an empty task reads on this host, and what
measuring it costs.

For each way of measuring (a cgroup of the task, as root; the private memory in /proc,
forced with DATARUN_CGROUPS=0) and each isolation (sandbox, none), the harness `floor`
runs REPEAT times in a fresh working folder, each with a runner of its own: the first run
pays the runner's imports cold (as a first `host check` does), the others warm. Beside
them, the baselines from the same run: the one floor every host had before it was
measured (32 MB, datarun.sizes.MIN_TASK_MEMORY), and the time of the harness `info`, all
that `host check` asked of a host before.

Goal: the measured floor below the old fixed one (so a host's own figure lets limits down
to what really runs), and one measure at most 3 s warm.

Run: .venv/bin/python bench/floor.py [--repeat N] [--quick] [--json]
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

from baselines import MB, memory_bench_options  # noqa: E402
from common import finish, print_table, verdict  # noqa: E402

WARM_GOAL = 3.0  # seconds for one measure with the libraries in the page cache


def run_method(method: str, isolation: str, repeat: int) -> dict:
    from datarun.remote.floor import measure
    from datarun.remote.ops import info

    os.environ["DATARUN_CGROUPS"] = "1" if method == "cgroup" else "0"
    floors, seconds, measured_by = [], [], set()
    with tempfile.TemporaryDirectory(prefix="datarun-bench-floor-") as tmp:
        started = time.perf_counter()
        info(tmp, space="bench")
        info_seconds = time.perf_counter() - started
        for attempt in range(repeat):
            started = time.perf_counter()
            # A space of its own each time: a runner of its own, started as a check starts one.
            answer = measure(tmp, space=f"bench{attempt}", isolation=isolation)
            seconds.append(time.perf_counter() - started)
            floors.append(answer["floor"])
            measured_by.add(answer["measured_by"])
    return {"method": method, "isolation": isolation, "measured_by": sorted(measured_by),
            "floor": statistics.median(floors), "floors": floors, "seconds": seconds,
            "first_seconds": seconds[0], "warm_seconds": statistics.median(seconds[1:] or seconds),
            "info_seconds": info_seconds}


def main(argv: list[str] | None = None) -> dict:
    from datarun.sizes import MIN_TASK_MEMORY

    args, methods = memory_bench_options(__doc__, argv, quick_repeat=2)
    started = time.time()
    runs = [run_method(method, isolation, args.repeat)
            for method in methods for isolation in ("sandbox", "none")]
    rows, met = [], True
    for run in runs:
        met = met and run["floor"] < MIN_TASK_MEMORY and run["warm_seconds"] <= WARM_GOAL
        rows.append([f"{', '.join(run['measured_by'])}, {run['isolation']}", f"{run['floor'] / MB:.1f} MB",
                     f"{MIN_TASK_MEMORY / MB:.0f} MB", f"{run['first_seconds']:.2f} s",
                     f"{run['warm_seconds']:.2f} s", f"{run['info_seconds']:.3f} s"])
    text = io.StringIO()
    print_table(f"an empty task's memory (median of {args.repeat}; MB = 1000**2 bytes)",
                ["measured by", "floor", "fixed floor (baseline)", "first measure", "warm measure",
                 "info (baseline)"], rows, out=text)
    lines = [text.getvalue().rstrip()]
    for run in runs:
        lines.append(f"{run['measured_by'][0]}, {run['isolation']}: floor {run['floor'] / MB:.1f} MB "
                     f"beside the fixed {MIN_TASK_MEMORY / MB:.0f} MB: "
                     f"{'lower' if run['floor'] < MIN_TASK_MEMORY else 'NOT LOWER'}; a warm measure "
                     f"{run['warm_seconds']:.2f} s, goal at most {WARM_GOAL:.0f} s: "
                     f"{verdict(run['warm_seconds'], WARM_GOAL)}")
    figures = {"runs": runs, "met": met, "fixed_floor": MIN_TASK_MEMORY, "seconds": time.time() - started}
    finish(figures, lines, args.json)
    return figures


if __name__ == "__main__":
    main(sys.argv[1:])
