"""How fast `datarun status` and `datarun leaderboard` answer on a busy workspace.

The board calls these as subprocesses on every page view, so start-up counts as much as
the query. The workspace holds the iris kit registered for real and 2,000 scored
submissions x 5 folds, written straight into SQLite in one transaction (rows as
datarun/store/db.py defines them: submissions, done tasks with timings and their stored
predictions, per-task scores on train/valid/test, bagged scores); one `datarun dispatch`
then computes the stored blends (contributivity per scope), as it does after training.
Each command runs `--runs` times as a real subprocess with --json; the median is compared
with the goal, beside the start-up of a Python that imports pandas and scikit-learn (what
a CLI importing everything up front pays).

It also times the alternative to storing a blend per scope: computing an event's blend
when its leaderboard is asked for (its submissions' stored predictions read and blended,
in one process, start-up not counted): what every event leaderboard call would add.

Run: .venv/bin/python bench/cli.py [--quick] [--submissions N] [--runs N] [--json]
"""

import argparse
import contextlib
import io
import json
import random
import sqlite3
import sys
import time

import numpy as np
from common import (
    Workspace,
    finish,
    load_note,
    median_time,
    print_table,
    temp_folder,
    verdict,
)

GOALS = {"status": 0.4, "leaderboard": 1.0}
SPLITS = ("train", "valid", "test")


def predictions(rng: np.random.Generator, quality: float, y: np.ndarray, n_classes: int) -> np.ndarray:
    """Class probabilities that favour the true class (y: class indices) by `quality`."""
    logits = rng.normal(size=(len(y), n_classes)) + 4 * quality * np.eye(n_classes)[y]
    proba = np.exp(logits)
    return proba / proba.sum(axis=1, keepdims=True)


def fill(workspace: Workspace, problem: str, n_submissions: int, seed: int = 0,
         first: int = 1) -> None:
    """Insert n scored submissions (ids from `first`) with one done task per fold and its
    stored predictions, in one transaction; submitted a minute apart, the last one now."""
    from datarun.problems.registered import get_problem, load_labels
    from datarun.store.blobs import BlobStore
    from datarun.store.db import open_db
    from datarun.store.workspace import Workspace as Found

    found = Found(workspace.root)
    db = open_db(found)
    kit = get_problem(db, problem)
    db.conn.close()
    y_train, y_test = load_labels(found, kit)
    classes = list(kit["classes"])
    y_train = np.array([classes.index(v) for v in y_train.tolist()])
    y_test = np.array([classes.index(v) for v in y_test.tolist()])
    store = BlobStore(found.blobs_dir)
    arrays = np.random.default_rng(seed)
    rng = random.Random(seed)
    with contextlib.closing(sqlite3.connect(workspace.db_path)) as conn:
        folds = [row[0] for row in conn.execute(
            "SELECT fold FROM folds WHERE problem = ? ORDER BY fold", (problem,))]
        score_names = json.loads(conn.execute(
            "SELECT score_names FROM problems WHERE name = ?", (problem,)).fetchone()[0])
        limits = conn.execute("SELECT limits FROM problems WHERE name = ?", (problem,)).fetchone()[0]
        event = conn.execute("SELECT name FROM events WHERE problem = ? AND is_default = 1",
                             (problem,)).fetchone()
        environment = json.dumps({"hostname": "bench", "python": "3.11", "host": "local"})
        now = time.time() - (first - 1 + n_submissions) * 60
        submissions, tasks, scores, bagged = [], [], [], []
        task_id = (first - 1) * len(folds)
        for sid in range(first, first + n_submissions):
            team = f"team{sid % 97}"
            digest = f"{sid:064x}"
            created = now + sid * 60
            submissions.append((sid, problem, event[0] if event else None, team, f"sub{sid}",
                                digest, json.dumps({"estimator.py": digest}), created))
            quality = rng.uniform(0.6, 0.99)
            for fold in folds:
                task_id += 1
                train_time = rng.uniform(0.05, 2.0)
                pred_train = store.put_predictions(predictions(arrays, quality, y_train, len(classes)))
                pred_test = store.put_predictions(predictions(arrays, quality, y_test, len(classes)))
                tasks.append((task_id, sid, fold, "done", 1, "local", fold % 2, limits, created,
                              created + 1, created + 3, train_time, train_time / 10,
                              train_time / 20, train_time * 1.2, train_time * 1.1,
                              rng.randint(140, 400) * 1024**2, pred_train, pred_test,
                              environment))
                for split in SPLITS:
                    for name in score_names:
                        scores.append((task_id, split, name, quality + rng.uniform(-0.05, 0.05)))
            for split in ("valid", "test"):
                for name in score_names:
                    bagged.append((sid, split, name, quality + rng.uniform(-0.02, 0.02)))
        with conn:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(
                "INSERT INTO submissions (id, problem, event, team, name, files_hash, files, "
                "created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", submissions)
            conn.executemany(
                "INSERT INTO tasks (id, submission, fold, state, attempt, host, slot, limits, "
                "queued_at, started_at, finished_at, train_time, valid_time, test_time, wall_time, "
                "cpu_time, peak_memory, pred_train, pred_test, environment) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", tasks)
            conn.executemany("INSERT INTO scores (task, split, score, value) VALUES (?, ?, ?, ?)",
                             scores)
            conn.executemany(
                "INSERT INTO bagged_scores (submission, split, score, value) VALUES (?, ?, ?, ?)",
                bagged)


def blend_on_the_fly(workspace: Workspace, problem: str, runs: int) -> dict:
    """Seconds to read an event's stored predictions and blend them, without storing."""
    import statistics

    from datarun.board.contrib import _blend, _Inputs
    from datarun.board.scopes import fully_trained
    from datarun.store.db import open_db
    from datarun.store.workspace import Workspace as Found

    found = Found(workspace.root)
    db = open_db(found)
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        inputs = _Inputs(found, db, problem)
        ids = [sid for sid, _ in fully_trained(db, problem)]
        inputs.learn(db, ids)
        candidates = [sid for sid in ids if inputs.valid_predictions(sid) is not None]
        _blend(inputs, candidates, None)
        samples.append(time.perf_counter() - started)
    return {"median": statistics.median(samples), "runs": samples}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="50 submissions, 3 runs (smoke test)")
    parser.add_argument("--submissions", type=int, default=None, help="default 2000 (quick 50)")
    parser.add_argument("--runs", type=int, default=None, help="runs per command (default 7, quick 3)")
    parser.add_argument("--json", action="store_true", help="figures as JSON on stdout, text on stderr")
    args = parser.parse_args(argv)
    n_submissions = args.submissions or (50 if args.quick else 2000)
    runs = args.runs or (3 if args.quick else 7)

    from common import IRIS, datarun_command

    with temp_folder("datarun-bench-cli-") as tmp:
        workspace = Workspace(tmp / "ws")
        workspace.cli("problem", "add", IRIS)
        workspace.cli("event", "list")  # makes the problem's default event, as a first submit does
        fill(workspace, "iris", n_submissions)
        base = datarun_command()
        started = time.perf_counter()
        workspace.cli("dispatch")  # computes every scope's blend, from scratch
        blend_all = time.perf_counter() - started
        # Check the answers once (and warm the page cache) before timing.
        shown = json.loads(workspace.cli("leaderboard", "iris", "--json").stdout)
        counts = json.loads(workspace.cli("status", "--json").stdout)
        if len(shown["rows"]) != n_submissions or counts["problems"]["iris"]["done"] != n_submissions * 5:
            raise RuntimeError(f"the filled workspace does not show {n_submissions} scored submissions")
        if not shown["blend_current"] or shown["blend"] is None:
            raise RuntimeError("dispatch did not store the blend the leaderboard shows")
        load_before = load_note()
        status = median_time(base + ["status", "--json"], runs, workspace.env)
        board = median_time(base + ["leaderboard", "iris", "--json"], runs, workspace.env)
        event_board = median_time(base + ["leaderboard", "iris", "--event", "iris", "--json"],
                                  runs, workspace.env)
        on_the_fly = blend_on_the_fly(workspace, "iris", runs)
    heavy = median_time([sys.executable, "-c", "import pandas, sklearn"], runs)
    bare = median_time([sys.executable, "-c", "pass"], runs)

    figures = {
        "scratch": str(tmp), "submissions": n_submissions, "tasks": n_submissions * 5,
        "runs": runs, "load": [load_before, load_note()],
        "status": dict(status, goal=GOALS["status"], met=status["median"] <= GOALS["status"]),
        "leaderboard": dict(board, goal=GOALS["leaderboard"],
                            met=board["median"] <= GOALS["leaderboard"]),
        "event_leaderboard": dict(event_board, goal=GOALS["leaderboard"],
                                  met=event_board["median"] <= GOALS["leaderboard"]),
        "blend_in_dispatch": blend_all,
        "event_blend_on_the_fly": on_the_fly,
        "python_pandas_sklearn": heavy,
        "python_bare": bare,
    }
    figures["met"] = (figures["status"]["met"] and figures["leaderboard"]["met"]
                      and figures["event_leaderboard"]["met"])
    text = io.StringIO()
    rows = []
    for label, key in (("datarun status --json", "status"),
                       ("datarun leaderboard iris --json", "leaderboard"),
                       ("datarun leaderboard iris --event iris --json", "event_leaderboard"),
                       ("python -c 'import pandas, sklearn'", "python_pandas_sklearn"),
                       ("python -c pass", "python_bare")):
        figure = figures[key]
        goal = f"{figure['goal']:.1f} s" if "goal" in figure else ""
        mark = verdict(figure["median"], figure["goal"]) if "goal" in figure else (
            "baseline" if key == "python_pandas_sklearn" else "")
        rows.append([label, f"{figure['median']:.3f} s", f"{figure['cpu_median']:.3f} s", goal, mark])
    print_table(f"cli: {n_submissions} scored submissions x 5 folds, median of {runs} runs "
                f"({figures['load'][0]} before, {figures['load'][1]} after)",
                ["", "wall", "cpu", "goal", ""], rows, out=text)
    notes = [
        f"stored blends: one `datarun dispatch` computed every scope from scratch in "
        f"{blend_all:.2f} s (command included);",
        f"the alternative, an event's blend computed on each leaderboard call: "
        f"{on_the_fly['median']:.2f} s more per call (its {n_submissions} x 5 stored predictions "
        f"read and blended, median of {runs}), so about "
        f"{event_board['median'] + on_the_fly['median']:.2f} s a call against the "
        f"{GOALS['leaderboard']:.1f} s goal",
    ]
    finish(figures, [text.getvalue().rstrip(), "\n".join(notes)], args.json)
    return figures


if __name__ == "__main__":
    main(sys.argv[1:])
