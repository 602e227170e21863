"""Keeping contributivity and blended scores up to date, for every board that shows them.

A board's figures come from the submissions it shows, and from those only. So a blend
(`datarun.scoring.blending`, ramp-blend's definition) is kept per scope
(`datarun.board.scopes`: the whole problem, each event, and the public problem-wide view
while some event's scores are withheld).

Each stored scope records the submissions it considered. The dispatcher calls
`update_contributivity` after newly scored submissions and at the end of every pass; it
recomputes only the scopes whose set of submissions changed (incrementally when
submissions were only appended), so a pass that changed nothing costs a few queries. A
board whose scope is not current (an event's scores just became public and no dispatcher
has run since) shows no contributivity rather than figures of another set.

Stored predictions are data, never trusted: a submission whose validation predictions
cannot be read, have the wrong shape or fail the check made where predictions enter
(`datarun.scoring.predictions`; predictions stored before that check existed may) is
left out of the blend; the others are blended as usual. Nothing here raises on what is
stored: a score that cannot be computed is recorded as undefined.

A RAMP problem is blended on its kit's first score type, as ramp-blend does; the blender
scores each candidate with the kit's own score function.
"""

import json
import math
import time

import numpy as np

from datarun.board.scopes import fully_trained, hidden_events, scopes_of
from datarun.problems.registry import get_problem, list_folds, load_fold, load_labels
from datarun.store.blobs import BlobStore


def class_indices(classes: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Each label's column in the predictions (classes in the problem's order, sorted or not)."""
    position = {label: i for i, label in enumerate(classes.tolist())}
    return np.array([position[label] for label in y.tolist()], dtype=np.int64)


def ramp_blend_score(scorer, classes):
    """(score(y, p), lower_is_better) with a RAMP kit's first score type, as ramp-blend scores.

    A score the kit's code cannot compute is undefined (NaN): that candidate is not chosen."""
    score_type, P = scorer.score_types[0], scorer.Predictions
    truths: dict[int, tuple] = {}  # per fold's y: built once, not per candidate

    def score(y, p):
        if id(y) not in truths:
            truths[id(y)] = (y, P(y_true=classes[y] if classes is not None else y))
        try:
            return float(score_type.score_function(truths[id(y)][1], P(y_pred=p)))
        except Exception:
            return math.nan

    return score, bool(score_type.is_lower_the_better)


def ramp_combined_test(scorer, fold_tests: list[list[np.ndarray]]) -> float | None:
    """ramp-blend's combined test score: each fold's members combined, the folds bagged."""
    from rampwf.utils.combine import get_score_cv_bags

    P = scorer.Predictions
    try:
        combined = [P.combine([P(y_pred=t) for t in tests]) for tests in fold_tests]
        _, scores = get_score_cv_bags(scorer.score_types[0], combined, P(y_true=scorer.y_test))
        value = float(scores[-1])
    except Exception:  # the kit's code cannot score it: undefined
        return None
    return None if math.isnan(value) else value


def _mean_defined(values: list[float]) -> float | None:
    defined = [v for v in values if not math.isnan(v)]
    return float(np.mean(defined)) if defined else None


class _Inputs:
    """One problem's labels, folds, score and stored predictions, read once per update."""

    def __init__(self, workspace, db, problem_name: str):
        from datarun.scoring.blendscores import BUILTIN
        from datarun.scoring.scores import SCORE_TYPES

        self.db = db
        self.problem = problem = get_problem(db, problem_name)
        self.store = BlobStore(workspace.blobs_dir)
        self.classes = np.array(problem["classes"]) if problem["classes"] else None
        self.y_train, self.y_test = load_labels(workspace, problem)
        self.folds = [row["fold"] for row in list_folds(db, problem_name)]
        self.valid_idx = [load_fold(workspace, db, problem_name, f)[1] for f in self.folds]
        self.ys = [class_indices(self.classes, self.y_train[v]) if self.classes is not None
                   else self.y_train[v].astype(np.float64) for v in self.valid_idx]
        self.name = problem["score_names"][0]
        self.ramp = None
        self.score_type = None
        if problem["workflow"] == "ramp":
            from datarun.board.scorer import RampScorer

            self.ramp = RampScorer(workspace, db, problem)
            self.score, self.lower_is_better = ramp_blend_score(self.ramp, self.classes)
        else:
            self.score_type = score_type = SCORE_TYPES[self.name]
            self.lower_is_better = score_type.lower_is_better
            if self.name in BUILTIN:
                self.score = self.name
            else:  # a datarun score the blender has no fast path for: hand it the exact function
                classes = self.classes

                def score(y, p, _score=score_type):
                    return _score(classes[y] if classes is not None else y, p, classes)

                self.score = score
        self.tasks = {(sid, fold): (train, test) for sid, fold, train, test in db.execute(
            "SELECT t.submission, t.fold, t.pred_train, t.pred_test FROM tasks t "
            "JOIN submissions s ON s.id = t.submission WHERE s.problem = ?", [problem_name])}
        self.valid: dict[int, list[np.ndarray] | None] = {}

    def _load(self, digest: str | None, shape: tuple) -> np.ndarray | None:
        """A stored prediction array if it is one this problem can use, else None."""
        from datarun.scoring.predictions import prediction_fault

        try:
            array = np.asarray(self.store.get_array(digest), dtype=np.float64)
        except Exception:  # missing, damaged or not numbers: not usable
            return None
        if array.shape != shape:
            return None
        probabilities = self.ramp is None and self.classes is not None
        return None if prediction_fault(array, probabilities) else array

    def valid_predictions(self, sid: int) -> list[np.ndarray] | None:
        """A submission's predictions on each fold's validation rows, or None if unusable."""
        if sid not in self.valid:
            extra = (len(self.classes),) if self.classes is not None else ()
            shape = (len(self.y_train), *extra)
            per_fold = []
            for fold, valid_idx in zip(self.folds, self.valid_idx, strict=True):
                train = self._load(self.tasks.get((sid, fold), (None, None))[0], shape)
                if train is None:
                    per_fold = None
                    break
                per_fold.append(train[valid_idx])
            self.valid[sid] = per_fold
        return self.valid[sid]

    def test_predictions(self, sid: int, fold: int) -> np.ndarray | None:
        extra = (len(self.classes),) if self.classes is not None else ()
        return self._load(self.tasks.get((sid, fold), (None, None))[1], (len(self.y_test), *extra))

    def combined_test(self, candidates: list[int], members: list[list[int]]) -> float | None:
        """The blended test score: each fold's ensemble on the test rows, the folds bagged."""
        from datarun.scoring.scores import combine_predictions, score_rows

        if not len(self.y_test):
            return None
        fold_tests = []
        for fold, fold_members in zip(self.folds, members, strict=True):
            if not fold_members:
                continue
            tests = [self.test_predictions(candidates[m], fold) for m in fold_members]
            if any(t is None for t in tests):
                return None
            fold_tests.append(tests)
        if not fold_tests:
            return None
        if self.ramp:
            return ramp_combined_test(self.ramp, fold_tests)
        kind = self.problem["kind"]
        bagged = combine_predictions(kind, [combine_predictions(kind, t) for t in fold_tests])
        return score_rows(kind, self.problem["classes"], [self.name], "test", self.y_test, bagged)[0][2]


def _blend(inputs: _Inputs, candidates: list[int], previous_row: dict | None):
    from datarun.scoring.blending import contributivity

    previous = None
    if previous_row and previous_row["state"]:
        stored = json.loads(previous_row["submissions"])
        if stored and candidates[: len(stored)] == stored:
            previous = json.loads(previous_row["state"])
    preds = [np.stack([inputs.valid_predictions(sid)[f] for sid in candidates])
             for f in range(len(inputs.folds))]
    return contributivity(inputs.problem["kind"], inputs.score, inputs.ys, preds,
                          lower_is_better=inputs.lower_is_better, previous=previous)


def update_contributivity(workspace, db, problem_name: str, now: float | None = None) -> dict | None:
    """Recompute the problem's scopes whose submissions changed; None if every one is current."""
    now = time.time() if now is None else now
    scopes = scopes_of(fully_trained(db, problem_name), set(hidden_events(db, problem_name, now)))
    stored = {row["scope"]: row for row in db.query(
        "SELECT scope, considered, submissions, state FROM blends WHERE problem = ?", [problem_name])}
    stale = {scope: ids for scope, ids in scopes.items()
             if scope not in stored or json.loads(stored[scope]["considered"]) != ids}
    obsolete = [scope for scope in stored if scope not in scopes]
    if not stale and not obsolete:
        return None
    inputs = _Inputs(workspace, db, problem_name) if stale else None
    results: dict[tuple[int, ...], tuple] = {}  # scopes of the same submissions blend once
    writes = []
    for scope, ids in stale.items():
        candidates = [sid for sid in ids if inputs.valid_predictions(sid) is not None]
        key = tuple(candidates)
        if key not in results:
            blend, test = None, None
            if candidates:
                blend = _blend(inputs, candidates, stored.get(scope))
                test = inputs.combined_test(candidates, blend.members)
            results[key] = (blend, test)
        writes.append((scope, ids, candidates, *results[key]))
    with db.conn:
        db.conn.execute("BEGIN IMMEDIATE")
        for scope in obsolete + list(stale):
            db.execute("DELETE FROM contributivity WHERE problem = ? AND scope = ?", [problem_name, scope])
            db.execute("DELETE FROM blends WHERE problem = ? AND scope = ?", [problem_name, scope])
        for scope, ids, candidates, blend, test in writes:
            blended = blend is not None and blend.n_blended_folds > 0
            if blended:
                shares = blend.contributivity
                db.conn.executemany(
                    "INSERT INTO contributivity (problem, scope, submission, value) VALUES (?, ?, ?, ?)",
                    [(problem_name, scope, sid, float(shares[i])) for i, sid in enumerate(candidates)])
            db.execute(
                "INSERT INTO blends (problem, scope, considered, submissions, state, score, "
                "combined_valid, best_single_valid, combined_test, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [problem_name, scope, json.dumps(ids), json.dumps(candidates),
                 json.dumps(blend.state()) if blend is not None else None, inputs.name,
                 _mean_defined(blend.combined_scores) if blended else None,
                 _mean_defined(blend.best_single_scores) if blended else None,
                 test if blended else None, now])
    return {"problem": problem_name, "scopes": sorted(stale), "removed": sorted(obsolete)}
