"""Soak: short tasks over three loopback SSH hosts while a fault injector breaks them.

Three real sshd hosts (the datarun-test user, 2 slots each), each reached through a
loopback TCP proxy of the tests' own (tests/faultproxy.py), run 200 short tasks: 100
submissions on a 2-fold copy of the iris kit, each a DummyClassifier whose fit sleeps
0.2 s and leaves a mark per run. While `train` runs, an injector picks a host at random
every few seconds (seeded) and does one of:

- crash: SIGKILL its sshd, sessions, runner and tasks; restart its sshd (same host key,
  same proxy port) a few seconds later, so the host comes back empty;
- hang: SIGSTOP the same processes, SIGCONT them a few seconds later;
- stall: the proxy holds every byte for a few seconds, then lets them through;
- cut: the proxy resets every open connection.

The same run without the injector gives the baseline. Figures: tasks done; lost (ended
host_lost or never finished); run twice (fitted to completion more than once: a hung
host that wakes may finish an attempt already given up); counted twice (a done task
whose recorded attempt is not one that fitted, or with more than one set of scores);
wall time. Goal: all done, 0 lost, 0 counted twice, wall at most 2x the fault-free run.

Needs root and the test setup (`bash scripts/setup-test-env.sh`).
Run: .venv/bin/python bench/soak.py [--quick] [--json] [--tasks N] [--seed S]
"""

import argparse
import random
import sqlite3
import sys
import tempfile
import threading
import time
from pathlib import Path

from common import EXAMPLES, REPO, finish, load_note, print_table, ssh_setup_missing, verdict

sys.path.insert(0, str(REPO / "tests"))

GOAL = 2.0  # wall with faults at most this times the fault-free wall
HOSTS = ("a", "b", "c")
SLEEP = 0.2
SETTINGS = {"slots": 2, "command_timeout": 2.0, "connect_timeout": 1.0}


class Injector:
    """One fault at a time, on a random host, every `interval` seconds or so."""

    def __init__(self, cluster, seed: int, interval: float):
        self.cluster = cluster
        self.rng = random.Random(seed)
        self.interval = interval
        self.done = threading.Event()
        self.log: list[tuple[float, str, str]] = []
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True, name="injector")

    def start(self) -> None:
        self.started = time.monotonic()
        self._thread.start()

    def stop(self) -> None:
        self.done.set()
        self._thread.join(60)

    def _pause(self, low: float, high: float) -> bool:
        return self.done.wait(self.rng.uniform(low, high))

    def _run(self) -> None:
        try:
            while not self._pause(0.5 * self.interval, 1.5 * self.interval):
                name = self.rng.choice(HOSTS)
                fault = self.rng.choice(("crash", "hang", "stall", "cut"))
                self.log.append((round(time.monotonic() - self.started, 1), name, fault))
                proxy = self.cluster.proxies[name]
                if fault == "crash":
                    self.cluster.crash(name)
                    self._pause(1.0, 4.0)
                    self.cluster.restart(name)
                elif fault == "hang":
                    self.cluster.hang(name, with_sshd=True)
                    self._pause(1.0, 4.0)
                    self.cluster.wake(name)
                elif fault == "stall":
                    proxy.stall()
                    self._pause(1.0, 4.0)
                    proxy.resume()
                else:
                    proxy.cut()
        except BaseException as error:  # reported by the run, never lost in the thread
            self.error = error


def figures(cluster, summary: dict, wall: float) -> dict:
    from faultcluster import runs

    marks = runs(cluster.trace)
    conn = sqlite3.connect(cluster.workspace.db_path)
    try:
        rows = conn.execute("SELECT id, state, attempt, error_kind FROM tasks").fetchall()
        scores = dict(conn.execute("SELECT task, count(*) FROM scores GROUP BY task").fetchall())
    finally:
        conn.close()
    done = [r for r in rows if r[1] == "done"]
    counted_twice = sum(1 for task_id, _, attempt, _ in done
                        if attempt not in marks.get(str(task_id), {}).get("fit", [])
                        or scores.get(task_id) != 3)
    return {
        "tasks": len(rows), "done": len(done),
        "lost": sum(1 for r in rows if r[1] != "done" and (r[3] in (None, "host_lost"))),
        "failed_other": sum(1 for r in rows if r[1] == "failed" and r[3] != "host_lost"),
        "run_twice": sum(1 for m in marks.values() if len(m["fit"]) > 1),
        "counted_twice": counted_twice,
        "requeued": summary.get("requeued", 0), "late": summary.get("late", 0),
        "wall_time": round(wall, 2),
    }


def soak(n_tasks: int, faults: bool, seed: int, interval: float) -> dict:
    from faultcluster import Cluster, Training

    with tempfile.TemporaryDirectory(prefix="datarun-soak-") as tmp:
        cluster = Cluster(Path(tmp), EXAMPLES, names=HOSTS, folds=2, proxied=True, **SETTINGS)
        injector = None
        try:
            cluster.submit(n_tasks // 2, sleep=SLEEP)
            started = time.monotonic()
            training = Training(cluster.workspace)
            if faults:
                injector = Injector(cluster, seed, interval)
                injector.start()
            summary = training.join(1800)
            wall = time.monotonic() - started
            if injector is not None:
                injector.stop()
                if injector.error is not None:
                    raise injector.error
            result = figures(cluster, summary, wall)
            result["faults"] = [f"{t}s {name} {fault}" for t, name, fault in injector.log] if injector else []
            return result
        finally:
            if injector is not None:
                injector.stop()
            cluster.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="24 tasks, for a smoke run")
    parser.add_argument("--json", action="store_true", help="figures as JSON on stdout")
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--interval", type=float, default=3.0, help="seconds between faults, on average")
    args = parser.parse_args()
    missing = ssh_setup_missing()
    if missing:
        finish({"skipped": missing}, [f"soak: skipped: {missing}"], args.json)
        return
    n_tasks = 24 if args.quick else args.tasks
    clean = soak(n_tasks, faults=False, seed=args.seed, interval=args.interval)
    faulty = soak(n_tasks, faults=True, seed=args.seed, interval=args.interval)
    ratio = faulty["wall_time"] / clean["wall_time"]
    goal_met = (faulty["done"] == n_tasks and faulty["lost"] == 0 and faulty["counted_twice"] == 0
                and ratio <= GOAL)
    header = ["run", "tasks", "done", "lost", "run twice", "counted twice", "requeued", "late", "wall s"]
    rows = [[name, r["tasks"], r["done"], r["lost"], r["run_twice"], r["counted_twice"], r["requeued"],
             r["late"], f"{r['wall_time']:.1f}"] for name, r in (("no faults", clean), ("faults", faulty))]
    out = sys.stderr if args.json else sys.stdout
    print_table(f"soak: {n_tasks} tasks of {SLEEP}s on {len(HOSTS)} SSH hosts x {SETTINGS['slots']} slots, "
                f"a fault every ~{args.interval:g}s (seed {args.seed})", header, rows, out=out)
    lines = [f"faults injected ({len(faulty['faults'])}): " + ", ".join(faulty["faults"]),
             f"wall with faults / without: {ratio:.2f} (goal <= {GOAL:g}: {verdict(ratio, GOAL)}); "
             f"all done, 0 lost, 0 counted twice: {'met' if goal_met else 'MISSED'}",
             load_note()]
    finish({"tasks": n_tasks, "clean": clean, "faults": faulty, "ratio": round(ratio, 3),
            "goal": GOAL, "goal_met": goal_met}, lines, args.json)


if __name__ == "__main__":
    main()
