"""How fast `datarun site` writes the site of a busy problem, and brings it up to date.

The workspace is bench/cli.py's: the iris kit registered for real and 2,000 scored
submissions x 5 folds written straight into SQLite, plus contributivity for a dozen of
them and a blend row per scope (as datarun/board/contrib.py stores them). Timed as real
subprocesses, as cron runs it:

- from scratch: `datarun site OUT` into a new folder (every page, every plot frame);
- after one new submission: one more scored submission is written, then `datarun site
  OUT` again on the same folder (only the changed pages);
- nothing changed: the same again without a new submission;

beside `datarun leaderboard iris --json` in the same run (the one query every page
depends on, with the CLI's start-up).

Run: .venv/bin/python bench/site.py [--quick] [--submissions N] [--runs N] [--json]
"""

import argparse
import contextlib
import io
import json
import random
import sqlite3
import statistics
import sys
import time

from cli import fill
from common import (
    IRIS,
    Workspace,
    datarun_command,
    finish,
    load_note,
    median_time,
    print_table,
    temp_folder,
    verdict,
)

GOALS = {"scratch": 10.0, "update": 1.0}


SCOPES = ("*", "iris")  # the whole problem's blend and its default event's (the same set)


def add_contributivity(workspace: Workspace, problem: str, n_submissions: int, seed: int = 1) -> None:
    """Shares for a dozen submissions (summing to one) and a blend row, for each scope."""
    rng = random.Random(seed)
    members = rng.sample(range(1, n_submissions + 1), min(12, n_submissions))
    weights = [rng.random() for _ in members]
    considered = json.dumps(list(range(1, n_submissions + 1)))
    with contextlib.closing(sqlite3.connect(workspace.db_path)) as conn, conn:
        for scope in SCOPES:
            conn.executemany(
                "INSERT INTO contributivity (problem, scope, submission, value) VALUES (?, ?, ?, ?)",
                [(problem, scope, sid, w / sum(weights)) for sid, w in zip(members, weights, strict=True)])
            conn.execute(
                "INSERT INTO blends (problem, scope, considered, submissions, state, score, "
                "combined_valid, best_single_valid, combined_test, updated_at) "
                "VALUES (?, ?, ?, ?, NULL, 'accuracy', 0.991, 0.989, 0.987, ?)",
                (problem, scope, considered, considered, time.time()))


def join_blends(workspace: Workspace, problem: str, sid: int) -> None:
    """A new submission the blends took in without changing anyone's share (its own is 0),
    as the dispatcher stores it once scored: only its pages and the event's change."""
    with contextlib.closing(sqlite3.connect(workspace.db_path)) as conn, conn:
        for scope in SCOPES:
            considered = json.loads(conn.execute(
                "SELECT considered FROM blends WHERE problem = ? AND scope = ?", (problem, scope)).fetchone()[0])
            members = json.dumps([*considered, sid])
            conn.execute("UPDATE blends SET considered = ?, submissions = ? WHERE problem = ? AND "
                         "scope = ?", (members, members, problem, scope))
            conn.execute("INSERT INTO contributivity (problem, scope, submission, value) "
                         "VALUES (?, ?, ?, 0.0)", (problem, scope, sid))


def timed_cpu_result(command: list[str], env: dict):
    """(wall seconds, CPU seconds, the completed process) of one subprocess."""
    import resource

    from common import timed

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall, result = timed(command, env=env)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="50 submissions, 2 runs (smoke test)")
    parser.add_argument("--submissions", type=int, default=None, help="default 2000 (quick 50)")
    parser.add_argument("--runs", type=int, default=None, help="runs of each (default 5, quick 2)")
    parser.add_argument("--json", action="store_true", help="figures as JSON on stdout, text on stderr")
    args = parser.parse_args(argv)
    n_submissions = args.submissions or (50 if args.quick else 2000)
    runs = args.runs or (2 if args.quick else 5)

    with temp_folder("datarun-bench-site-") as tmp:
        workspace = Workspace(tmp / "ws")
        workspace.cli("problem", "add", IRIS)
        workspace.cli("event", "list")  # makes the problem's default event, which fill() joins
        fill(workspace, "iris", n_submissions)
        add_contributivity(workspace, "iris", n_submissions)
        base = datarun_command()
        board = json.loads(workspace.cli("leaderboard", "iris", "--json").stdout)
        if len(board["rows"]) != n_submissions:
            raise RuntimeError(f"the filled workspace does not show {n_submissions} scored submissions")
        load_before = load_note()
        scratch, update, same, written = [], [], [], []

        def site(out):
            wall, cpu, result = timed_cpu_result(base + ["site", str(out), "--json"], workspace.env)
            return (wall, cpu), json.loads(result.stdout)

        for run in range(runs):
            figure, result = site(tmp / f"site{run}")
            scratch.append(figure)
            pages = result["pages"]
        out = tmp / "site0"
        next_id = n_submissions + 1
        for _ in range(runs):
            fill(workspace, "iris", 1, seed=next_id, first=next_id)
            join_blends(workspace, "iris", next_id)
            next_id += 1
            figure, result = site(out)
            update.append(figure)
            written.append(result["written"])
            figure, result = site(out)
            same.append(figure)
            if result["written"]:
                raise RuntimeError("a second run with no new data rewrote pages")
        if f"iris/{next_id - 1}.html" not in written[-1]:
            raise RuntimeError("the update did not write the new submission's page")
        leaderboard = median_time(base + ["leaderboard", "iris", "--json"], runs, workspace.env)
    def summary(samples: list[tuple[float, float]], goal: float | None = None) -> dict:
        walls = [wall for wall, _ in samples]
        figure = {"median": statistics.median(walls), "runs": walls,
                  "cpu_median": statistics.median(cpu for _, cpu in samples)}
        if goal is not None:
            figure.update(goal=goal, met=figure["median"] <= goal)
        return figure

    figures = {
        "scratch_folder": str(tmp), "submissions": n_submissions, "tasks": n_submissions * 5,
        "pages": pages, "runs": runs, "load": [load_before, load_note()],
        "scratch": summary(scratch, GOALS["scratch"]),
        "update": dict(summary(update, GOALS["update"]), files_written=[len(w) for w in written],
                       last_written=written[-1]),
        "unchanged": summary(same),
        "leaderboard": leaderboard,
    }
    figures["met"] = figures["scratch"]["met"] and figures["update"]["met"]
    text = io.StringIO()
    rows = []
    for label, key in (("datarun site OUT, from scratch", "scratch"),
                       ("datarun site OUT, after one new submission", "update"),
                       ("datarun site OUT, nothing new", "unchanged"),
                       ("datarun leaderboard iris --json", "leaderboard")):
        figure = figures[key]
        goal = f"{figure['goal']:.1f} s" if "goal" in figure else ""
        mark = verdict(figure["median"], figure["goal"]) if "goal" in figure else (
            "baseline" if key == "leaderboard" else "")
        rows.append([label, f"{figure['median']:.3f} s", f"{figure['cpu_median']:.3f} s", goal, mark])
    print_table(f"site: {n_submissions} scored submissions x 5 folds ({pages} files), median of "
                f"{runs} runs ({figures['load'][0]} before, {figures['load'][1]} after)",
                ["", "wall", "cpu", "goal", ""], rows, out=text)
    print(f"files written by an update: {figures['update']['files_written']} "
          f"(last: {', '.join(written[-1])})", file=text)
    finish(figures, [text.getvalue().rstrip()], args.json)
    return figures


if __name__ == "__main__":
    main(sys.argv[1:])
