"""How close `datarun train` on several SSH hosts comes to a perfect schedule.

Four SSH hosts (real sshd on loopback, the datarun-test user) with 2 slots each run 64
tasks whose durations are known: 16 submissions on a 4-fold copy of the iris kit, each
an estimator whose fit sleeps a fixed time, from 0.5 s to 3 s, submitted in a shuffled
(seeded) order. Sleeping costs no CPU, so the 2-core machine can hold all 8 slots and
what is measured is scheduling: launching, noticing ends, refilling slots, ordering.

    ideal = sum of the sleeps / total slots

is a lower bound no schedule beats. datarun's makespan (the figure) is the length of the
schedule it ran: from the first task's start to the last task's end, by the hosts' own
records of when each task ran. Beside it, from the same run: the makespan of a
first-free-slot dispatcher with no overhead at all, given the tasks in the order datarun
started them (packing loss versus datarun's own costs), and the wall time of the `train`
command, which adds its start-up (the CLI, connecting, shipping, and the four runners'
first imports) and the last collect. On this rig the four "hosts" share the machine's 2
cores, so their runners' scikit-learn imports (about 1 s of CPU each) queue behind one
another; the start-up row shows that cost apart. The makespan compares times taken on
different hosts, and the start-up compares a host's time with the bench's: both hold
here because every "host" is this machine; across real machines their clocks would have
to agree.

Needs root and the test setup (`bash scripts/setup-test-env.sh`).
Run: .venv/bin/python bench/makespan.py [--quick] [--json]
"""

import argparse
import heapq
import io
import json
import os
import random
import sys
import time

from common import (
    Workspace,
    finish,
    make_kit,
    print_table,
    ssh_servers,
    ssh_setup_missing,
    temp_folder,
    use_ssh_hosts,
    verdict,
)

GOAL = 1.15  # makespan at most this times the ideal
HOSTS, SLOTS = 4, 2
SEED = 3

SLEEPER = """import time

from sklearn.dummy import DummyClassifier

SECONDS = {seconds!r}


class Sleeper(DummyClassifier):
    def fit(self, X, y, sample_weight=None):
        time.sleep(SECONDS)
        return super().fit(X, y, sample_weight)


def get_estimator():
    return Sleeper(strategy="prior")
"""


def durations(count: int, low: float, high: float, seed: int = SEED) -> list[float]:
    """`count` sleeps spread evenly over [low, high], in a shuffled order."""
    values = [round(low + i * (high - low) / (count - 1), 3) for i in range(count)]
    random.Random(seed).shuffle(values)
    return values


def first_free_slot_makespan(tasks: list[float], slots: int) -> float:
    """Each task, in order, to the slot that frees first; no cost besides the tasks."""
    ends = [0.0] * slots
    for seconds in tasks:
        heapq.heappush(ends, heapq.heappop(ends) + seconds)
    return max(ends)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="4 submissions x 4 folds of 0.2-0.5 s (smoke test)")
    parser.add_argument("--json", action="store_true", help="figures as JSON on stdout, text on stderr")
    args = parser.parse_args(argv)
    missing = ssh_setup_missing()
    if missing:
        print(f"makespan: cannot run: {missing}", file=sys.stderr)
        raise SystemExit(2)
    n_subs, n_folds, low, high = (4, 4, 0.2, 0.5) if args.quick else (16, 4, 0.5, 3.0)
    sleeps = durations(n_subs, low, high)
    names = [f"sleep_{i:02d}" for i in range(n_subs)]
    slots = HOSTS * SLOTS

    with temp_folder("datarun-bench-makespan-") as tmp, ssh_servers(HOSTS) as servers:
        kit = make_kit(tmp / "kit", n_folds,
                       {name: SLEEPER.format(seconds=s) for name, s in zip(names, sleeps, strict=True)})
        workspace = Workspace(tmp / "ws")
        remotes = use_ssh_hosts(workspace, servers, slots=SLOTS, tag=os.urandom(4).hex())
        try:
            workspace.cli("problem", "add", kit)
            for name in names:
                workspace.cli("submit", "iris", kit / "submissions" / name, "--team", "bench")
            started = time.time()
            wall, result = workspace.timed_cli("train", "--json")
        finally:
            for remote in remotes:
                remote.stop_and_remove()
        rows = workspace.query(
            "SELECT t.host, t.state, t.ran_from, t.ran_to, t.train_time, s.name FROM tasks t "
            "JOIN submissions s ON s.id = t.submission ORDER BY t.ran_from")

    if any(row[1] != "done" for row in rows):
        raise RuntimeError(f"not every task is done: {sorted({row[1] for row in rows})}")
    hosts_used = sorted({row[0] for row in rows})
    if len(hosts_used) != HOSTS:
        raise RuntimeError(f"tasks ran on {hosts_used} only")
    tasks = [sleeps[names.index(row[5])] for row in rows]  # in the order datarun started them
    ideal = sum(tasks) / slots
    fcfs = first_free_slot_makespan(tasks, slots)
    first_start, last_end = min(row[2] for row in rows), max(row[3] for row in rows)
    makespan = last_end - first_start
    start_up = first_start - started
    core_wall = json.loads(result.stdout)["wall_time"]
    ratio = makespan / ideal
    sleep_error = max(row[4] - sleeps[names.index(row[5])] for row in rows)
    figures = {
        "scratch": str(tmp), "hosts": HOSTS, "slots_per_host": SLOTS, "tasks": len(rows),
        "sleeps": sleeps, "sum_of_durations": sum(tasks), "ideal": ideal,
        "first_free_slot": fcfs, "datarun_makespan": makespan, "datarun_wall": wall,
        "datarun_train_core": core_wall, "start_up": start_up, "ratio": ratio,
        "ratio_wall": wall / ideal, "ratio_first_free_slot": fcfs / ideal, "goal_ratio": GOAL,
        "met": ratio <= GOAL, "max_fit_beyond_sleep": sleep_error,
        "load_average": os.getloadavg()[0],
    }

    text = io.StringIO()
    print_table(
        f"makespan: {HOSTS} SSH hosts x {SLOTS} slots, {len(rows)} tasks sleeping {low}-{high} s "
        f"(sum {sum(tasks):.1f} s)",
        ["", "seconds", "x ideal"],
        [["ideal (sum of durations / slots)", f"{ideal:.2f}", "1.00"],
         ["first free slot, no overhead, datarun's order", f"{fcfs:.2f}", f"{fcfs / ideal:.2f}"],
         ["datarun makespan, first start to last end", f"{makespan:.2f}", f"{ratio:.2f}"],
         ["datarun train, wall of the command", f"{wall:.2f}", f"{wall / ideal:.2f}"],
         ["  of which start-up, train to first task", f"{start_up:.2f}", ""]],
        out=text)
    lines = [text.getvalue().rstrip(),
             f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores",
             f"goal: makespan at most {GOAL:.2f} x the ideal: {verdict(ratio, GOAL)} ({ratio:.2f} x); "
             f"the command's wall, start-up included: {wall / ideal:.2f} x"]
    finish(figures, lines, args.json)
    return figures


if __name__ == "__main__":
    main(sys.argv[1:])
