"""Keeping contributivity and blended scores up to date, for every board that shows them.

A board's figures come from the submissions it shows, and from those only. So a blend
(`datarun.remote.scoring.blending`, ramp-blend's definition) is kept per scope
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
(`datarun.remote.scoring.predictions`; predictions stored before that check existed may) is
left out of the blend; the others are blended as usual. Nothing here raises on what is
stored: a score that cannot be computed is recorded as undefined.

A RAMP problem is blended by `datarun.board.rampblend`, with its kit's own Predictions,
combine and first score type, as ramp-blend does; a kit whose predictions cannot be
combined gets, in that scope, no contributivity and a one-line note.
"""

import json
import math
import time

import numpy as np

from datarun.board.scopes import fully_trained, hidden_events, scopes_of
from datarun.errors import HostError
from datarun.problems.registry import get_problem, list_folds, load_fold, load_labels
from datarun.remote.scoring.native import blend_score, fold_truths, mean_defined
from datarun.store.blobs import BlobStore


class _Inputs:
    """One problem's labels, folds, score and stored predictions, read once per update."""

    def __init__(self, workspace, db, problem_name: str):
        self.db = db
        self.problem = problem = get_problem(db, problem_name)
        self.store = BlobStore(workspace.blobs_dir)
        self.classes = np.array(problem["classes"]) if problem["classes"] else None
        self.folds = [row["fold"] for row in list_folds(db, problem_name)]
        self.valid_idx = [load_fold(workspace, db, problem_name, f)[1] for f in self.folds]
        self.name = problem["score_names"][0]
        self.ramp = None
        if problem["workflow"] == "ramp":
            from datarun.board.scorer import RampScorer

            self.ramp = RampScorer(workspace, db, problem)
            self.shapes = self.ramp.prediction_shapes()
            self.n_test = self.shapes[1][0]
        else:
            self.y_train, self.y_test = load_labels(workspace, problem)
            self.n_test = len(self.y_test)
            extra = (len(self.classes),) if self.classes is not None else ()
            self.shapes = ((len(self.y_train), *extra), (len(self.y_test), *extra))
            self.ys = fold_truths(self.classes, self.y_train, self.valid_idx)
            self.score, self.lower_is_better = blend_score(self.name, self.classes)
        self.tasks = {(sid, fold): (train, test) for sid, fold, train, test in db.execute(
            "SELECT t.submission, t.fold, t.pred_train, t.pred_test FROM tasks t "
            "JOIN submissions s ON s.id = t.submission WHERE s.problem = ?", [problem_name])}
        self.valid: dict[int, list[np.ndarray] | None] = {}
        self.train: dict[int, list[np.ndarray]] = {}  # RAMP: every training row, per fold

    def _load(self, digest: str | None, shape: tuple) -> np.ndarray | None:
        """A stored prediction array if it is one this problem can use, else None."""
        from datarun.remote.scoring.predictions import prediction_fault

        if digest is None:
            return None
        try:
            array = np.asarray(self.store.get_array(digest))
            if self.ramp is None:  # a RAMP kit scores its predictions in their own dtype
                array = array.astype(np.float64, copy=False)
        except Exception:  # missing, damaged or not numbers: not usable
            return None
        if array.shape != shape or array.dtype.kind not in "biuf":
            return None
        probabilities = self.ramp is None and self.classes is not None
        return None if prediction_fault(array, probabilities) else array

    def valid_predictions(self, sid: int) -> list[np.ndarray] | None:
        """A submission's predictions on each fold's validation rows, or None if unusable."""
        if sid not in self.valid:
            trains = []
            for fold in self.folds:
                train = self._load(self.tasks.get((sid, fold), (None, None))[0], self.shapes[0])
                if train is None:
                    break
                trains.append(train)
            if len(trains) < len(self.folds):
                self.valid[sid] = None
            else:
                self.valid[sid] = [train[valid_idx] for train, valid_idx
                                   in zip(trains, self.valid_idx, strict=True)]
                if self.ramp is not None:
                    self.train[sid] = trains
        return self.valid[sid]

    def test_predictions(self, sid: int, fold: int) -> np.ndarray | None:
        return self._load(self.tasks.get((sid, fold), (None, None))[1], self.shapes[1])

    @staticmethod
    def _tests(arrays: list[np.ndarray | None]) -> list[np.ndarray] | None:
        """The arrays if every one is usable, else None."""
        usable = [a for a in arrays if a is not None]
        return usable if len(usable) == len(arrays) else None

    def combined_test(self, candidates: list[int], members: list[list[int]]) -> float | None:
        """The blended test score: each fold's ensemble on the test rows, the folds bagged."""
        from datarun.remote.scoring.native import combined_test

        if not self.n_test:
            return None
        if self.ramp is not None:  # ramp-blend combines each fold's members by their indices
            from datarun.board.rampblend import combined_test_score

            every = [self._tests([self.test_predictions(sid, fold) for sid in candidates])
                     for fold in self.folds]
            usable = [tests for tests in every if tests is not None]
            if len(usable) < len(every):
                return None
            blended = [i for i, fold_members in enumerate(members) if fold_members]
            if not blended:
                return None
            return combined_test_score(self.ramp, [members[i] for i in blended],
                                       [usable[i] for i in blended])
        fold_tests = []
        for fold, fold_members in zip(self.folds, members, strict=True):
            if not fold_members:
                continue
            tests = self._tests([self.test_predictions(candidates[m], fold) for m in fold_members])
            if tests is None:
                return None
            fold_tests.append(tests)
        if not fold_tests:
            return None
        return combined_test(self.problem["kind"], self.problem["classes"], self.name, self.y_test, fold_tests)


class _RampBlend:
    """`datarun.board.rampblend`'s per-fold ensembles, read as a `scoring.blending` blend."""

    def __init__(self, folds: list, state: dict, n: int):
        self.members = [fold.members for fold in folds]  # [] where no one can be scored
        blended = [fold for fold in folds if fold.members]
        self.contributivity = np.zeros(n)
        for fold in blended:  # shares averaged over the folds that have an ensemble
            np.add.at(self.contributivity, fold.members, 1.0 / len(fold.members) / len(blended))
        self.n_blended_folds = len(blended)
        self.combined_scores = [fold.scores[-1] for fold in blended]
        self.best_single_scores = [fold.single for fold in blended]
        self._state = state

    def state(self) -> dict:
        return self._state


def _blend(inputs: _Inputs, candidates: list[int], previous_row: dict | None):
    from datarun.remote.scoring.native import blend

    previous = None
    if previous_row and previous_row["state"]:
        stored = json.loads(previous_row["submissions"])
        if stored and candidates[: len(stored)] == stored:
            previous = json.loads(previous_row["state"])
    if inputs.ramp is not None:
        from datarun.board.rampblend import blend as ramp_blend

        trains = [[inputs.train[sid][f] for sid in candidates] for f in range(len(inputs.folds))]
        folds, state = ramp_blend(inputs.ramp, inputs.valid_idx, trains, previous)
        return _RampBlend(folds, state, len(candidates))
    valid = [inputs.valid_predictions(sid) for sid in candidates]
    return blend(inputs.problem["kind"], inputs.score, inputs.lower_is_better, inputs.ys,
                 [v for v in valid if v is not None], previous=previous)


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
    problem = get_problem(db, problem_name)
    if problem.get("sensitive"):
        entries = _host_blends(workspace, problem, stale) if stale else {}
    else:
        entries = _local_blends(workspace, db, problem_name, stale, stored)
    name = problem["score_names"][0]
    with db.conn:
        db.conn.execute("BEGIN IMMEDIATE")
        for scope in obsolete + list(stale):
            db.execute("DELETE FROM contributivity WHERE problem = ? AND scope = ?", [problem_name, scope])
            db.execute("DELETE FROM blends WHERE problem = ? AND scope = ?", [problem_name, scope])
        for scope, ids in stale.items():
            entry = entries[scope]
            candidates, blended = entry["candidates"], entry["blended"]
            if blended:
                shares = entry["contributivity"]
                db.conn.executemany(
                    "INSERT INTO contributivity (problem, scope, submission, value) VALUES (?, ?, ?, ?)",
                    [(problem_name, scope, sid, float(shares[i])) for i, sid in enumerate(candidates)])
            db.execute(
                "INSERT INTO blends (problem, scope, considered, submissions, state, score, "
                "combined_valid, best_single_valid, combined_test, updated_at, note) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [problem_name, scope, json.dumps(ids), json.dumps(candidates),
                 json.dumps(entry["state"]) if entry.get("state") is not None else None, name,
                 entry.get("combined_valid") if blended else None,
                 entry.get("best_single_valid") if blended else None,
                 entry.get("combined_test") if blended else None, now, entry.get("note")])
    return {"problem": problem_name, "scopes": sorted(stale), "removed": sorted(obsolete)}


def _local_blends(workspace, db, problem_name: str, stale: dict, stored: dict) -> dict:
    """Each stale scope's blend, from the predictions stored here (an open problem)."""
    if not stale:
        return {}
    inputs = _Inputs(workspace, db, problem_name)
    results: dict[tuple[int, ...], dict] = {}  # scopes of the same submissions blend once
    entries = {}
    for scope, ids in stale.items():
        candidates = [sid for sid in ids if inputs.valid_predictions(sid) is not None]
        key = tuple(candidates)
        if key not in results:
            entry: dict = {"candidates": candidates, "blended": False, "state": None, "note": None}
            if candidates:
                try:
                    blend = _blend(inputs, candidates, stored.get(scope))
                    test = inputs.combined_test(candidates, blend.members)
                except Exception as error:
                    if inputs.ramp is None:
                        raise
                    # The kit's own combine or score raises, as it would in ramp-blend.
                    from datarun.board.scorer import combine_note

                    entry["note"] = combine_note(error, "no contributivity")
                else:
                    entry.update(
                        blended=blend.n_blended_folds > 0, state=blend.state(),
                        contributivity=[float(v) for v in blend.contributivity],
                        combined_valid=mean_defined(blend.combined_scores),
                        best_single_valid=mean_defined(blend.best_single_scores), combined_test=test)
            results[key] = entry
        entries[scope] = results[key]
    return entries


def _number_or_none(value, what: str):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise HostError(f"the host's blend gave {what} {str(value)[:40]!r}, not a number")
    return float(value)


def _host_blends(workspace, problem: dict, stale: dict) -> dict:
    """Each stale scope's blend, computed by a host holding the sensitive problem's predictions
    (with the functions `_local_blends` uses) and checked to be numbers about these scopes."""
    from datarun.board.sensitive import ask

    answer = ask(workspace, problem, {"op": "blend", "scopes": stale})
    scopes = answer.get("scopes") if isinstance(answer, dict) else None
    if not isinstance(scopes, dict) or set(scopes) != set(stale):
        raise HostError(f"problem {problem['name']}: the host's blend does not answer for the scopes asked")
    entries = {}
    for scope, ids in stale.items():
        entry = scopes[scope] if isinstance(scopes[scope], dict) else {}
        candidates = entry.get("candidates")
        if not isinstance(candidates, list) or not set(candidates) <= set(ids):
            raise HostError(f"problem {problem['name']}: the host's blend of {scope} names other submissions")
        blended = bool(entry.get("blended"))
        shares = [_number_or_none(v, "a share") for v in entry.get("contributivity") or []] if blended else []
        if blended and (len(shares) != len(candidates) or any(v is None for v in shares)):
            raise HostError(f"problem {problem['name']}: the host's blend of {scope} has no share per submission")
        entries[scope] = {
            "candidates": [int(c) for c in candidates], "blended": blended, "state": None, "note": None,
            "contributivity": shares,
            **{field: _number_or_none(entry.get(field), field)
               for field in ("combined_valid", "best_single_valid", "combined_test")}}
    return entries
