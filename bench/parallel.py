"""datarun train on 2 slots against a plain loop that fits the same work one fold at a time.

The iris example kit with four real submissions (its logreg, random_forest and knn, plus
a gradient-boosting one written here) on its 5 frozen folds. datarun's figure is the wall
time of `datarun train` on the local host with 2 slots, run after the four `datarun
submit`s as an organiser runs them; submit starts the local runner, so its imports
(about 1 s) overlap with the next submits. The baseline's is the wall time of a fresh
Python that imports what it needs and fits, predicts and scores every submission on
every fold in turn, as `ramp-test` does. Both start from the same registered folds.

Two more datarun rows, so nothing is hidden: `train` with the runner started cold by
train itself (submit's warm start switched off, as the first command after a reboot),
and the same work again while the runner is still up (as under cron's dispatch). Each
side runs `--repeat` times on a fresh workspace; the medians are compared.

Run: .venv/bin/python bench/parallel.py [--quick] [--repeat N] [--json]
"""

import argparse
import io
import json
import statistics
import sys
from pathlib import Path

from common import (
    Workspace,
    export_folds,
    finish,
    load_note,
    make_kit,
    print_table,
    recorded_model_time,
    run_loop_baseline,
    temp_folder,
    verdict,
)

GOAL = 0.6  # datarun's wall time at most this share of the loop's

GRADIENT_BOOSTING = """from sklearn.ensemble import GradientBoostingClassifier


def get_estimator():
    return GradientBoostingClassifier(n_estimators=100, max_depth=2, random_state=0)
"""
EXAMPLE_SUBMISSIONS = ("logreg", "random_forest", "knn")


def run_datarun(root: Path, kit: Path, names: list[str], warm: bool) -> dict:
    """Submit, then time `datarun train`; then the same work again under another team while
    the runner is still up (as when cron's dispatch keeps it busy).

    warm: `submit` starts the local runner (datarun's default), so its imports overlap with
    the next submits; otherwise `train` starts it cold, as the first command after a reboot.
    """
    workspace = Workspace(root, slots=2, warm=warm)
    try:
        workspace.cli("problem", "add", kit)
        for name in names:
            workspace.cli("submit", "iris", kit / "submissions" / name, "--team", "first")
        wall, result = workspace.timed_cli("train", "--json")
        tasks, done, model = recorded_model_time(workspace)
        for name in names:
            workspace.cli("submit", "iris", kit / "submissions" / name, "--team", "again")
        again_wall, _ = workspace.timed_cli("train", "--json")
    finally:
        workspace.stop_runners()
    all_tasks, all_done, all_model = recorded_model_time(workspace)
    if done != tasks or all_done != all_tasks:
        raise RuntimeError(f"datarun finished {all_done} of {all_tasks} tasks")
    return {"wall": wall, "model_time": model, "tasks": tasks,
            "again_wall": again_wall, "again_model_time": all_model - model,
            "train_core_wall": json.loads(result.stdout)["wall_time"], "workspace": workspace}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 submissions x 2 folds, 1 run (smoke test)")
    parser.add_argument("--repeat", type=int, default=None, help="runs per side (default 3, quick 1)")
    parser.add_argument("--json", action="store_true", help="figures as JSON on stdout, text on stderr")
    args = parser.parse_args(argv)
    repeat = args.repeat or (1 if args.quick else 3)
    names = ["logreg", "knn"] if args.quick else [*EXAMPLE_SUBMISSIONS, "gradient_boosting"]
    n_folds = 2 if args.quick else 5

    warm_runs, cold_runs, loop_runs = [], [], []
    load_before = load_note()
    with temp_folder("datarun-bench-parallel-") as tmp:
        kit = make_kit(tmp / "kit", n_folds, {"gradient_boosting": GRADIENT_BOOSTING},
                       keep=EXAMPLE_SUBMISSIONS)
        folds = tmp / "folds"
        for run in range(repeat):
            # Interleave the sides so a noisy neighbour hurts them alike.
            warm_runs.append(run_datarun(tmp / f"warm{run}", kit, names, warm=True))
            if run == 0:
                export_folds(warm_runs[0]["workspace"], "iris", folds)
            loop_runs.append(run_loop_baseline(kit, folds, n_folds, names))
            cold_runs.append(run_datarun(tmp / f"cold{run}", kit, names, warm=False))

    def side(walls: list[float], model_times: list[float]) -> dict:
        return {"wall": statistics.median(walls), "walls": walls,
                "model_time": statistics.median(model_times)}

    figures = {
        "scratch": str(tmp), "submissions": names, "folds": n_folds,
        "tasks": len(names) * n_folds, "runs": repeat, "load": [load_before, load_note()],
        "goal_ratio": GOAL,
        "datarun": side([r["wall"] for r in warm_runs], [r["model_time"] for r in warm_runs]),
        "datarun_cold": side([r["wall"] for r in cold_runs], [r["model_time"] for r in cold_runs]),
        "datarun_up": side([r["again_wall"] for r in warm_runs + cold_runs],
                           [r["again_model_time"] for r in warm_runs + cold_runs]),
        "loop": side([w for w, _ in loop_runs], [m for _, m in loop_runs]),
    }
    loop_wall = figures["loop"]["wall"]
    ratio = figures["datarun"]["wall"] / loop_wall
    figures.update(ratio=ratio, met=ratio <= GOAL,
                   cold_ratio=figures["datarun_cold"]["wall"] / loop_wall,
                   up_ratio=figures["datarun_up"]["wall"] / loop_wall)
    figures["datarun"]["train_core_walls"] = [r["train_core_wall"] for r in warm_runs]
    rows = []
    for label, key in (("datarun train after submit (the figure)", "datarun"),
                       ("datarun train, runner started cold by train", "datarun_cold"),
                       ("datarun train, runner already up", "datarun_up"),
                       ("one Python, fits in a loop (ramp-test style)", "loop")):
        figure = figures[key]
        rows.append([label, f"{figure['wall']:.2f} s", f"{figure['wall'] / loop_wall:.2f} x",
                     f"{figure['model_time']:.2f} s", " ".join(f"{w:.2f}" for w in figure["walls"])])
    text = io.StringIO()
    print_table(
        f"parallel: {len(names)} submissions x {n_folds} folds = {figures['tasks']} tasks, "
        f"median of {repeat} run(s) ({figures['load'][0]} before, {figures['load'][1]} after)",
        ["", "wall", "/ loop", "fit+predict", "runs"], rows, out=text)
    lines = [text.getvalue().rstrip(),
             f"goal: datarun at most {GOAL:.1f} x the loop's wall time: {verdict(ratio, GOAL)} "
             f"({ratio:.2f} x)"]
    finish(figures, lines, args.json)
    return figures


if __name__ == "__main__":
    main(sys.argv[1:])
