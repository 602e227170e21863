"""What SSH adds per task, and what travels for a first and a second submission.

The same trivial tasks as bench/overhead.py (four DummyClassifier submissions on an
8-fold copy of the iris kit, 32 tasks) run twice with `datarun train`: on the embedded
local host with 2 slots, and on two SSH hosts (real sshd on loopback, the datarun-test
user, 1 slot each), so both sides have 2 slots on the same 2 cores. Each run starts from
a fresh workspace and, for SSH, fresh host workdirs: the SSH side pays for shipping the
harness and the data and for starting its runners, as the local side pays for starting
its runner. The figure is

    (wall of the SSH run - wall of the local run) / tasks

the wall time an organiser waits longer per task. Then, on two fresh hosts and in this
process (so the connections can be watched), one submission is trained and then a second
one on the same problem, and the bytes sent for each are split into harness, data, task
bundles and command lines.

Needs root and the test setup (`bash scripts/setup-test-env.sh`).
Run: .venv/bin/python bench/ssh_overhead.py [--quick] [--repeat N] [--json]
"""

import argparse
import io
import statistics
import sys
import uuid

from common import (
    Workspace,
    finish,
    make_kit,
    print_table,
    recorded_model_time,
    ssh_servers,
    ssh_setup_missing,
    ssh_traffic,
    temp_folder,
    train_in_process,
    use_ssh_hosts,
    verdict,
)
from overhead import DUMMY, STRATEGIES

GOAL = 0.050  # seconds SSH may add per task
KINDS = ("harness", "data", "bundles", "commands")


def run_train(workspace: Workspace, kit, names: list[str]) -> dict:
    import json

    workspace.cli("problem", "add", kit)
    for name in names:
        workspace.cli("submit", "iris", kit / "submissions" / name, "--team", "bench")
    wall, result = workspace.timed_cli("train", "--json")
    tasks, done, model = recorded_model_time(workspace)
    if done != tasks:
        raise RuntimeError(f"datarun finished {done} of {tasks} tasks")
    hosts = sorted(row[0] for row in workspace.query("SELECT DISTINCT host FROM tasks"))
    return {"wall": wall, "model_time": model, "tasks": tasks, "hosts": hosts,
            "train_core_wall": json.loads(result.stdout)["wall_time"]}


def run_local(root, kit, names: list[str]) -> dict:
    workspace = Workspace(root, slots=2)
    try:
        return run_train(workspace, kit, names)
    finally:
        workspace.stop_runners()


def run_ssh(root, kit, names: list[str], servers: list) -> dict:
    workspace = Workspace(root)
    remotes = use_ssh_hosts(workspace, servers, slots=1, tag=uuid.uuid4().hex[:8])
    try:
        return run_train(workspace, kit, names)
    finally:
        for remote in remotes:
            remote.stop_and_remove()


def bytes_by_kind(traffic: list[tuple[str, str, int]]) -> dict[str, int]:
    totals = dict.fromkeys(KINDS, 0)
    for _, kind, size in traffic:
        totals[kind] = totals.get(kind, 0) + size
    return totals


def measure_shipping(root, kit, names: list[str], servers: list) -> dict:
    """Bytes sent while training a first submission, then a second on the same problem."""
    workspace = Workspace(root)
    remotes = use_ssh_hosts(workspace, servers, slots=1, tag=uuid.uuid4().hex[:8])
    figures = {}
    try:
        workspace.cli("problem", "add", kit)
        for label, name in zip(("first", "second"), names[:2], strict=True):
            workspace.cli("submit", "iris", kit / "submissions" / name, "--team", "bench")
            with ssh_traffic() as traffic:
                summary = train_in_process(root)
            if summary["done"] != summary["tasks"]:
                raise RuntimeError(f"{label} submission: {summary['done']} of {summary['tasks']} done")
            figures[label] = bytes_by_kind(traffic)
            figures[label]["tasks"] = summary["tasks"]
    finally:
        for remote in remotes:
            remote.stop_and_remove()
    return figures


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 submissions x 2 folds, 1 run (smoke test)")
    parser.add_argument("--repeat", type=int, default=None, help="runs per side (default 3, quick 1)")
    parser.add_argument("--json", action="store_true", help="figures as JSON on stdout, text on stderr")
    args = parser.parse_args(argv)
    missing = ssh_setup_missing()
    if missing:
        print(f"ssh_overhead: cannot run: {missing}", file=sys.stderr)
        raise SystemExit(2)
    repeat = args.repeat or (1 if args.quick else 3)
    n_subs, n_folds = (2, 2) if args.quick else (4, 8)
    names = [f"dummy_{s}" for s in STRATEGIES[:n_subs]]
    tasks = n_subs * n_folds

    local_runs, ssh_runs = [], []
    with temp_folder("datarun-bench-ssh-overhead-") as tmp, ssh_servers(2) as servers:
        kit = make_kit(tmp / "kit", n_folds,
                       {f"dummy_{s}": DUMMY.format(strategy=s) for s in STRATEGIES[:n_subs]})
        for run in range(repeat):
            # Alternate the sides so a noisy neighbour hurts both alike.
            local_runs.append(run_local(tmp / f"local{run}", kit, names))
            ssh_runs.append(run_ssh(tmp / f"ssh{run}", kit, names, servers))
        shipping = measure_shipping(tmp / "shipping", kit, names, servers)

    for outcome in ssh_runs:
        if len(outcome["hosts"]) != 2:
            raise RuntimeError(f"the SSH run used hosts {outcome['hosts']}, not both")
    local_wall = statistics.median(r["wall"] for r in local_runs)
    ssh_wall = statistics.median(r["wall"] for r in ssh_runs)
    added = (ssh_wall - local_wall) / tasks
    second = shipping["second"]
    only_bundles = second["harness"] == 0 and second["data"] == 0 and second["bundles"] > 0
    figures = {
        "scratch": str(tmp), "tasks": tasks, "runs": repeat, "goal_per_task": GOAL,
        "local": {"wall": local_wall, "walls": [r["wall"] for r in local_runs],
                  "train_core_walls": [r["train_core_wall"] for r in local_runs],
                  "model_time": statistics.median(r["model_time"] for r in local_runs)},
        "ssh": {"wall": ssh_wall, "walls": [r["wall"] for r in ssh_runs],
                "train_core_walls": [r["train_core_wall"] for r in ssh_runs],
                "model_time": statistics.median(r["model_time"] for r in ssh_runs)},
        "added_per_task": added,
        # Each of the two lanes runs half the tasks one after another.
        "added_per_task_per_lane": added * 2,
        "met": added <= GOAL,
        "shipping": shipping,
        "second_only_bundles": only_bundles,
    }

    text = io.StringIO()
    print_table(
        f"ssh overhead: {n_subs} DummyClassifier submissions x {n_folds} folds = {tasks} tasks, "
        f"2 slots each side, median of {repeat} run(s)",
        ["", "wall", "fit+predict", "runs"],
        [["datarun train, local host, 2 slots", f"{local_wall:.2f} s",
          f"{figures['local']['model_time']:.2f} s", " ".join(f"{w:.2f}" for w in figures["local"]["walls"])],
         ["datarun train, 2 SSH hosts x 1 slot", f"{ssh_wall:.2f} s",
          f"{figures['ssh']['model_time']:.2f} s", " ".join(f"{w:.2f}" for w in figures["ssh"]["walls"])]],
        out=text)
    print_table(
        "\nbytes sent over SSH (both hosts), by what they carried",
        ["", *KINDS, "tasks"],
        [[f"{label} submission", *(f"{shipping[label][k]:,}" for k in KINDS), str(shipping[label]["tasks"])]
         for label in ("first", "second")],
        out=text)
    lines = [
        text.getvalue().rstrip(),
        f"SSH adds {added * 1000:.0f} ms per task to the wall time "
        f"({added * 2000:.0f} ms per task on each of the 2 lanes)",
        f"goal: SSH adds at most {GOAL * 1000:.0f} ms per task: {verdict(added, GOAL)} ({added * 1000:.0f} ms)",
        "goal: a second submission sends only its bundles (and command lines): "
        + ("met" if only_bundles else "MISSED")
        + f" (harness {second['harness']:,} B, data {second['data']:,} B, bundles {second['bundles']:,} B)",
    ]
    finish(figures, lines, args.json)
    return figures


if __name__ == "__main__":
    main(sys.argv[1:])
