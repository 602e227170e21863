"""Keeping a problem's contributivity and blended score up to date.

After each newly scored submission the dispatcher calls `update_contributivity`: it
blends every fully scored submission of the problem (`datarun.scoring.blending`, ramp-blend's
definition) and stores each one's share and the ensemble's scores. The blend's state is
kept, so when submissions were only appended since the last blend, only the new ones are
added to it rather than the whole greedy selection being run again.

A RAMP problem is blended by `datarun.board.rampblend`, with its kit's own Predictions,
combine and first score type, as ramp-blend does.
"""

import json
import time

import numpy as np

from datarun.problems.registry import get_problem, list_folds, load_fold, load_labels
from datarun.store.blobs import BlobStore


def scored_submissions(db, problem: str) -> list[int]:
    return [row[0] for row in db.execute(
        "SELECT s.id FROM submissions s JOIN tasks t ON t.submission = s.id WHERE s.problem = ? "
        "GROUP BY s.id HAVING sum(t.state = 'done') = count(t.id) ORDER BY s.id", [problem])]


def class_indices(classes: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Each label's column in the predictions (classes in the problem's order, sorted or not)."""
    position = {label: i for i, label in enumerate(classes.tolist())}
    return np.array([position[label] for label in y.tolist()], dtype=np.int64)


def update_contributivity(workspace, db, problem_name: str) -> dict | None:
    from datarun.scoring.blending import contributivity
    from datarun.scoring.blendscores import BUILTIN
    from datarun.scoring.scores import SCORE_TYPES

    problem = get_problem(db, problem_name)
    submissions = scored_submissions(db, problem_name)
    if not submissions:
        return None
    if problem["workflow"] == "ramp":
        from datarun.board.rampblend import update_ramp_contributivity

        return update_ramp_contributivity(workspace, db, problem, submissions)
    store = BlobStore(workspace.blobs_dir)
    classes = np.array(problem["classes"]) if problem["classes"] else None
    y_train, y_test = load_labels(workspace, problem)
    folds = [row["fold"] for row in list_folds(db, problem_name)]
    preds = {(sid, fold): (train, test) for sid, fold, train, test in db.execute(
        "SELECT t.submission, t.fold, t.pred_train, t.pred_test FROM tasks t "
        "JOIN submissions s ON s.id = t.submission WHERE s.problem = ?", [problem_name])}
    ys, valid_preds = [], []
    for fold in folds:
        _, valid_idx = load_fold(workspace, db, problem_name, fold)
        y = y_train[valid_idx]
        ys.append(class_indices(classes, y) if classes is not None else y.astype(np.float64))
        valid_preds.append(np.stack([store.get_array(preds[sid, fold][0])[valid_idx] for sid in submissions]))
    name = problem["score_names"][0]
    score_type = SCORE_TYPES[name]
    lower_is_better = score_type.lower_is_better
    if name in BUILTIN:
        score = name
    else:  # a datarun score the blender has no fast path for: hand it the exact function
        def score(y, p, _score=score_type):
            return _score(classes[y] if classes is not None else y, p, classes)
    row = db.execute("SELECT submissions, state FROM blends WHERE problem = ?", [problem_name]).fetchone()
    previous = None
    if row and submissions[: len(json.loads(row[0]))] == json.loads(row[0]):
        previous = json.loads(row[1])
    blend = contributivity(problem["kind"], score, ys, valid_preds,
                           lower_is_better=lower_is_better, previous=previous)
    # The blended test score: each fold's ensemble applied to the test set, then bagged.
    position = {sid: i for i, sid in enumerate(submissions)}
    fold_tests = []
    for fold, members in zip(folds, blend.members, strict=True):
        tests = [store.get_array(preds[submissions[m], fold][1]) for m in members]
        fold_tests.append(np.mean(tests, axis=0))
    combined_test = None
    if len(y_test):
        combined_test = score_type(y_test, np.mean(fold_tests, axis=0), classes)
    shares = blend.contributivity
    with db.conn:
        db.conn.execute("BEGIN IMMEDIATE")
        db.execute("DELETE FROM contributivity WHERE problem = ?", [problem_name])
        db.conn.executemany(
            "INSERT INTO contributivity (problem, submission, value) VALUES (?, ?, ?)",
            [(problem_name, sid, float(shares[position[sid]])) for sid in submissions])
        db.execute(
            "INSERT OR REPLACE INTO blends (problem, submissions, state, score, combined_valid, "
            "best_single_valid, combined_test, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [problem_name, json.dumps(submissions), json.dumps(blend.state()), name,
             float(np.mean(blend.combined_scores)), float(np.mean(blend.best_single_scores)),
             combined_test, time.time()])
    return {"problem": problem_name, "submissions": len(submissions),
            "combined_valid": float(np.mean(blend.combined_scores)), "combined_test": combined_test}
