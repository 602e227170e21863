"""RAMP kits: `problem add`, `train` and `export --ramp` beside ramp-test on the same kits.

For each kit of tests/ramp_kits/ (a copy, in a scratch folder), from the same run:

- the baselines: a fresh Python that only imports ramp-workflow (`import rampwf`), and one
  that imports the kit's problem.py and calls its get_train_data and get_test_data
  ("rampwf + data": the least any tool that reads a RAMP kit pays);
- datarun: `datarun problem add KIT --json` on a fresh workspace, `datarun train` of the
  starting kit on the local host (one slot, the runner started by train), and `datarun
  export SUBMISSION --ramp DIR`;
- ramp-test: `ramp-test --submission starting_kit` in the kit, its whole wall.

The cores of this machine are shared, so wall times move with others' work. CPU time
does not: the bench also takes, per kit, the CPU seconds of `problem add`'s two sides (the
forked child that reads the kit, the parent that loads the CLI and opens the workspace
meanwhile, then stores) beside the CPU seconds of "rampwf + data". On two free cores the
command's wall is the child's plus the store's, the parent's own work overlapping.

Each side runs --repeat times, the sides interleaved so they share the machine's load;
the table gives the least wall of the runs (the run least disturbed by other work on the
shared cores, the same rule for every side) and the median beside it. The goal:
`problem add` and `export --ramp` take at most "rampwf + data", on the least walls.

Run: .venv/bin/python bench/ramp.py [--quick] [--repeat N] [--json]
"""

import argparse
import io
import json
import shutil
import statistics
import sys
from pathlib import Path

from common import REPO, Workspace, finish, load_note, print_table, temp_folder, timed

KITS = REPO / "tests" / "ramp_kits"
ALL_KITS = ("iris_classifier", "diabetes_regressor", "cancer_estimator", "diabetes_features",
            "diabetes_external", "wine_custom", "diabetes_multi")
QUICK_KITS = ("iris_classifier", "wine_custom")
RAMP_TEST = Path(sys.executable).with_name("ramp-test")

READ_DATA = r'''
import os, sys
sys.path[:0] = [os.path.join(sys.argv[1], "external_imports"), sys.argv[1]]
import importlib.util
spec = importlib.util.spec_from_file_location("problem", os.path.join(sys.argv[1], "problem.py"))
problem = importlib.util.module_from_spec(spec)
spec.loader.exec_module(problem)
problem.get_train_data(path=sys.argv[1])
problem.get_test_data(path=sys.argv[1])
'''


# The same reading, with the CPU time it cost.
CPU_BASE = READ_DATA + r'''
import json, resource
r = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"cpu": r.ru_utime + r.ru_stime}))
'''

# problem add's two sides, as datarun/prefetch.py runs them, each with its own CPU clock.
CPU_ADD = r'''
import json, os, resource, sys
kit, workspace = sys.argv[1], sys.argv[2]
from datarun import prefetch as launch
launch.start(["-w", workspace, "problem", "add", kit, "--json"])
pending = launch.PENDING
import datarun.cli  # the parent's own work: the CLI (Typer, its commands), the workspace
from datarun.store.db import open_db
from datarun.store.workspace import find_workspace
db = open_db(find_workspace(workspace))
parent = resource.getrusage(resource.RUSAGE_SELF)
_, status, child = os.wait4(pending.pid, 0)
pending.pid = -1
from datarun.problems.rampdata import register_ramp_problem
before = resource.getrusage(resource.RUSAGE_SELF)
register_ramp_problem(find_workspace(workspace), db, kit, {}, None,
                      prepared=lambda: pending.folder)
after = resource.getrusage(resource.RUSAGE_SELF)
pending.discard()
cpu = lambda r: r.ru_utime + r.ru_stime
print(json.dumps({"parent": cpu(parent), "child": cpu(child), "store": cpu(after) - cpu(before)}))
'''


def median(values: list[float]) -> float:
    return statistics.median(values)


def bench_kit(scratch: Path, name: str, repeat: int) -> dict:
    kit = scratch / "kits" / name
    shutil.copytree(KITS / name, kit, ignore=shutil.ignore_patterns("training_output",
                                                                    "__pycache__"))
    runs: dict[str, list[float]] = {k: [] for k in (
        "import_rampwf", "rampwf_data", "problem_add", "train", "export", "ramp_test")}
    cpu_runs: dict[str, list[float]] = {k: [] for k in ("rampwf_data", "parent", "child",
                                                         "store")}
    for i in range(repeat):
        runs["import_rampwf"].append(timed([sys.executable, "-c", "import rampwf"])[0])
        runs["rampwf_data"].append(timed([sys.executable, "-c", READ_DATA, str(kit)])[0])
        workspace = Workspace(scratch / f"ws-{name}-{i}")
        try:
            wall, _ = workspace.timed_cli("problem", "add", kit, "--json")
            runs["problem_add"].append(wall)
            problem = name.lower()
            submission = workspace.cli_json("submit", problem, kit / "submissions" /
                                            "starting_kit", "--team", "bench")["id"]
            wall, _ = workspace.timed_cli("train", "--json")
            runs["train"].append(wall)
            wall, _ = workspace.timed_cli("export", str(submission), "--ramp",
                                          scratch / f"out-{name}-{i}")
            runs["export"].append(wall)
        finally:
            workspace.stop_runners()
        wall, _ = timed([str(RAMP_TEST), "--submission", "starting_kit"], cwd=kit)
        runs["ramp_test"].append(wall)
        base = json.loads(timed([sys.executable, "-c", CPU_BASE, str(kit)])[1].stdout)
        cpu_runs["rampwf_data"].append(base["cpu"])
        probe = Workspace(scratch / f"cpu-{name}-{i}")
        sides = json.loads(timed([sys.executable, "-c", CPU_ADD, str(kit), str(probe.root)],
                                 env=probe.env)[1].stdout)
        for side in ("parent", "child", "store"):
            cpu_runs[side].append(sides[side])
    figures = {key: {"min": min(values), "median": median(values), "runs": values}
               for key, values in runs.items()}
    goal = figures["rampwf_data"]["min"]
    figures["goal"] = goal
    figures["problem_add_met"] = figures["problem_add"]["min"] <= goal
    figures["export_met"] = figures["export"]["min"] <= goal
    figures["cpu"] = {key: median(values) for key, values in cpu_runs.items()}
    figures["cpu"]["add_critical_path"] = figures["cpu"]["child"] + figures["cpu"]["store"]
    return figures


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="two kits, one run (smoke test)")
    parser.add_argument("--repeat", type=int, default=None, help="runs per kit (default 3)")
    parser.add_argument("--json", action="store_true", help="figures as JSON on stdout")
    args = parser.parse_args(argv)
    repeat = args.repeat or (1 if args.quick else 3)
    kits = QUICK_KITS if args.quick else ALL_KITS
    load_before = load_note()
    with temp_folder("datarun-bench-ramp-") as scratch:
        results = {name: bench_kit(scratch, name, repeat) for name in kits}
    rows = []
    for name, f in results.items():
        rows.append([name, *(f"{f[k]['min']:.2f} ({f[k]['median']:.2f})" for k in (
            "import_rampwf", "rampwf_data", "problem_add", "export", "train", "ramp_test")),
            "met" if f["problem_add_met"] else "MISSED", "met" if f["export_met"] else "MISSED"])
    lines = []
    text = io.StringIO()
    print_table(f"RAMP kits, least (median) wall seconds of {repeat} run(s) each "
                f"({load_before} before, {load_note()} after)",
                ["kit", "import rampwf", "rampwf + data", "problem add", "export --ramp",
                 "train", "ramp-test", "add <= goal", "export <= goal"], rows, out=text)
    lines.append(text.getvalue().rstrip())
    text = io.StringIO()
    print_table("problem add, median CPU seconds: the kit's reading (forked child), the CLI "
                "(parent, meanwhile), the store (after)",
                ["kit", "rampwf + data", "child", "parent", "store", "child + store"],
                [[name, *(f"{f['cpu'][k]:.3f}" for k in ("rampwf_data", "child", "parent",
                                                          "store", "add_critical_path"))]
                 for name, f in results.items()], out=text)
    lines.append(text.getvalue().rstrip())
    lines.append("goal: problem add and export --ramp at most 'rampwf + data' (a Python that "
                 "imports the kit's problem.py and reads its data)")
    lines.append("train: datarun train of the starting kit on the local host, the runner "
                 "started cold by train; ramp-test: the same submission, its whole run")
    figures = {"repeat": repeat, "kits": results,
               "met": all(f["problem_add_met"] and f["export_met"] for f in results.values()),
               "scratch": str(scratch)}
    finish(figures, lines, args.json)
    return figures


if __name__ == "__main__":
    main()
