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

A RAMP problem is blended by `datarun.remote.scoring.rampblend`, with its kit's own Predictions,
combine and first score type, as ramp-blend does; a kit whose predictions cannot be
combined gets, in that scope, no contributivity and a one-line note.
"""

import json
import math
import time
from typing import TYPE_CHECKING

import numpy as np

from datarun.board.scopes import fully_trained, hidden_events, scopes_of
from datarun.errors import HostError
from datarun.problems.registered import get_problem, list_folds, load_fold, load_labels
from datarun.store.blobs import BlobStore

if TYPE_CHECKING:
    from datarun.remote.scoring.blending import Blend


class _Inputs:
    """One problem's labels, folds, score and stored predictions, read once per update."""

    def __init__(self, workspace, db, problem_name: str):
        from datarun.remote.scoring import native

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
            self.ys = native.fold_truths(self.classes, self.y_train, self.valid_idx)
            self.score, self.lower_is_better = native.blend_score(self.name, self.classes)
        self.tasks: dict[tuple[int, int], tuple] = {}
        self.known: set[int] = set()  # submissions whose task rows are in self.tasks
        self.checked: set[int] = set()  # submissions whose predictions passed the check
        self.valid: dict[int, list[np.ndarray] | None] = {}
        self.train: dict[int, list[np.ndarray]] = {}  # RAMP: every training row, per fold
        self.tests: dict[str, np.ndarray | None] = {}  # test predictions by digest (immutable)

    def learn(self, db, sids: list[int]) -> None:
        """Read the prediction digests of these submissions' tasks (once each)."""
        new = [sid for sid in sids if sid not in self.known]
        for start in range(0, len(new), 500):
            chunk = new[start:start + 500]
            marks = ",".join("?" * len(chunk))
            for sid, fold, train, test in db.execute(
                    "SELECT t.submission, t.fold, t.pred_train, t.pred_test FROM tasks t "
                    f"WHERE t.submission IN ({marks})", chunk):
                self.tasks[(sid, fold)] = (train, test)
        self.known.update(new)

    def forget_valid(self) -> None:
        """Drop the validation predictions read for this update: a cached blend keeps what
        its score reads of them, so the next update needs only its newcomers'."""
        self.valid.clear()

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
        digest = self.tasks.get((sid, fold), (None, None))[1]
        if digest is not None and digest in self.tests:
            return self.tests[digest]
        array = self._load(digest, self.shapes[1])
        if digest is not None:
            if len(self.tests) >= TEST_CACHE:
                self.tests.pop(next(iter(self.tests)))
            self.tests[digest] = array
        return array

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
            from datarun.remote.scoring.rampblend import blended_test

            every = [self._tests([self.test_predictions(sid, fold) for sid in candidates])
                     for fold in self.folds]
            usable = [tests for tests in every if tests is not None]
            if len(usable) < len(every):
                return None
            return blended_test(self.ramp, members, usable)
        fold_tests = []
        for fold, fold_members in zip(self.folds, members, strict=True):
            if not fold_members:
                continue
            tests = self._tests([self.test_predictions(candidates[m], fold) for m in fold_members])
            if tests is None:
                return None
            fold_tests.append(tests)
        return combined_test(self.problem["kind"], self.problem["classes"], self.name, self.y_test, fold_tests)


def _blend(inputs: _Inputs, candidates: list[int], previous_row: dict | None):
    from datarun.remote.scoring import native

    previous = None
    if previous_row and previous_row["state"]:
        stored = json.loads(previous_row["submissions"])
        if stored and candidates[: len(stored)] == stored:
            previous = json.loads(previous_row["state"])
    if inputs.ramp is not None:
        from datarun.remote.scoring.rampblend import RampBlend, blend

        trains = [[inputs.train[sid][f] for sid in candidates] for f in range(len(inputs.folds))]
        folds, state = blend(inputs.ramp, inputs.valid_idx, trains, previous)
        return RampBlend(folds, state, len(candidates))
    valid = [v for v in map(inputs.valid_predictions, candidates) if v is not None]
    return native.blend(inputs.problem["kind"], inputs.score, inputs.lower_is_better, inputs.ys, valid, previous)


class BlendCache:
    """What a long-lived dispatcher keeps between updates, so that a newly scored submission
    costs its own predictions, not everyone's: per problem, the labels and folds, and per
    scope, the blend of the candidates last stored (`Blend.add` extends it in place).

    A cached blend is used only when the stored row says the scope was last blended over
    exactly its candidates; anything else (another process wrote the row, a submission
    left the scope) is blended from the stored state as without a cache. Predictions are
    content-addressed, so what is cached never goes stale.
    """

    def __init__(self) -> None:
        self.inputs: dict[str, _Inputs] = {}
        self.blends: dict[tuple[str, str], tuple[tuple[int, ...], Blend]] = {}

    def problem_inputs(self, workspace, db, problem_name: str) -> "_Inputs":
        if problem_name not in self.inputs:
            self.inputs[problem_name] = _Inputs(workspace, db, problem_name)
        return self.inputs[problem_name]


TEST_CACHE = 4096  # test prediction arrays kept by a BlendCache (the members' of each fold)


def _cached_blend(cache: BlendCache | None, problem_name: str, scope: str, candidates: list[int],
                  stored_row: dict | None, inputs: "_Inputs"):
    """The scope's blend extended to `candidates` from the cache, or None."""
    if cache is None or stored_row is None:
        return None
    entry = cache.blends.get((problem_name, scope))
    if entry is None:
        return None
    old, blend = entry
    if list(old) != json.loads(stored_row["submissions"]) or tuple(candidates[: len(old)]) != old:
        return None
    newcomers = [inputs.valid_predictions(sid) for sid in candidates[len(old):]]
    if any(preds is None for preds in newcomers):
        return None  # not a candidate after all: blend as without a cache
    for preds in newcomers:
        assert preds is not None
        blend.add(preds)
    return blend


def _usable(inputs: "_Inputs", ids: list[int]):
    """Whether a submission's stored predictions can be blended: read and checked once per
    `_Inputs` (a fully trained submission's predictions never change)."""
    rejected = set()
    for sid in ids:
        if sid in inputs.checked and inputs.ramp is None:
            continue
        if inputs.valid_predictions(sid) is None:
            rejected.add(sid)
        else:
            inputs.checked.add(sid)
    return lambda sid: sid not in rejected


def _remember(cache: BlendCache, problem_name: str, scope: str, key: tuple[int, ...], blend) -> None:
    """Keep the scope's blend. Scopes of the same submissions share one blend object; one
    that was extended in place no longer stands for a scope of other submissions, whose
    entry is dropped (that scope resumes from its stored state next time)."""
    if blend is None:
        cache.blends.pop((problem_name, scope), None)
        return
    cache.blends[(problem_name, scope)] = (key, blend)
    for other, (other_key, other_blend) in list(cache.blends.items()):
        if other_blend is blend and other_key != key:
            del cache.blends[other]


def update_contributivity(workspace, db, problem_name: str, now: float | None = None,
                          cache: BlendCache | None = None) -> dict | None:
    """Recompute the problem's scopes whose submissions changed; None if every one is current.

    With a `cache` (a dispatcher's), a scope last blended by the same cache is extended by
    its new submissions alone; the figures are the same as without it. A RAMP kit's blends
    (`datarun.remote.scoring.rampblend`) are computed as without a cache."""
    from datarun.remote.scoring.native import mean_defined

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
    if problem.get("sensitive"):  # its predictions are on its owner's host: blended there
        return _update_sensitive(workspace, db, problem, stale, obsolete, now)
    results: dict[tuple[int, ...], tuple] = {}  # scopes of the same submissions blend once
    writes = []
    score_name = None
    if stale:
        inputs = cache.problem_inputs(workspace, db, problem_name) if cache else _Inputs(workspace, db, problem_name)
        if inputs.ramp is not None and cache is not None:
            cache, inputs = None, _Inputs(workspace, db, problem_name)
        inputs.learn(db, sorted({sid for ids in stale.values() for sid in ids}))
        score_name = inputs.name
        for scope, ids in stale.items():
            usable = _usable(inputs, ids)
            candidates = [sid for sid in ids if usable(sid)]
            key = tuple(candidates)
            if key not in results:
                blend, test, note = None, None, None
                if candidates:
                    try:
                        blend = _cached_blend(cache, problem_name, scope, candidates, stored.get(scope), inputs)
                        if blend is None:
                            blend = _blend(inputs, candidates, stored.get(scope))
                        test = inputs.combined_test(candidates, blend.members)
                    except Exception as error:
                        if inputs.ramp is None:
                            raise
                        # The kit's own combine or score raises, as it would in ramp-blend.
                        from datarun.board.scorer import combine_note

                        blend, test, note = None, None, combine_note(error, "no contributivity")
                results[key] = (blend, test, note)
            writes.append((scope, ids, candidates, *results[key]))
            if cache is not None:
                _remember(cache, problem_name, scope, key, results[key][0])
        if cache is not None:
            inputs.forget_valid()
    with db.conn:
        db.conn.execute("BEGIN IMMEDIATE")
        _drop_scopes(db, problem_name, obsolete)
        for scope, ids, candidates, blend, test, note in writes:
            blended = blend is not None and blend.n_blended_folds > 0
            shares = blend.contributivity if blended else ()
            _write_shares(db, problem_name, scope, {sid: float(shares[i]) for i, sid in enumerate(candidates)}
                          if blended else {})
            _write_blend(db, problem_name, scope, [
                json.dumps(ids), json.dumps(candidates),
                json.dumps(blend.state()) if blend is not None else None, score_name,
                mean_defined(blend.combined_scores) if blended else None,
                mean_defined(blend.best_single_scores) if blended else None,
                test if blended else None, now, note])
    return {"problem": problem_name, "scopes": sorted(stale), "removed": sorted(obsolete)}


def _drop_scopes(db, problem_name: str, scopes: list[str]) -> None:
    for scope in scopes:
        db.execute("DELETE FROM contributivity WHERE problem = ? AND scope = ?", [problem_name, scope])
        db.execute("DELETE FROM blends WHERE problem = ? AND scope = ?", [problem_name, scope])


def _write_shares(db, problem_name: str, scope: str, shares: dict[int, float]) -> None:
    """Make the scope's contributivity rows these, writing only the rows that differ.

    A newcomer changes the shares of the ensembles' members (at most 80 a fold) and its
    own; rewriting every submission's row made the update grow with the number of
    submissions (2,000 rows a scope at 2,000 submissions)."""
    stored = dict(db.execute("SELECT submission, value FROM contributivity WHERE problem = ? AND scope = ?",
                             [problem_name, scope]).fetchall())
    gone = [(problem_name, scope, sid) for sid in stored if sid not in shares]
    if gone:
        db.conn.executemany("DELETE FROM contributivity WHERE problem = ? AND scope = ? AND submission = ?", gone)
    changed = [(problem_name, scope, sid, value) for sid, value in shares.items() if stored.get(sid) != value]
    if changed:
        db.conn.executemany(
            "INSERT OR REPLACE INTO contributivity (problem, scope, submission, value) VALUES (?, ?, ?, ?)",
            changed)


def _write_blend(db, problem_name: str, scope: str, values: list) -> None:
    """The scope's blends row: considered, submissions, state, score, combined_valid,
    best_single_valid, combined_test, updated_at, note."""
    db.execute(
        "INSERT OR REPLACE INTO blends (problem, scope, considered, submissions, state, score, "
        "combined_valid, best_single_valid, combined_test, updated_at, note) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", [problem_name, scope, *values])


def _number_or_none(value, what: str):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise HostError(f"the host's blend gave {what} {str(value)[:40]!r}, not a number")
    return float(value)


def _host_blends(workspace, problem: dict, stale: dict) -> dict:
    """Each stale scope's blend, computed by a host holding the sensitive problem's predictions
    (`datarun.remote.sensitive.blend`, with the shared scoring code) and checked to be numbers
    about these scopes."""
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
            "candidates": [int(c) for c in candidates], "blended": blended, "contributivity": shares,
            **{field: _number_or_none(entry.get(field), field)
               for field in ("combined_valid", "best_single_valid", "combined_test")}}
    return entries


def _update_sensitive(workspace, db, problem: dict, stale: dict, obsolete: list, now: float) -> dict:
    """`update_contributivity` for a sensitive problem: its stale scopes blended by its host."""
    name = problem["name"]
    entries = _host_blends(workspace, problem, stale) if stale else {}
    with db.conn:
        db.conn.execute("BEGIN IMMEDIATE")
        _drop_scopes(db, name, obsolete)
        for scope, ids in stale.items():
            entry = entries[scope]
            candidates, blended = entry["candidates"], entry["blended"]
            _write_shares(db, name, scope, {sid: entry["contributivity"][i] for i, sid in enumerate(candidates)}
                          if blended else {})
            _write_blend(db, name, scope, [
                json.dumps(ids), json.dumps(candidates), None, problem["score_names"][0],
                entry["combined_valid"] if blended else None, entry["best_single_valid"] if blended else None,
                entry["combined_test"] if blended else None, now, None])
    return {"problem": name, "scopes": sorted(stale), "removed": sorted(obsolete)}
