"""Benchmark: datarun at scale, each figure beside its baseline from the same run.

1. `problem add` of a ROWS x 40 CSV, beside `pandas.read_csv` of the same file (both as
   fresh processes), with the workspace's size on disk after it;
2. disk per task: the bytes of one task's stored predictions (compacted), beside the same
   arrays as the plain `.npy` files stored before; and the disk the local host's data set
   adds to the workspace's (hard links: nothing), beside the data set's size (a copy);
3. `train` of 20 tiny submissions x 5 folds on 2 slots in a workspace where 300
   submissions are already scored, beside the same in a fresh workspace;
4. the contributivity update per newly scored submission (8 folds x 5,000 rows, 2
   classes) at 300 and 2,000 scored submissions, as the dispatcher's blend worker runs it
   (its cache holds the blends), beside the same update without the cache (what every
   update cost before: every scored submission's predictions read again).

Each part prints the load average before and after it: the 2 cores are shared. Sized for 2 cores. `--quick` shrinks every size (for the smoke test). Run:
`.venv/bin/python bench/scale.py` (about 10 minutes; `--no-2000` skips the largest case).
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import datarun_command, finish, load_note, print_table, stop_runners_of, temp_folder  # noqa: E402
from synthetic import add_scored  # noqa: E402

KIT_TOML = """\
name = "{name}"
title = "Scale"
kind = "classification"

[data]
train = "data/train.csv"
target = "y"
test_size = {test_size}

[cv]
strategy = "kfold"
n_splits = {folds}
seed = 0

[workflow]
kind = "estimator"

[scores]
names = ["log_loss", "accuracy"]

[limits]
wall_time = "10m"
memory = "8GB"
"""

TINY = """\
from sklearn.dummy import DummyClassifier

# variant {i}


def get_estimator():
    return DummyClassifier(strategy="prior")
"""


def make_kit(folder: Path, name: str, rows: int, cols: int, folds: int, test_size: float = 0.2) -> Path:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(rows, cols)).round(6)
    frame = pd.DataFrame(X, columns=[f"f{i}" for i in range(cols)])
    frame["y"] = np.where(X[:, 0] + rng.normal(size=rows) > 0, "a", "b")
    (folder / "data").mkdir(parents=True)
    frame.to_csv(folder / "data" / "train.csv", index=False)
    (folder / "problem.toml").write_text(KIT_TOML.format(name=name, test_size=test_size, folds=folds))
    return folder


def run(command: list[str], env: dict) -> tuple[float, int]:
    """Wall time and peak RSS (bytes) of a fresh process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.perf_counter()
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stderr[-2000:]}")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return wall, max(peak, before) * 1024  # the max over children so far (a floor)


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def workspace_env(root: Path) -> tuple[Path, dict]:
    ws = root / "ws"
    env = dict(os.environ, DATARUN_HOME=str(ws), DATARUN_WARM_RUNNER="0")
    subprocess.run([*datarun_command(), "init", str(ws)], env=env, check=True, capture_output=True)
    (ws / "hosts.toml").write_text(f'[hosts.local]\nexecutor = "local"\nslots = 2\nworkdir = "{root / "host"}"\n')
    return ws, env


def registration(root: Path, rows: int) -> dict:
    kit = make_kit(root / "kit", "big", rows, 40, 5)
    csv = kit / "data" / "train.csv"
    read_csv, _ = run([sys.executable, "-c", f"import pandas; pandas.read_csv({str(csv)!r})"], dict(os.environ))
    ws, env = workspace_env(root)
    add, peak = run([*datarun_command(), "problem", "add", str(kit)], env)
    return {"rows": rows, "csv_bytes": csv.stat().st_size, "problem_add_s": add, "read_csv_s": read_csv,
            "ratio": add / read_csv, "workspace_bytes": folder_bytes(ws / ".datarun"), "peak_rss_floor": peak,
            "ws": ws, "env": env, "kit": kit, "host": root / "host"}


def disk_per_task(reg: dict) -> dict:
    ws, env, kit = reg["ws"], reg["env"], reg["kit"]
    sub = kit / "submissions" / "dummy"
    sub.mkdir(parents=True)
    (sub / "estimator.py").write_text(TINY.format(i=0))
    subprocess.run([*datarun_command(), "submit", "big", str(sub), "--team", "a"], env=env, check=True,
                   capture_output=True)
    start = time.perf_counter()
    subprocess.run([*datarun_command(), "train"], env=env, check=True, capture_output=True)
    train_s = time.perf_counter() - start
    import sqlite3

    from datarun.store.blobs import BlobStore

    conn = sqlite3.connect(ws / ".datarun" / "datarun.db")
    digests = conn.execute("SELECT pred_train, pred_test FROM tasks WHERE state = 'done'").fetchall()
    conn.close()
    store = BlobStore(ws / ".datarun" / "blobs")
    stored = [sum(store.path(d).stat().st_size for d in pair) for pair in digests]
    plain = [sum(npy_bytes(store.get_array(d)) for d in pair) for pair in digests]
    n_train = round(reg["rows"] * 0.8)
    raw = (n_train + (reg["rows"] - n_train)) * 2 * 8  # float64 probabilities, 2 classes
    trees = ws / ".datarun" / "trees"
    return {"tasks": len(stored), "bytes_per_task": int(np.mean(stored)), "npy_bytes_per_task": int(np.mean(plain)),
            "raw_float64_bytes": raw, "train_s": train_s,
            "host_data_extra_bytes": distinct_bytes(trees, reg["host"] / "data") - distinct_bytes(trees),
            "data_set_bytes": distinct_bytes(reg["host"] / "data"), "kind": "DummyClassifier(prior)",
            **model_predictions(reg["kit"] / "data" / "train.csv")}


def model_predictions(csv: Path) -> dict:
    """A DummyClassifier's predictions compact to almost nothing; a real model's far less:
    a LogisticRegression fitted on 20,000 rows, its probabilities on every row."""
    from sklearn.linear_model import LogisticRegression

    from datarun.store.blobs import pack_array

    frame = pd.read_csv(csv)
    X, y = frame.drop(columns="y").to_numpy(), frame["y"].to_numpy()
    proba = LogisticRegression(max_iter=200).fit(X[:20_000], y[:20_000]).predict_proba(X)
    return {"logreg_packed_bytes": len(pack_array(proba)), "logreg_npy_bytes": npy_bytes(proba)}


def npy_bytes(array: np.ndarray) -> int:
    """The size of an array as a plain .npy file (how predictions were stored before)."""
    import io

    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.tell()


def distinct_bytes(*folders: Path) -> int:
    """Bytes of the distinct files under these folders (a hard link counted once, as du does)."""
    sizes = {}
    for folder in folders:
        for path in folder.rglob("*"):
            if path.is_file():
                stat = path.stat()
                sizes[(stat.st_dev, stat.st_ino)] = stat.st_size
    return sum(sizes.values())


def throughput(root: Path, scored: int, n_new: int) -> dict:
    """tasks/s of `train` for n_new tiny submissions x 5 folds, after `scored` scored ones."""
    from datarun.store.db import open_db
    from datarun.store.workspace import find_workspace

    ws, env = workspace_env(root)
    kit = make_kit(root / "kit", "tiny", 600, 5, 5)
    subprocess.run([*datarun_command(), "problem", "add", str(kit)], env=env, check=True, capture_output=True)
    if scored:
        workspace = find_workspace(ws)
        db = open_db(workspace)
        add_scored(workspace, db, "tiny", scored, seed=1)
        db.conn.close()
        subprocess.run([*datarun_command(), "dispatch"], env=env, check=True, capture_output=True)  # blends
    for i in range(n_new):
        sub = root / "subs" / f"s{i}"
        sub.mkdir(parents=True)
        (sub / "estimator.py").write_text(TINY.format(i=i))
        subprocess.run([*datarun_command(), "submit", "tiny", str(sub), "--team", f"t{i}"], env=env, check=True,
                       capture_output=True)
    began = time.time()
    start = time.perf_counter()
    subprocess.run([*datarun_command(), "train"], env=env, check=True, capture_output=True)
    wall = time.perf_counter() - start
    stop_runners_of(root / "host")
    # The pace once results flow: from the first result collected to the last (the
    # dispatcher's clock), without the command's start-up (imports, the runner started, the
    # data placed) and its end (the last blend, the site).
    import sqlite3

    conn = sqlite3.connect(ws / ".datarun" / "datarun.db")
    finished = sorted(row[0] for row in conn.execute(
        "SELECT finished_at FROM tasks WHERE state = 'done' AND finished_at >= ?", (began,)))
    conn.close()
    assert len(finished) == n_new * 5, f"{len(finished)} of {n_new * 5} tasks done"
    flowing = (len(finished) - 1) / (finished[-1] - finished[0])
    return {"scored": scored, "tasks": n_new * 5, "wall_s": wall, "tasks_per_s": n_new * 5 / wall,
            "sustained_tasks_per_s": flowing, "first_result_s": finished[0] - began}


def contrib_update(root: Path, scored: int, rows: int, repeats: int) -> dict:
    """Seconds per newly scored submission, with the blend worker's cache and without."""
    from datarun.board.contrib import BlendCache, update_contributivity
    from datarun.store.db import open_db
    from datarun.store.workspace import find_workspace

    ws, env = workspace_env(root)
    kit = make_kit(root / "kit", "blend", round(rows / 0.8), 3, 8)
    subprocess.run([*datarun_command(), "problem", "add", str(kit)], env=env, check=True, capture_output=True)
    workspace = find_workspace(ws)
    db = open_db(workspace)
    add_scored(workspace, db, "blend", scored, seed=2)
    cache = BlendCache()
    update_contributivity(workspace, db, "blend", cache=cache)  # the worker's first pass
    with_cache, without = [], []
    for i in range(repeats):
        add_scored(workspace, db, "blend", 1, seed=100 + i)
        start = time.perf_counter()
        update_contributivity(workspace, db, "blend", cache=cache)
        with_cache.append(time.perf_counter() - start)
    for i in range(repeats):  # the same, as every update ran before: no cache
        add_scored(workspace, db, "blend", 1, seed=200 + i)
        start = time.perf_counter()
        update_contributivity(workspace, db, "blend")
        without.append(time.perf_counter() - start)
    db.conn.close()
    return {"scored": scored, "rows": rows, "folds": 8, "cached_s": float(np.median(with_cache)),
            "uncached_s": float(np.median(without))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=300_000)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--no-2000", action="store_true", help="skip the 2,000-submission case")
    parser.add_argument("--parts", default="registration,throughput,contributivity",
                        help="which parts to run, comma-separated (registration includes disk per task)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    rows = 20_000 if args.quick else args.rows
    scored_runs = [40] if args.quick else [300] + ([] if args.no_2000 else [2000])
    figures: dict = {}
    lines: list[str] = []

    loads: dict[str, list[str]] = {}
    if "registration" in parts:
        with temp_folder("datarun-scale-") as root:
            loads["registration"] = [load_note()]
            reg = registration(root / "reg", rows)
            disk = disk_per_task(reg)
            stop_runners_of(root / "reg" / "host")
            loads["registration"].append(load_note())
            figures["registration"] = {k: v for k, v in reg.items() if k not in ("ws", "env", "kit", "host")}
            figures["disk_per_task"] = disk
    if "throughput" in parts:
        with temp_folder("datarun-scale-") as root:
            loads["throughput"] = [load_note()]
            n_new = 4 if args.quick else 20
            fresh = throughput(root / "fresh", 0, n_new)
            loaded = throughput(root / "loaded", 40 if args.quick else 300, n_new)
            loads["throughput"].append(load_note())
            figures["throughput"] = {"fresh": fresh, "scored": loaded}
    figures["contributivity"] = []
    for scored in scored_runs if "contributivity" in parts else []:
        with temp_folder("datarun-scale-") as root:
            before = load_note()
            figures["contributivity"].append(
                contrib_update(root, scored, 1000 if args.quick else 5000, 3 if args.quick else 5))
            loads[f"contributivity {scored}"] = [before, load_note()]
    figures["load"] = loads

    rows_out = []
    if "registration" in figures:
        r, d = figures["registration"], figures["disk_per_task"]
        rows_out += [
            [f"problem add, {r['rows']:,} x 40", f"{r['problem_add_s']:.2f} s", f"read_csv {r['read_csv_s']:.2f} s",
             f"{r['ratio']:.1f}x (goal <= 5x)"],
            [".datarun/ after problem add", f"{r['workspace_bytes'] / 1e6:.1f} MB",
             f"CSV {r['csv_bytes'] / 1e6:.1f} MB", ""],
            ["disk per task (predictions, compacted)", f"{d['bytes_per_task'] / 1e6:.3f} MB",
             f"as .npy {d['npy_bytes_per_task'] / 1e6:.2f} MB", d["kind"]],
            ["a LogisticRegression's probabilities, compacted", f"{d['logreg_packed_bytes'] / 1e6:.2f} MB",
             f"as .npy {d['logreg_npy_bytes'] / 1e6:.2f} MB", "every row, bit for bit"],
            ["local host's data set, disk beyond the workspace's", f"{d['host_data_extra_bytes'] / 1e6:.2f} MB",
             f"a copy {d['data_set_bytes'] / 1e6:.1f} MB", ""],
        ]
    if "throughput" in figures:
        t = figures["throughput"]
        rows_out.append([f"train {t['fresh']['tasks']} tiny tasks, {t['scored']['scored']} scored: sustained",
                         f"{t['scored']['sustained_tasks_per_s']:.1f} tasks/s",
                         f"fresh workspace {t['fresh']['sustained_tasks_per_s']:.1f} tasks/s",
                         "(goal >= 20 tasks/s; first result to last)"])
        rows_out.append(["  the whole command (start-up and end included)", f"{t['scored']['tasks_per_s']:.1f} tasks/s",
                         f"fresh workspace {t['fresh']['tasks_per_s']:.1f} tasks/s",
                         f"first result after {t['scored']['first_result_s']:.2f} s"])
    for c in figures["contributivity"]:
        rows_out.append([f"contributivity update, {c['scored']:,} scored x 8 x {c['rows']:,}",
                         f"{c['cached_s'] * 1000:.0f} ms", f"without cache {c['uncached_s'] * 1000:.0f} ms",
                         "(goal <= 50 ms)"])
    import io

    out = io.StringIO()
    print_table("datarun at scale (2 cores)", ["figure", "datarun", "baseline", "note"], rows_out, out=out)
    lines.append(out.getvalue())
    lines += [f"{part}: {' -> '.join(notes)}" for part, notes in loads.items()]
    finish(json.loads(json.dumps(figures, default=str)), lines, args.json)


if __name__ == "__main__":
    main()
