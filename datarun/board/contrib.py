"""Keeping a problem's contributivity and blended score up to date.

After each newly scored submission the dispatcher calls `update_contributivity`: it
blends every fully scored submission of the problem (`datarun.scoring.blending`, ramp-blend's
definition) and stores each one's share and the ensemble's scores. The blend's state is
kept, so when submissions were only appended since the last blend, only the new ones are
added to it rather than the whole greedy selection being run again.

A RAMP problem is blended on its kit's first score type and combined with its kit's
`Predictions.combine`, as ramp-blend does; the blender then scores each candidate with
the kit's own score function.
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


def ramp_blend_score(scorer, classes):
    """(score(y, p), lower_is_better) with a RAMP kit's first score type, as ramp-blend scores."""
    score_type, P = scorer.score_types[0], scorer.Predictions
    truths: dict[int, tuple] = {}  # per fold's y: built once, not per candidate

    def score(y, p):
        if id(y) not in truths:
            truths[id(y)] = (y, P(y_true=classes[y] if classes is not None else y))
        return float(score_type.score_function(truths[id(y)][1], P(y_pred=p)))

    return score, bool(score_type.is_lower_the_better)


def ramp_combined_test(scorer, fold_tests: list[list[np.ndarray]]) -> float | None:
    """ramp-blend's combined test score: each fold's members combined, the folds bagged."""
    from rampwf.utils.combine import get_score_cv_bags

    P = scorer.Predictions
    combined = [P.combine([P(y_pred=t) for t in tests]) for tests in fold_tests]
    _, scores = get_score_cv_bags(scorer.score_types[0], combined, P(y_true=scorer.y_test))
    value = float(scores[-1])
    return None if np.isnan(value) else value


def update_contributivity(workspace, db, problem_name: str) -> dict | None:
    from datarun.scoring.blending import contributivity
    from datarun.scoring.blendscores import BUILTIN
    from datarun.scoring.scores import SCORE_TYPES

    problem = get_problem(db, problem_name)
    submissions = scored_submissions(db, problem_name)
    if not submissions:
        return None
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
    ramp = None
    if problem["workflow"] == "ramp":
        from datarun.board.scorer import RampScorer

        ramp = RampScorer(workspace, db, problem)
        score, lower_is_better = ramp_blend_score(ramp, classes)
    else:
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
        fold_tests.append(tests if ramp else np.mean(tests, axis=0))
    combined_test = None
    if len(y_test) and ramp:
        combined_test = ramp_combined_test(ramp, fold_tests)
    elif len(y_test):
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
