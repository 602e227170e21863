"""What SSH adds per task, and what travels for a first and a second submission.

The same trivial tasks as bench/overhead.py (four DummyClassifier submissions on an
8-fold copy of the iris kit, 32 tasks) run twice with `datarun train`: on the embedded
local host with 2 slots, and on two SSH hosts (real sshd on loopback, the datarun-test
user, 1 slot each), so both sides have 2 slots on the same 2 cores. Each run starts from
a fresh workspace and, for SSH, fresh host workdirs: the SSH side pays for shipping the
harness and the data and for starting its runners, as the local side pays for starting
its runner. The figure is

    (wall of the SSH run - wall of the local run) / tasks

the wall time an organiser waits longer per task. Each run is also split in two: the
first submission trained alone (on SSH hosts it pays for shipping the harness and the
data set and for starting the runners), then the others, trained with all that already
on the hosts: the second figure is the SSH layer's own cost per task (commands, bundle
uploads, result downloads), not the work the first pays once. Then, on two fresh hosts and in this
process (so the connections can be watched), one submission is trained and then a second
one on the same problem, and the bytes sent for each are split into harness, data, task
bundles and command lines.

With `--compare REV` the same run also measures the SSH layer of another version of
datarun, to tell what a change of that layer costs: the `datarun` package at git revision
REV of this repository is extracted (`git archive`, into the scratch folder) and run as
`python -m datarun` with that folder first on PYTHONPATH, on the same sshd servers, the
same kit and the same number of runs, its SSH runs alternating with the current code's
(local, SSH, SSH at REV, then again) so a noisy neighbour hurts both alike. Both the
per-task figure above and the ratio of the two SSH walls are printed. Then the connection
layer alone, which the train figures blur with everything else: connecting, one command
on an open connection, an upload and a download of 64 kB, each the median of many,
measured in a fresh Python with each version's `SSHConnection` (the current one also
through Fabric's own `Connection.run`, the per-command cost of using it for commands).
The SSH layer moved onto Fabric's `Connection` after commit 04dd77f (`--compare 04dd77f`
compares with the paramiko layer written by hand).

Needs root and the test setup (`bash scripts/setup-test-env.sh`).
Run: .venv/bin/python bench/ssh_overhead.py [--quick] [--repeat N] [--compare REV] [--json]
"""

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

from common import (
    Workspace,
    code_at,
    finish,
    load_note,
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
COMPARE_GOAL = 1.10  # the SSH wall may grow by at most this factor against --compare's
KINDS = ("harness", "data", "bundles", "commands")
PROBE_BYTES = 64 * 1024


def run_train(workspace: Workspace, kit, names: list[str]) -> dict:
    """`train` of the first submission alone (cold: the harness, the data set and the
    runners still to ship and start), then of the others (warm: all that on the hosts)."""
    import json

    workspace.cli("problem", "add", kit)
    workspace.cli("submit", "iris", kit / "submissions" / names[0], "--team", "bench")
    cold_wall, _ = workspace.timed_cli("train", "--json")
    cold_tasks, cold_done, cold_model = recorded_model_time(workspace)
    for name in names[1:]:
        workspace.cli("submit", "iris", kit / "submissions" / name, "--team", "bench")
    warm_wall, result = workspace.timed_cli("train", "--json")
    tasks, done, model = recorded_model_time(workspace)
    if done != tasks or cold_done != cold_tasks:
        raise RuntimeError(f"datarun finished {done} of {tasks} tasks")
    hosts = sorted(row[0] for row in workspace.query("SELECT DISTINCT host FROM tasks"))
    return {"wall": cold_wall + warm_wall, "model_time": model, "tasks": tasks, "hosts": hosts,
            "cold_wall": cold_wall, "cold_tasks": cold_tasks, "warm_wall": warm_wall,
            "warm_tasks": tasks - cold_tasks, "warm_model_time": model - cold_model,
            "train_core_wall": json.loads(result.stdout)["wall_time"]}


def run_local(root, kit, names: list[str]) -> dict:
    workspace = Workspace(root, slots=2)
    try:
        return run_train(workspace, kit, names)
    finally:
        workspace.stop_runners()


def run_ssh(root, kit, names: list[str], servers: list, code: Path | None = None) -> dict:
    workspace = Workspace(root, code=code)
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


def probe(spec: dict) -> dict:
    """The connection layer's own costs, in this process, with whichever `datarun` is first
    on sys.path: what `--probe` runs in a fresh Python for each version compared."""
    from datarun.executors.hosts import parse_host
    from datarun.executors.sshconn import SSHConnection, resolve_target

    host = parse_host("probe", spec["host"])
    known = Path(spec["known_hosts"])
    rounds = spec["rounds"]

    def median_ms(action) -> float:
        samples = []
        for _ in range(rounds):
            start = time.perf_counter()
            action()
            samples.append(time.perf_counter() - start)
        return statistics.median(samples) * 1000

    def connect_once() -> None:
        conn = SSHConnection(resolve_target(host), known)
        conn.connect()
        conn.close()

    figures = {"connect": median_ms(connect_once)}
    conn = SSHConnection(resolve_target(host), known)
    try:
        local = Path(spec["scratch"]) / f"probe-{os.getpid()}"
        local.write_bytes(os.urandom(PROBE_BYTES))
        remote = conn.expand(f"~/.datarun-probe-{uuid.uuid4().hex}")
        conn.run("true")  # connected, SFTP not yet: each figure pays only its own
        figures["command"] = median_ms(lambda: conn.run("true"))
        figures["upload"] = median_ms(lambda: conn.put(local, remote))
        figures["download"] = median_ms(
            lambda: conn.get(remote, io.BytesIO(), PROBE_BYTES, PROBE_BYTES))
        conn.remove(remote)
        fabric_conn = getattr(conn, "fabric", None)  # the layer on Fabric's Connection only
        if fabric_conn is not None:
            figures["fabric_run"] = median_ms(
                lambda: fabric_conn.run("true", hide=True, in_stream=False))
    finally:
        conn.close()
    return figures


def probe_layers(servers: list, tmp: Path, codes: dict[str, Path | None], repeat: int,
                 rounds: int) -> dict[str, dict]:
    """`probe` in a fresh Python per version (PYTHONPATH first), alternating, `repeat` times;
    each figure is the median over the repeats of the per-repeat medians."""
    known = tmp / "probe_known_hosts"
    known.write_text(servers[0].known_hosts_line())
    spec = json.dumps({"host": servers[0].host_table(), "known_hosts": str(known),
                       "rounds": rounds, "scratch": str(tmp)})
    samples: dict[str, list[dict]] = {label: [] for label in codes}
    for _ in range(repeat):
        for label, code in codes.items():
            env = dict(os.environ)
            if code is not None:
                env["PYTHONPATH"] = str(code)
            result = subprocess.run([sys.executable, __file__, "--probe", spec], env=env,
                                    capture_output=True, text=True)
            if result.returncode != 0:
                raise RuntimeError(f"probe of {label} failed:\n{result.stderr[-2000:]}")
            samples[label].append(json.loads(result.stdout))
    return {label: {key: statistics.median(run[key] for run in runs) for key in runs[0]}
            for label, runs in samples.items()}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 submissions x 2 folds, 1 run (smoke test)")
    parser.add_argument("--repeat", type=int, default=None, help="runs per side (default 3, quick 1)")
    parser.add_argument("--json", action="store_true", help="figures as JSON on stdout, text on stderr")
    parser.add_argument("--compare", metavar="REV", default=None,
                        help="also measure the SSH side with datarun at git revision REV")
    parser.add_argument("--probe", metavar="SPEC", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.probe:
        print(json.dumps(probe(json.loads(args.probe))))
        return {}
    missing = ssh_setup_missing()
    if missing:
        print(f"ssh_overhead: cannot run: {missing}", file=sys.stderr)
        raise SystemExit(2)
    repeat = args.repeat or (1 if args.quick else 3)
    n_subs, n_folds = (2, 2) if args.quick else (4, 8)
    names = [f"dummy_{s}" for s in STRATEGIES[:n_subs]]
    tasks = n_subs * n_folds

    local_runs, ssh_runs, old_runs = [], [], []
    layers: dict[str, dict] = {}
    load_before = load_note()
    with temp_folder("datarun-bench-ssh-overhead-") as tmp, ssh_servers(2) as servers:
        kit = make_kit(tmp / "kit", n_folds,
                       {f"dummy_{s}": DUMMY.format(strategy=s) for s in STRATEGIES[:n_subs]})
        old_code, old_rev = code_at(args.compare, tmp / "compare") if args.compare else (None, None)
        for run in range(repeat):
            # Alternate the sides so a noisy neighbour hurts both alike.
            local_runs.append(run_local(tmp / f"local{run}", kit, names))
            ssh_runs.append(run_ssh(tmp / f"ssh{run}", kit, names, servers))
            if old_code is not None:
                old_runs.append(run_ssh(tmp / f"old{run}", kit, names, servers, code=old_code))
        shipping = measure_shipping(tmp / "shipping", kit, names, servers)
        if old_code is not None:
            layers = probe_layers(servers, tmp, {"old": old_code, "new": None}, repeat,
                                  rounds=10 if args.quick else 50)

    for outcome in ssh_runs + old_runs:
        if len(outcome["hosts"]) != 2:
            raise RuntimeError(f"the SSH run used hosts {outcome['hosts']}, not both")
    local_wall = statistics.median(r["wall"] for r in local_runs)
    ssh_wall = statistics.median(r["wall"] for r in ssh_runs)
    added = (ssh_wall - local_wall) / tasks
    warm_tasks = local_runs[0]["warm_tasks"]
    local_warm = statistics.median(r["warm_wall"] for r in local_runs)
    ssh_warm = statistics.median(r["warm_wall"] for r in ssh_runs)
    added_warm = (ssh_warm - local_warm) / warm_tasks
    second = shipping["second"]
    only_bundles = second["harness"] == 0 and second["data"] == 0 and second["bundles"] > 0
    figures = {
        "scratch": str(tmp), "tasks": tasks, "runs": repeat, "goal_per_task": GOAL,
        "load": [load_before, load_note()],
        "local": {"wall": local_wall, "walls": [r["wall"] for r in local_runs],
                  "train_core_walls": [r["train_core_wall"] for r in local_runs],
                  "model_time": statistics.median(r["model_time"] for r in local_runs)},
        "ssh": {"wall": ssh_wall, "walls": [r["wall"] for r in ssh_runs],
                "train_core_walls": [r["train_core_wall"] for r in ssh_runs],
                "model_time": statistics.median(r["model_time"] for r in ssh_runs)},
        "added_per_task": added,
        "warm": {"tasks": warm_tasks, "local_wall": local_warm, "ssh_wall": ssh_warm,
                 "added_per_task": added_warm,
                 "cold_local_wall": statistics.median(r["cold_wall"] for r in local_runs),
                 "cold_ssh_wall": statistics.median(r["cold_wall"] for r in ssh_runs)},
        # Each of the two lanes runs half the tasks one after another.
        "added_per_task_per_lane": added * 2,
        "met": added <= GOAL,
        "shipping": shipping,
        "second_only_bundles": only_bundles,
    }
    if old_runs:
        old_wall = statistics.median(r["wall"] for r in old_runs)
        old_added = (old_wall - local_wall) / tasks
        old_warm = statistics.median(r["warm_wall"] for r in old_runs)
        figures["compare"] = {
            "revision": old_rev, "wall": old_wall, "walls": [r["wall"] for r in old_runs],
            "train_core_walls": [r["train_core_wall"] for r in old_runs],
            "model_time": statistics.median(r["model_time"] for r in old_runs),
            "added_per_task": old_added, "wall_ratio": ssh_wall / old_wall,
            "met": ssh_wall / old_wall <= COMPARE_GOAL, "layers": layers,
            "warm_wall": old_warm, "warm_ratio": ssh_warm / old_warm,
            "warm_met": ssh_warm / old_warm <= COMPARE_GOAL,
            "cold_wall": statistics.median(r["cold_wall"] for r in old_runs),
        }

    text = io.StringIO()
    rows = [["datarun train, local host, 2 slots", f"{local_wall:.2f} s",
             f"{figures['local']['model_time']:.2f} s", " ".join(f"{w:.2f}" for w in figures["local"]["walls"])],
            ["datarun train, 2 SSH hosts x 1 slot", f"{ssh_wall:.2f} s",
             f"{figures['ssh']['model_time']:.2f} s", " ".join(f"{w:.2f}" for w in figures["ssh"]["walls"])]]
    compare = figures.get("compare")
    if compare:
        rows.append([f"same, datarun at {compare['revision']}", f"{compare['wall']:.2f} s",
                     f"{compare['model_time']:.2f} s", " ".join(f"{w:.2f}" for w in compare["walls"])])
    print_table(
        f"ssh overhead: {n_subs} DummyClassifier submissions x {n_folds} folds = {tasks} tasks, "
        f"2 slots each side, median of {repeat} run(s)",
        ["", "wall", "fit+predict", "runs"], rows, out=text)
    warm = figures["warm"]
    split_rows = [["local host, 2 slots", f"{warm['cold_local_wall']:.2f} s", f"{local_warm:.2f} s"],
                  ["2 SSH hosts x 1 slot", f"{warm['cold_ssh_wall']:.2f} s", f"{ssh_warm:.2f} s"]]
    if compare:
        split_rows.append([f"same, datarun at {compare['revision']}", f"{compare['cold_wall']:.2f} s",
                           f"{compare['warm_wall']:.2f} s"])
    print_table(f"\nthe same runs split: the first submission alone ({tasks - warm_tasks} tasks: shipping the "
                f"harness and the data, starting the runners), then the others ({warm_tasks} tasks, all "
                "that already on the hosts)", ["", "first (cold)", "others (warm)"], split_rows, out=text)
    if compare and compare["layers"]:
        old, new = compare["layers"]["old"], compare["layers"]["new"]
        labels = {"connect": "connect and log in", "command": "one command, connection open",
                  "upload": f"upload {PROBE_BYTES // 1024} kB", "download": f"download {PROBE_BYTES // 1024} kB"}
        layer_rows = [[label, f"{old[key]:.2f}", f"{new[key]:.2f}"] for key, label in labels.items()]
        if "fabric_run" in new:
            layer_rows.append(["one command through Fabric's Connection.run", "", f"{new['fabric_run']:.2f}"])
        print_table(f"\nthe connection layer alone, ms (median of {repeat} x {10 if args.quick else 50})",
                    ["", f"datarun at {compare['revision']}", "this datarun"], layer_rows, out=text)
    print_table(
        "\nbytes sent over SSH (both hosts), by what they carried",
        ["", *KINDS, "tasks"],
        [[f"{label} submission", *(f"{shipping[label][k]:,}" for k in KINDS), str(shipping[label]["tasks"])]
         for label in ("first", "second")],
        out=text)
    lines = [
        text.getvalue().rstrip(),
        f"machine: {figures['load'][0]} before, {figures['load'][1]} after",
        f"SSH adds {added * 1000:.0f} ms per task to the wall time "
        f"({added * 2000:.0f} ms per task on each of the 2 lanes)",
        f"goal: SSH adds at most {GOAL * 1000:.0f} ms per task: {verdict(added, GOAL)} ({added * 1000:.0f} ms)",
        f"with the harness and the data already on the hosts, SSH adds {added_warm * 1000:.0f} ms per task",
        "goal: a second submission sends only its bundles (and command lines): "
        + ("met" if only_bundles else "MISSED")
        + f" (harness {second['harness']:,} B, data {second['data']:,} B, bundles {second['bundles']:,} B)",
    ]
    if compare:
        lines += [
            f"datarun at {compare['revision']}: SSH adds {compare['added_per_task'] * 1000:.0f} ms per "
            f"task (this datarun: {added * 1000:.0f} ms)",
            f"goal: the SSH wall at most {COMPARE_GOAL:.2f} x datarun at {compare['revision']}'s: "
            f"{'met' if compare['met'] else 'MISSED'} ({compare['wall_ratio']:.3f} x: "
            f"{ssh_wall:.2f} s vs {compare['wall']:.2f} s)",
            f"goal, the SSH layer alone (data on the hosts): the warm SSH wall at most {COMPARE_GOAL:.2f} x "
            f"datarun at {compare['revision']}'s: {'met' if compare['warm_met'] else 'MISSED'} "
            f"({compare['warm_ratio']:.3f} x: {ssh_warm:.2f} s vs {compare['warm_wall']:.2f} s)",
        ]
    finish(figures, lines, args.json)
    return figures


if __name__ == "__main__":
    main(sys.argv[1:])
