"""What a Dask host costs per task beside the local host, on the same trivial tasks.

DummyClassifier submissions on an N-fold copy of the iris kit (1,000 tasks by default),
trained by `datarun train` twice in the same run: on the local host (2 slots), and on a
Dask host (a real `dask scheduler` and two `dask worker` processes on loopback, one
thread each, 2 slots). The figure for each is

    (wall time of `datarun train` - fit+predict seconds / slots) / tasks

as in bench/overhead.py. Then the throughput line: the same tasks on 8 workers (8 slots),
as tasks per second over the whole `train`. `--quick` (the smoke test): 2 submissions x 4
folds, and 3 workers for the throughput line. `--submissions N` trains N submissions of
100 folds; `--rounds R` trains on the local host and on the Dask host R times each,
alternately, so that both sides see the same load on a shared machine (the Dask cluster,
started after the first local run, stays up, idle, during the later ones), and the
figures are the medians of the rounds (each round's pair printed too).

Run: .venv/bin/python bench/cluster.py [--quick] [--submissions N] [--rounds R] [--json]
"""

import argparse
import io
import statistics
import subprocess
import sys
from pathlib import Path

from common import (
    Workspace,
    finish,
    load_note,
    make_kit,
    print_table,
    recorded_model_time,
    temp_folder,
    verdict,
)

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

GOAL = 0.010  # seconds a Dask host may add per task beside the local host

DUMMY = """from sklearn.dummy import DummyClassifier


def get_estimator():
    return DummyClassifier(strategy="prior")
"""


def run_train(root: Path, kit: Path, subs: int, hosts: str | None = None) -> dict:
    workspace = Workspace(root, slots=2)
    try:
        if hosts is not None:
            (root / "hosts.toml").write_text(hosts)
        workspace.cli("problem", "add", kit)
        for n in range(subs):
            workspace.cli("submit", "iris", kit / "submissions" / "dummy", "--team", f"team{n}")
        wall, _ = workspace.timed_cli("train", "--json")
    finally:
        workspace.stop_runners()
    tasks, done, model = recorded_model_time(workspace)
    if done != tasks:
        raise RuntimeError(f"datarun finished {done} of {tasks} tasks")
    return {"wall": wall, "model_time": model, "tasks": tasks}


def dask_hosts(address: str, workdir: Path, slots: int) -> str:
    return (f'[hosts.cluster]\nexecutor = "dask"\nscheduler = "{address}"\nslots = {slots}\n'
            f'workdir = "{workdir}"\n')


def per_task(figures: dict, slots: int) -> float:
    return (figures["wall"] - figures["model_time"] / slots) / figures["tasks"]


def median_run(runs: list[dict], slots: int) -> dict:
    """The run whose per-task figure is the median of these (the upper one of an even count)."""
    ordered = sorted(runs, key=lambda run: per_task(run, slots))
    return ordered[len(ordered) // 2]


def main(argv: list[str] | None = None) -> dict:
    from daskcluster import DaskCluster

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 submissions x 4 folds (smoke test)")
    parser.add_argument("--submissions", type=int, default=10, help="submissions of 100 folds each (default 10)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="local and Dask runs, alternately, this many times each (default 1)")
    parser.add_argument("--json", action="store_true", help="figures as JSON on stdout, text on stderr")
    args = parser.parse_args(argv)
    subs, folds = (2, 4) if args.quick else (args.submissions, 100)
    many = 3 if args.quick else 8
    load_before = load_note()
    pairs = []
    with temp_folder("datarun-bench-dask-") as tmp:
        scratch = tmp
        kit = make_kit(tmp / "kit", folds, {"dummy": DUMMY})
        # 100 folds of iris's 120 training rows: plain k-fold (a class has only 40 rows).
        toml = kit / "problem.toml"
        toml.write_text(toml.read_text().replace('strategy = "stratified-kfold"', 'strategy = "kfold"'))
        cluster = None
        try:
            for round_ in range(max(1, args.rounds)):
                loads = [load_note()]
                local = run_train(tmp / f"local{round_}", kit, subs)
                loads.append(load_note())
                # Started after the first local run, as when there was one round of each.
                cluster = cluster or DaskCluster(tmp / "dask2", workers=2)
                two = run_train(tmp / f"ws2-{round_}", kit, subs,
                                dask_hosts(cluster.address, tmp / f"hostdir{round_}", 2))
                loads.append(load_note())
                pairs.append((local, two, loads))
        finally:
            if cluster is not None:
                cluster.stop()
        if len(pairs) > 1:
            local = median_run([pair[0] for pair in pairs], 2)
            two = median_run([pair[1] for pair in pairs], 2)
        big = DaskCluster(tmp / "daskmany", workers=many)
        try:
            many_run = run_train(tmp / "wsmany", kit, subs, dask_hosts(big.address, tmp / "hostdir", many))
        finally:
            big.stop()
    tasks = subs * folds
    figures = {
        "tasks": tasks, "load": [load_before, load_note()], "goal_added_per_task": GOAL,
        "scratch": str(scratch),
        "local_2_slots": dict(local, per_task=per_task(local, 2)),
        "dask_2_workers": dict(two, per_task=per_task(two, 2)),
        "dask_many_workers": dict(many_run, workers=many, per_task=per_task(many_run, many),
                                  tasks_per_second=tasks / many_run["wall"]),
    }
    added = figures["dask_2_workers"]["per_task"] - figures["local_2_slots"]["per_task"]
    figures["dask_added_per_task"] = added
    figures["rounds"] = [{"local_per_task": per_task(loc, 2), "dask_per_task": per_task(dask, 2),
                          "added": per_task(dask, 2) - per_task(loc, 2), "load": loads}
                         for loc, dask, loads in pairs]
    if len(pairs) > 1:
        added = statistics.median(entry["added"] for entry in figures["rounds"])
        figures["dask_added_per_task"] = added
    figures["met"] = added <= GOAL
    rows = [["local host, 2 slots", "local_2_slots"], ["Dask host, 2 workers x 1 thread", "dask_2_workers"],
            [f"Dask host, {many} workers x 1 thread", "dask_many_workers"]]
    table = [[label, f"{figures[k]['per_task'] * 1000:.1f} ms", f"{figures[k]['wall']:.2f} s",
              f"{figures[k]['model_time']:.2f} s", f"{figures[k]['tasks'] / figures[k]['wall']:.1f}"]
             for label, k in rows]
    text = io.StringIO()
    print_table(f"dask: {subs} DummyClassifier submissions x {folds} folds = {tasks} tasks through "
                f"`datarun train` (per task = (wall - fit+predict / slots) / tasks; "
                f"{figures['load'][0]} before, {figures['load'][1]} after)",
                ["", "per task", "wall", "fit+predict", "tasks/s"], table, out=text)
    lines = [text.getvalue().rstrip()]
    if len(pairs) > 1:
        lines.append(f"{len(pairs)} rounds, local then Dask each time (per task; rows above: the median runs):")
        lines += [f"  round {n + 1}: local {entry['local_per_task'] * 1000:.1f} ms, Dask "
                  f"{entry['dask_per_task'] * 1000:.1f} ms, added {entry['added'] * 1000:+.1f} ms "
                  f"({'; '.join(entry['load'])})" for n, entry in enumerate(figures["rounds"])]
        lines.append(f"median added: {added * 1000:+.1f} ms")
    lines += [
             f"goal: a Dask host adds at most {GOAL * 1000:.0f} ms per task beside the local host: "
             f"{verdict(added, GOAL)} ({added * 1000:+.1f} ms)",
             f"throughput with {many} workers: {figures['dask_many_workers']['tasks_per_second']:.1f} tasks/s "
             "(all processes on this machine's cores)"]
    finish(figures, lines, args.json)
    return figures


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except subprocess.CalledProcessError as error:
        sys.exit(f"error: {error}: {error.stderr}")
