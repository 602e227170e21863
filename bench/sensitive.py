"""What sensitive mode costs: `datarun train` of the same submissions, open and sensitive.

The iris example kit with three of its submissions (logreg, knn, random_forest) on its 5
folds, trained on a local host with 2 slots. Open: registered with `problem add`, scored
on the organiser's side. Sensitive: prepared with `owner prepare` into that host's workdir,
registered with `problem add --sensitive`; each result is sealed (scored) on the host side
and the bagged scores and blends are asked of the host. Both sides run alternately
`--repeat` times, each on a fresh workspace, so they share the machine's load; the medians
are compared. The figures must be equal: the bench checks the leaderboards agree.

Run: .venv/bin/python bench/sensitive.py [--repeat N] [--json]
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
IRIS = ROOT / "examples" / "iris"
SUBMISSIONS = ("logreg", "knn", "random_forest")
DATARUN = [sys.executable, "-m", "datarun"]


def run(*args, cwd: Path, env: dict) -> subprocess.CompletedProcess:
    result = subprocess.run([*DATARUN, *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True)
    if result.returncode not in (0,):
        raise SystemExit(f"datarun {' '.join(map(str, args))} failed: {result.stderr.strip()}")
    return result


def one_side(sensitive: bool, env: dict) -> tuple[float, dict]:
    folder = Path(tempfile.mkdtemp(prefix="datarun-bench-sensitive-"))
    try:
        owner = folder / "owner-wd"
        run("init", folder / "ws", cwd=folder, env=env)
        ws = folder / "ws"
        (ws / "hosts.toml").write_text(f'[hosts.node]\nexecutor = "local"\nworkdir = "{owner}"\nslots = 2\n')
        if sensitive:
            manifest = run("owner", "prepare", IRIS, "--workdir", owner, "--json", cwd=folder, env=env).stdout
            (folder / "manifest.json").write_text(manifest)
            public = folder / "public"
            public.mkdir()
            shutil.copy(IRIS / "problem.toml", public / "problem.toml")
            run("problem", "add", public, "--sensitive", "--host", "node", "--manifest", folder / "manifest.json",
                cwd=ws, env=env)
        else:
            run("problem", "add", IRIS, cwd=ws, env=env)
        for name in SUBMISSIONS:
            run("submit", "iris", IRIS / "submissions" / name, "--team", name, cwd=ws, env=env)
        started = time.perf_counter()
        run("train", cwd=ws, env=env)
        wall = time.perf_counter() - started
        board = json.loads(run("leaderboard", "iris", "--private", "--json", cwd=ws, env=env).stdout)
        figures = {row["submission"]: (row["valid"], row["test"], row["contributivity"]) for row in board["rows"]}
        figures["blend"] = board["blend"]
        return wall, figures
    finally:
        for runner in folder.rglob("runner.json"):  # the local runner of this workspace
            try:
                os.kill(json.loads(runner.read_text())["pid"], 15)
            except (OSError, ValueError, KeyError):
                pass
        shutil.rmtree(folder, ignore_errors=True)


def close(a, b) -> bool:
    if isinstance(a, dict):
        return set(a) == set(b) and all(close(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(close(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and isinstance(b, float):
        return abs(a - b) <= 1e-12
    return a == b


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    options = parser.parse_args()
    env = dict(os.environ, DATARUN_WARM_RUNNER="0")
    env.pop("DATARUN_HOME", None)
    walls: dict[str, list[float]] = {"open": [], "sensitive": []}
    same = True
    for _ in range(options.repeat):
        open_wall, open_figures = one_side(False, env)
        sensitive_wall, sensitive_figures = one_side(True, env)
        walls["open"].append(open_wall)
        walls["sensitive"].append(sensitive_wall)
        same = same and close(open_figures, sensitive_figures)
    tasks = 5 * len(SUBMISSIONS)
    medians = {side: statistics.median(values) for side, values in walls.items()}
    figures = {"open_train_s": medians["open"], "sensitive_train_s": medians["sensitive"],
               "extra_per_task_s": (medians["sensitive"] - medians["open"]) / tasks, "tasks": tasks,
               "same_figures": same, "walls": walls, "load": os.getloadavg()[0]}
    if options.json:
        print(json.dumps(figures))
        return
    print(f"iris, {len(SUBMISSIONS)} submissions x 5 folds, local host 2 slots, median of {options.repeat} "
          f"(load average {figures['load']:.1f})")
    print(f"  open train       {medians['open']:.2f} s  (baseline)")
    print(f"  sensitive train  {medians['sensitive']:.2f} s  "
          f"({figures['extra_per_task_s'] * 1000:+.0f} ms a task: sealing, and bagging and blending asked of the host)")
    print(f"  figures equal to 1e-12: {'yes' if same else 'NO'}")


if __name__ == "__main__":
    main()
