"""Sensitive problems on the data owner's host: score here, keep the predictions here.

A data set is sensitive when WORKDIR holds `sensitive/<data hash>/`, written by the
owner's `datarun owner prepare` beside the data set itself (`data/<data hash>/`): the
labels (train and test), the folds and the manifest. The host decides, not the task:
whatever a task.json says, a task on that data set is treated as sensitive.

- Its fold's indices are copied into its folder from here when it starts (the organiser
  never had them); the owner's `refuse` flag there stops every new task of the problem,
  and a task the organiser sent unsandboxed (`isolation = "none"`) is refused.
- When its result leaves the host (`result_files`, which `pack` and the local host's fetch
  call; `Layout.result_files` gives nothing of an unsealed one), its predictions are scored here with the organiser's own scoring code
  (`scoring/`, one copy on both sides), moved to `predictions/<workspace>/<submission>/
  <fold>/`, and `result.json` is rewritten as a small object of numbers: the fields of
  SEALED_FIELDS, the scores, an error kind and a bounded error text. Nothing else of the
  task's folder (its output, its predictions) is ever packed.
- Bagged scores and blends (`request`: `bag`, `blend`) are computed here from the kept
  predictions, with the same functions as for an open problem; only numbers come back.
Nothing here is reachable from a task: the sandbox shows a task no part of WORKDIR.
"""

import hashlib
import json
import os
import shutil
import traceback
from pathlib import Path

from .common import HarnessError, Layout, check_key, read_json, write_json

FOLDER = "sensitive"
REFUSE = "refuse"  # the owner's flag: no new task of this problem runs here
NO_ERROR_TEXT = "no-error-text"  # the owner's flag: errors come back as their kind alone
MANIFEST = "manifest.json"
MANIFEST_FORMAT = "datarun-sensitive/1"
MAX_SEALED_BYTES = 16 * 1024  # a sealed result.json is far smaller; the organiser refuses more
MAX_ERROR_TEXT = 200
SEALED_FIELDS = ("key", "nonce", "state", "error_kind", "error", "train_time", "valid_time", "test_time",
                 "wall_time", "cpu_time", "peak_memory", "started_at", "finished_at", "measured_by",
                 "isolation", "environment", "scores", "sealed")
# Errors raised by the submission's own code: their message and traceback may carry data
# (the labels of the fit rows are in the task's hands), so only the exception's class comes
# back, and only when it is one of Python's own (a class the task defined could be named
# after anything).
SUBMISSION_KINDS = ("import_error", "fit_error", "predict_error", "bad_predictions")
PHASE_FIELDS = ("train_time", "valid_time", "test_time")  # reported by the task: rounded


def folder(root, data_hash) -> Path:
    return Path(root) / FOLDER / check_key(str(data_hash), "data hash")


def is_sensitive(root, data_hash) -> bool:
    return isinstance(data_hash, str) and bool(data_hash) and (Path(root) / FOLDER / data_hash).is_dir()


def tree_hash(path: Path) -> str:
    """A prepared data set's hash, as the organiser's blob store names trees (its `.complete`
    mark left out)."""
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file() and p.name != ".complete"):
        with open(file, "rb") as handle:
            inner = hashlib.sha256()
            while chunk := handle.read(1 << 20):
                inner.update(chunk)
        digest.update(f"{file.relative_to(path).as_posix()}\0{inner.hexdigest()}\n".encode())
    return digest.hexdigest()


def folds_hash(folds) -> str:
    """One hash of every fold's indices (as int64 .npy bytes), for the manifest."""
    import io

    import numpy as np

    digest = hashlib.sha256()
    for index, (train, valid) in enumerate(folds):
        parts = []
        for array in (train, valid):
            buffer = io.BytesIO()
            np.save(buffer, np.asarray(array, dtype=np.int64), allow_pickle=False)
            parts.append(hashlib.sha256(buffer.getvalue()).hexdigest())
        digest.update(f"{index} {parts[0]} {parts[1]}\n".encode())
    return digest.hexdigest()


class Store:
    """One sensitive data set's folder: labels, folds, manifest, kept predictions."""

    def __init__(self, root, data_hash: str):
        self.root = Path(root)
        self.path = folder(root, data_hash)
        if not (self.path / MANIFEST).is_file():
            raise HarnessError(f"no sensitive data set {data_hash} on this host")
        self.manifest = read_json(self.path / MANIFEST) or {}
        self.problem = str(self.manifest.get("problem"))
        self._labels = None
        self._ramp = None

    @property
    def is_ramp(self) -> bool:
        return self.manifest.get("workflow") == "ramp"

    def ramp(self):
        """A RAMP kit's Predictions, score types and label objects (`sensitive_ramp.RampTruth`)."""
        from .sensitive_ramp import RampTruth

        if self._ramp is None:
            self._ramp = RampTruth(self.root, self.path.name, self.path)
        return self._ramp

    @classmethod
    def of_problem(cls, root, problem: str) -> "Store":
        for manifest in sorted((Path(root) / FOLDER).glob(f"*/{MANIFEST}")):
            if (read_json(manifest) or {}).get("problem") == problem:
                return cls(root, manifest.parent.name)
        raise HarnessError(f"no sensitive problem {problem!r} in {root}")

    @property
    def refused(self) -> bool:
        return (self.path / REFUSE).exists()

    @property
    def error_text(self) -> bool:
        return not (self.path / NO_ERROR_TEXT).exists()

    def labels(self):
        import numpy as np

        if self._labels is None:
            self._labels = (np.load(self.path / "y_train.npy", allow_pickle=False),
                            np.load(self.path / "y_test.npy", allow_pickle=False))
        return self._labels

    def fold_files(self, fold: int) -> tuple[Path, Path]:
        return self.path / "folds" / f"train_{int(fold)}.npy", self.path / "folds" / f"valid_{int(fold)}.npy"

    def fold(self, fold: int):
        import numpy as np

        train, valid = self.fold_files(fold)
        return np.load(train, allow_pickle=False), np.load(valid, allow_pickle=False)

    @property
    def n_folds(self) -> int:
        return len(self.manifest.get("folds") or [])

    def predictions(self, space: str | None, submission, fold) -> Path:
        return (self.path / "predictions" / check_key(space or "_", "workspace id")
                / check_key(str(int(submission)), "submission") / str(int(fold)))

    def score_task(self, fold: int, pred_train, pred_test) -> list:
        from .scoring.scores import task_scores

        m = self.manifest
        y_train, y_test = self.labels()
        train_idx, valid_idx = self.fold(fold)
        if self.is_ramp:
            from .sensitive_ramp import task_scores as ramp_scores

            return ramp_scores(self.ramp(), train_idx, valid_idx, pred_train, pred_test)
        return task_scores(m["kind"], m["classes"], m["score_names"], y_train, y_test,
                           train_idx, valid_idx, pred_train, pred_test if len(y_test) else None)


# --- the task's start and its result --------------------------------------------------


def place_fold(root, task_folder: Path, task: dict) -> None:
    """Give a sensitive task its fold's indices, unless the owner refuses the problem's tasks."""
    store = Store(root, str(task.get("data")))
    if store.refused:
        raise HarnessError(f"the data owner refuses tasks for problem {store.problem} on this host")
    if task.get("isolation") == "none":  # unsandboxed, a task could read the labels and use the network
        raise HarnessError(f"problem {store.problem} is sensitive: this host runs its tasks sandboxed only "
                           "(remove `isolation = \"none\"` from its hosts.toml entry)")
    for source, name in zip(store.fold_files(int(task.get("fold", -1))), ("train_idx.npy", "valid_idx.npy"),
                            strict=True):
        if not source.is_file():
            raise HarnessError(f"problem {store.problem} has no fold {task.get('fold')} on this host")
        shutil.copyfile(source, task_folder / name)


def _exception_name(error: str | None) -> str:
    import builtins

    last = (error or "").strip().splitlines()[-1:] or [""]
    name = last[0].split(":", 1)[0].strip().rsplit(".", 1)[-1]
    value = getattr(builtins, name, None)
    if isinstance(value, type) and issubclass(value, BaseException):
        return name
    return "an exception of the submission's own class"


def error_text(kind: str | None, error: str | None, allowed: bool = True) -> str | None:
    """What of an error may leave the host: none of the submission's own words."""
    if not kind or not allowed:
        return None
    if kind in SUBMISSION_KINDS:
        return f"{_exception_name(error)} (the message stays on the data owner's host)"
    first = (error or "").strip().splitlines()[:1]
    return first[0][:MAX_ERROR_TEXT] if first else None


def _round(value):
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return round(float(value), 3)


def seal(root, space: str | None, task_folder: Path) -> None:
    """Score a finished sensitive task here, keep its predictions here, and leave in its
    result.json only numbers: the one file that goes back to the organiser."""
    import numpy as np

    result = read_json(task_folder / "result.json")
    if result is None or result.get("sealed"):
        return
    task = read_json(task_folder / "task.json") or {}
    store = Store(root, str(task.get("data")))
    state, kind, error, scores = result.get("state"), result.get("error_kind"), result.get("error"), []
    names = ("y_pred_train.npy", "y_pred_test.npy")
    if state == "done":
        try:
            pred_train, pred_test = (np.load(task_folder / name, allow_pickle=False) for name in names)
            scores = [list(row) for row in store.score_task(int(task["fold"]), pred_train, pred_test)]
            kept = store.predictions(space, task["submission"], task["fold"])
            if not (kept / names[1]).is_file():  # the first complete result of the fold stays
                kept.mkdir(parents=True, exist_ok=True)
                for name in names:
                    shutil.copyfile(task_folder / name, kept / f".{name}")
                for name in names:
                    os.replace(kept / f".{name}", kept / name)
        except Exception:
            (task_folder / "seal-error.log").write_text(traceback.format_exc())
            state, kind, scores = "failed", "harness_error", []
            error = "the data owner's host could not score the predictions (seal-error.log there says why)"
    for name in names:
        (task_folder / name).unlink(missing_ok=True)
    sealed = {field: result.get(field) for field in SEALED_FIELDS}
    sealed.update(state=state, error_kind=kind if state == "failed" else None,
                  error=error_text(kind, error, store.error_text) if state == "failed" else None,
                  scores=scores, sealed=True)
    for field in PHASE_FIELDS:
        sealed[field] = _round(result.get(field))
    write_json(task_folder / "result.json", sealed)


def result_files(layout: Layout, key: str) -> list[Path]:
    """The files of a finished task that go back to the organiser, a sensitive one sealed first."""
    folder = layout.task(key)
    if layout.is_sensitive((read_json(folder / "task.json") or {}).get("data")):
        seal(layout.root, layout.space_id, folder)
    return layout.result_files(key)


# --- bagged scores and blends, asked for by the organiser -----------------------------


def _usable(store: Store, path: Path, rows: int):
    """A kept prediction array, or None if it is missing or not one this problem can use."""
    import numpy as np

    from .scoring.predictions import prediction_fault

    if store.is_ramp:  # a RAMP kit's predictions keep their own dtype
        from .sensitive_ramp import usable

        return usable(store.ramp(), path, rows)
    try:
        array = np.asarray(np.load(path, allow_pickle=False), dtype=np.float64)
    except Exception:
        return None
    classes = store.manifest.get("classes")
    if array.shape != ((rows, len(classes)) if classes else (rows,)):
        return None
    return None if prediction_fault(array, bool(classes)) else array


def bag(store: Store, space: str | None, submissions: dict) -> dict:
    """{"bagged": {submission: [[split, score, value]...]}, "missing": [submissions whose
    predictions are no longer here]}: bagged scores as `scoring.scores.bagged_scores` gives."""
    from .scoring.scores import bagged_scores

    m = store.manifest
    y_train, y_test = store.labels()
    out: dict = {"bagged": {}, "missing": []}
    for sid, folds in submissions.items():
        trains, tests = [], []
        for fold in folds:
            kept = store.predictions(space, sid, fold)
            trains.append(_usable(store, kept / "y_pred_train.npy", len(y_train)))
            tests.append(_usable(store, kept / "y_pred_test.npy", len(y_test)))
        if any(t is None for t in trains + tests):
            out["missing"].append(sid)
            continue
        valid = [store.fold(f)[1] for f in folds]
        if store.is_ramp:
            from .sensitive_ramp import bagged

            out["bagged"][sid] = bagged(store.ramp(), valid, trains, tests)
            continue
        out["bagged"][sid] = [list(row) for row in bagged_scores(
            m["kind"], m["classes"], m["score_names"], y_train, y_test, valid, trains, tests)]
    return out


def blend(store: Store, space: str | None, scopes: dict) -> dict:
    """Per scope, the blend of its submissions, as `datarun.board.contrib` stores it."""
    import numpy as np

    if store.is_ramp:
        return _ramp_blend(store, space, scopes)

    from .scoring import native

    m = store.manifest
    y_train, y_test = store.labels()
    classes = np.array(m["classes"]) if m["classes"] else None
    folds = list(range(store.n_folds))
    valid_idx = [store.fold(f)[1] for f in folds]
    ys = native.fold_truths(classes, y_train, valid_idx)
    name = m["score_names"][0]
    score, lower = native.blend_score(name, classes)
    valid_cache: dict = {}

    def valid_predictions(sid):
        if sid not in valid_cache:
            per_fold = []
            for fold, idx in zip(folds, valid_idx, strict=True):
                train = _usable(store, store.predictions(space, sid, fold) / "y_pred_train.npy", len(y_train))
                if train is None:
                    per_fold = None
                    break
                per_fold.append(train[idx])
            valid_cache[sid] = per_fold
        return valid_cache[sid]

    out: dict = {"name": name, "scopes": {}, "missing": []}
    for scope, ids in scopes.items():
        candidates = [sid for sid in ids if valid_predictions(sid) is not None]
        out["missing"] += [sid for sid in ids if sid not in candidates and sid not in out["missing"]]
        entry: dict = {"candidates": candidates, "blended": False}
        if candidates:
            made = native.blend(m["kind"], score, lower, ys, [valid_predictions(s) for s in candidates])
            entry["blended"] = made.n_blended_folds > 0
            entry["contributivity"] = [float(v) for v in made.contributivity]
            entry["combined_valid"] = native.mean_defined(made.combined_scores)
            entry["best_single_valid"] = native.mean_defined(made.best_single_scores)
            fold_tests: list[list] = []
            for fold, members in zip(folds, made.members, strict=True):
                if not members:
                    continue
                tests = [_usable(store, store.predictions(space, candidates[i], fold) / "y_pred_test.npy",
                                 len(y_test)) for i in members]
                if any(t is None for t in tests):
                    fold_tests = []
                    break
                fold_tests.append(tests)
            entry["combined_test"] = native.combined_test(m["kind"], m["classes"], name, y_test, fold_tests)
        out["scopes"][scope] = entry
    return out


def _ramp_blend(store: Store, space: str | None, scopes: dict) -> dict:
    """A RAMP problem's blends (`sensitive_ramp.blend_scope`), from the predictions kept here."""
    from .sensitive_ramp import blend_scope

    y_train, y_test = store.labels()
    folds = list(range(store.n_folds))
    valid_idx = [store.fold(f)[1] for f in folds]
    trains: dict = {}

    def train_predictions(sid):
        if sid not in trains:
            per_fold = [_usable(store, store.predictions(space, sid, f) / "y_pred_train.npy", len(y_train))
                        for f in folds]
            trains[sid] = None if any(p is None for p in per_fold) else per_fold
        return trains[sid]

    out: dict = {"name": store.manifest["score_names"][0], "scopes": {}, "missing": []}
    for scope, ids in scopes.items():
        candidates = [sid for sid in ids if train_predictions(sid) is not None]
        out["missing"] += [sid for sid in ids if sid not in candidates and sid not in out["missing"]]
        entry: dict = {"candidates": candidates, "blended": False}
        if candidates:
            def tests(fold, _candidates=candidates):
                arrays = [_usable(store, store.predictions(space, sid, fold) / "y_pred_test.npy", len(y_test))
                          for sid in _candidates]
                return None if any(a is None for a in arrays) else arrays

            entry.update(blend_scope(store.ramp(), valid_idx, [train_predictions(s) for s in candidates], tests))
        out["scopes"][scope] = entry
    return out


def kept(store: Store, space: str | None, submissions: dict) -> dict:
    """Which of these submissions have lost predictions here (the owner purged them)."""
    missing = [sid for sid, folds in submissions.items()
               if not all((store.predictions(space, sid, f) / "y_pred_test.npy").is_file() for f in folds)]
    return {"missing": sorted(missing), "refused": store.refused}


def check(root, data_hash: str) -> dict:
    """What the organiser's `problem add --sensitive` verifies: the manifest, and that the data
    set with that hash is here, whole."""
    store = Store(root, data_hash)
    data = Path(root) / "data" / check_key(data_hash, "data hash")
    complete = (data / ".complete").exists()
    scoring = None
    if complete and store.is_ramp:  # its score types must run here: every task is scored here
        try:
            store.ramp().check()
        except HarnessError as error:
            scoring = str(error)
    return {"manifest": store.manifest, "complete": complete, "scoring_error": scoring,
            "data_hash": tree_hash(data) if complete else None, "refused": store.refused}


def purge(root, problem: str) -> dict:
    """The owner's purge: every kept prediction of the problem, of every workspace, removed."""
    store = Store.of_problem(root, problem)
    kept = store.path / "predictions"
    submissions = sorted({f"{space.name}/{sid.name}" for space in kept.glob("*") for sid in space.glob("*")})
    shutil.rmtree(kept, ignore_errors=True)
    return {"problem": store.problem, "purged": submissions}


def request(root, space: str | None, payload: str) -> dict:
    """The organiser's `sensitive` command: {"op": "check" | "kept" | "bag" | "blend", "data": HASH, ...}."""
    try:
        asked = json.loads(payload)
    except ValueError:
        raise HarnessError("the sensitive request is not JSON") from None
    if not isinstance(asked, dict):
        raise HarnessError("the sensitive request is not a JSON object")
    op, data_hash = asked.get("op"), asked.get("data")
    if not isinstance(data_hash, str) or not is_sensitive(root, data_hash):
        raise HarnessError(f"this host holds no sensitive data set {data_hash}: has its owner run "
                           "`datarun owner prepare` with this workdir?")
    if op == "check":
        return check(root, data_hash)
    store = Store(root, data_hash)
    if op == "bag":
        return bag(store, space, {int(k): [int(f) for f in v] for k, v in (asked.get("submissions") or {}).items()})
    if op == "kept":
        return kept(store, space, {int(k): [int(f) for f in v] for k, v in (asked.get("submissions") or {}).items()})
    if op == "blend":
        return blend(store, space, {str(k): [int(s) for s in v] for k, v in (asked.get("scopes") or {}).items()})
    raise HarnessError(f"unknown sensitive request {op!r}")
