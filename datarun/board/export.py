"""Exports: a submission as ramp-test's `training_output/`, a problem's tasks as CSV or JSON.

`export_ramp` writes the files `ramp-test --save-output` writes, with the same names and
formats, so RAMP tooling (`ramp-show`, `ramp-blend`, rampwf's readers) reads datarun's
results as its own: `fold_<i>/y_pred_train.npz` and `y_pred_test.npz` (`np.savez_compressed`
with the array under `y_pred`), `fold_<i>/scores.csv` (a `step` column, one column per
score type, then `time`), `fold_<i>/train_time`, `valid_time`, `test_time` (seconds as
text), and `bagged_scores.csv` (`step`, `n_bag`, one column per score type: the score of
the first n_bag + 1 folds bagged). Without test data (a RAMP kit whose `get_test_data`
gives `(None, None)`) the test files and rows are left out, as ramp-test does.

The bagged scores come from what training stored (the curve of every bagged prefix), so
exporting imports neither ramp-workflow nor the kit; only a kit that saves its predictions
its own way (`save_y_pred` in problem.py) is imported, to write them as ramp-test would. A
kit whose predictions cannot be combined gets no `bagged_scores.csv` (ramp-test stops
there too), and the summary says why.

`task_rows` flattens every task of a problem (native or RAMP) for `--csv`/`--json`; the
column names are stable and listed in docs/RAMP.md.
"""

import csv
import json
import os
from pathlib import Path

import numpy as np

from datarun.challenge.submissions import get_submission
from datarun.errors import UsageError
from datarun.problems.registered import get_problem
from datarun.safetext import csv_row
from datarun.store.blobs import BlobStore

SPLITS = ("train", "valid", "test")
# One vocabulary with every --json output (docs/JSON.md): a row names the task and its
# submission by id (`task_id`, `submission_id`) and the submission by name (`submission`);
# `started_at` and `finished_at` are when the task's process ran, by its host's clock, as
# `submission show` says.
TASK_COLUMNS = (
    "problem", "event", "submission_id", "team", "submission", "task_id", "fold", "state",
    "attempt", "host", "error_kind", "train_time", "valid_time", "test_time", "wall_time",
    "cpu_time", "peak_memory", "started_at", "finished_at",
)


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _csv_text(header: list[str], rows: list[list]) -> str:
    def cell(value):
        if value is None:
            return ""
        return repr(float(value)) if isinstance(value, float | np.floating) else str(value)

    lines = [",".join(header)] + [",".join(cell(v) for v in row) for row in rows]
    return "\n".join(lines) + "\n"


def _stored_table(db, submission: int) -> tuple[dict | None, str | None]:
    """The bagged curves stored at training ({split: {score: [...]}}) and any note; no table
    when a curve is missing (stored before curves were kept)."""
    table: dict[str, dict[str, list]] = {}
    note = None
    for split, score, curve, row_note in db.execute(
            "SELECT split, score, curve, note FROM bagged_scores WHERE submission = ?", [submission]):
        if row_note:
            note = row_note
        elif curve is None:
            return None, None
        else:
            table.setdefault(split, {})[score] = json.loads(curve)
    if note:
        return None, note
    return table or None, None


def _bagged_table(workspace, db, problem: dict, folds: list[int], preds_train, preds_test):
    """{split: {score: [bagged score of the first 1..n folds]}} as ramp-test computes it."""
    from datarun.board.scorer import scorer_for

    scorer = scorer_for(workspace, db, problem)
    if hasattr(scorer, "bagged_table"):  # RAMP: the kit's own bagging
        return scorer.bagged_table(folds, preds_train, preds_test)
    table: dict[str, dict[str, list]] = {}
    for k in range(1, len(folds) + 1):
        tests = preds_test[:k] if problem["n_test"] else []
        for split, name, value in scorer.bagged_scores(folds[:k], preds_train[:k], tests):
            table.setdefault(split, {}).setdefault(name, []).append(value)
    return table


def export_ramp(workspace, db, submission_id, out_dir: Path, private: bool = False) -> dict:
    """Write a fully trained submission's folds as ramp-test's training_output/ in out_dir.

    Test predictions and scores are written only when `private` (organisers); without it
    the folder is what ramp-test writes for a kit without test data."""
    submission = get_submission(db, submission_id)
    problem = get_problem(db, submission["problem"])
    if problem.get("sensitive"):
        raise UsageError(f"submission {submission['id']} is of sensitive problem {problem['name']}: its "
                         "predictions stay on the data owner's host, so there is nothing to export "
                         "(`export PROBLEM --csv` gives its scores)")
    tasks = list(db.query(
        "SELECT id, fold, state, pred_train, pred_test, train_time, valid_time, test_time "
        "FROM tasks WHERE submission = ? ORDER BY fold", [submission["id"]]))
    done = sum(t["state"] == "done" for t in tasks)
    if not tasks or done < len(tasks):
        raise UsageError(f"submission {submission['id']} has {done} of {len(tasks)} folds done: "
                         "export it once `datarun train` has run every fold")
    out_dir = Path(out_dir).expanduser()
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"{out_dir} is a file: give a folder to write training_output/ into")
    names = list(problem["score_names"])
    scores: dict[int, dict] = {}
    for task, split, name, value in db.execute(
            "SELECT sc.task, sc.split, sc.score, sc.value FROM scores sc JOIN tasks t "
            "ON t.id = sc.task WHERE t.submission = ?", [submission["id"]]):
        scores.setdefault(task, {}).setdefault(split, {})[name] = value
    has_test = problem["n_test"] > 0 and private
    steps = SPLITS if has_test else SPLITS[:2]
    store = BlobStore(workspace.blobs_dir)
    save = _pred_writer(workspace, problem)
    preds_train, preds_test = [], []
    table, note = _stored_table(db, submission["id"])
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        for i, task in enumerate(tasks):
            fold_dir = out_dir / f"fold_{i}"
            fold_dir.mkdir(exist_ok=True)
            train = store.get_array(task["pred_train"])
            test = store.get_array(task["pred_test"])
            preds_train.append(train)
            preds_test.append(test)
            save(train, fold_dir, "train")
            if has_test:
                save(test, fold_dir, "test")
            task_scores = scores.get(task["id"], {})
            rows = [[step, *[task_scores.get(step, {}).get(n) for n in names],
                     task[f"{step}_time"]] for step in steps]
            _write_text(fold_dir / "scores.csv", _csv_text(["step", *names, "time"], rows))
            for step in steps:
                _write_text(fold_dir / f"{step}_time", str(task[f"{step}_time"]))
        if table is None and note is None:
            table = _bagged_table(workspace, db, problem, [t["fold"] for t in tasks],
                                  preds_train, preds_test)
        if table is not None:
            rows = []
            for step in ("valid", "test") if has_test else ("valid",):
                for n_bag in range(len(tasks)):
                    if step in table:
                        rows.append([step, n_bag, *[table[step][n][n_bag] for n in names]])
            _write_text(out_dir / "bagged_scores.csv", _csv_text(["step", "n_bag", *names], rows))
    except OSError as error:
        raise UsageError(f"cannot write to {out_dir}: {error.strerror or error}") from None
    return {"submission_id": submission["id"], "problem": problem["name"], "folder": str(out_dir),
            "folds": len(tasks), "test": has_test, "note": note,
            "test_left_out": problem["n_test"] > 0 and not private}


def _pred_writer(workspace, problem: dict):
    """How ramp-test's save_y_pred writes one fold's predictions: the kit's own save_y_pred
    when problem.py defines one, else `np.savez_compressed(y_pred_<suffix>.npz, y_pred=...)`."""
    def savez(y_pred, folder: Path, suffix: str) -> None:
        np.savez_compressed(folder / f"y_pred_{suffix}.npz", y_pred=y_pred)

    ramp = (problem.get("spec") or {}).get("ramp") or {}
    if not ramp.get("save_y_pred"):
        return savez
    from datarun.problems.rampkit import (
        kit_environment,
        kit_folder,
        problem_environment,
        problem_module,
    )

    module = problem_module(workspace, problem)
    kit, env = kit_folder(workspace, problem), problem_environment(problem)

    def kits_own(y_pred, folder: Path, suffix: str) -> None:
        try:
            with kit_environment(kit, env):
                module.save_y_pred(y_pred, problem["kit_path"], str(folder), suffix)
        except OSError:
            raise
        except Exception as error:
            raise UsageError(f"problem.py save_y_pred failed: {type(error).__name__}: "
                             f"{error}") from None

    return kits_own


def task_rows(db, problem_name: str, private: bool = False,
              now: float | None = None) -> tuple[list[str], list[dict]]:
    """(CSV columns, rows): every task of a problem with its scores and measurements.

    Score columns are `<split>_<score>` for split train, valid (and test when `private`)
    and each score type in the problem's order. The public view (`private` False) has no
    test column, and no score of an event whose scores are not public yet (its rows'
    score cells are empty and `scores_hidden` is 1): the leaderboard's rule
    (datarun/board/views.py).
    """
    import time

    from datarun.board.scopes import hidden_events
    from datarun.board.views import visible_splits

    problem = get_problem(db, problem_name)
    names = list(problem["score_names"])
    splits = visible_splits(private, True)
    hidden = {} if private else hidden_events(db, problem_name, time.time() if now is None else now)
    score_columns = [f"{split}_{name}" for split in splits for name in names]
    marks = ", ".join("?" for _ in splits)
    scores: dict[int, dict] = {}
    for task, split, name, value in db.execute(
            "SELECT sc.task, sc.split, sc.score, sc.value FROM scores sc JOIN tasks t "
            "ON t.id = sc.task JOIN submissions s ON s.id = t.submission WHERE s.problem = ? "
            f"AND sc.split IN ({marks})", [problem_name, *splits]):
        scores.setdefault(task, {})[f"{split}_{name}"] = value
    rows = []
    for task in db.query(
            "SELECT s.problem, s.event, s.id AS submission_id, s.team, s.name AS submission, "
            "t.id AS task_id, t.fold, t.state, t.attempt, t.host, t.error_kind, t.train_time, "
            "t.valid_time, t.test_time, t.wall_time, t.cpu_time, t.peak_memory, "
            "t.ran_from AS started_at, t.ran_to AS finished_at "
            "FROM tasks t JOIN submissions s ON s.id = t.submission "
            "WHERE s.problem = ? ORDER BY s.id, t.fold", [problem_name]):
        row = {column: task[column] for column in TASK_COLUMNS}
        withheld = task["event"] in hidden
        row.update({column: None if withheld else scores.get(task["task_id"], {}).get(column)
                    for column in score_columns})
        row["scores_hidden"] = int(withheld)
        rows.append(row)
    return [*TASK_COLUMNS, *score_columns, "scores_hidden"], rows


def export_tasks(db, problem_name: str, out: Path | None, fmt: str, private: bool = False) -> dict:
    """Write every task of a problem to out (None: return the text) as csv or json (the
    JSON contract's `task-export`, docs/JSON.md); test scores only when `private`."""
    from datarun.contract import contract, moment

    columns, rows = task_rows(db, problem_name, private)
    if fmt == "csv":
        for row in rows:
            for key in ("started_at", "finished_at"):
                row[key] = moment(row[key])
        import io

        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(csv_row(row) for row in rows)  # no cell runs as a spreadsheet formula
        text = buffer.getvalue()
    else:
        text = json.dumps(contract("task-export", {"problem": problem_name, "private": private,
                                                   "columns": columns, "tasks": rows}),
                          indent=2, allow_nan=False) + "\n"
    summary = {"problem": problem_name, "tasks": len(rows), "format": fmt, "text": None,
               "file": None}
    if out is None:
        summary["text"] = text
        return summary
    out = Path(out).expanduser()
    if out.is_dir():
        raise UsageError(f"{out} is a folder: give a file name to write the {fmt.upper()} to")
    try:
        _write_text(out, text)
    except OSError as error:
        raise UsageError(f"cannot write {out}: {error.strerror or error}") from None
    summary["file"] = str(out)
    return summary
