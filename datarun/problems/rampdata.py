"""RAMP kits on the organiser's side: calling the kit's data functions, checking what they
give, and registering it.

Registration imports problem.py once (`rampkit.load_ramp_kit`), calls the kit's functions
once, checks what they return, freezes the folds `get_cv` gives as index arrays (like any
other problem's), and stores:

- the data tree shipped to hosts: `X_train.pkl`, `y_train.pkl`, `X_test.pkl` (exactly the
  objects the kit returned, pickled here by the organiser, so the submission sees what
  `ramp-test` would give it), `kit/` (problem.py and every other Python file of the kit
  outside data/ and submissions/, and its `external_imports/` folder: what the workflow
  and Predictions may need), `external/<file>` for workflow elements that are data files
  (a default copy from the kit), and `meta.json` with `"format": "ramp"`;
- the labels tree kept here: `y_train.pkl` and `y_test.pkl` (the kit's own objects, which
  the kit's score types read, as ramp-test's do) and `y_train.npy`, `y_test.npy` (plain
  arrays for `problem show`). Test labels never leave the organiser's machine.

Only what cannot run is refused, each with its reason: predictions that are object arrays
(they cannot travel as .npy without pickle), features that name files on this machine
(hosts do not have them), a workflow without the calls ramp-test makes.
"""

import json
import os
import pickle
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from datarun.errors import UsageError
from datarun.problems.rampkit import (
    EARLY_CHECKS,
    KIT_FOLDER,
    RAMP_FILE,
    RampKit,
    _one_line,
    _plain,
    check_env,
    check_starting_kit,
    ignored_environment,
    is_data_file,
    kit_environment,
    kit_error,
    kit_name,
    load_ramp_kit,
)
from datarun.remote.ramp import EXTERNAL_IMPORTS
from datarun.sizes import format_cap, format_size

PICKLE_PROTOCOL = 4  # readable by any Python a host may run (3.8 and later)
DEFAULT_MEMORY = 4 * 1000**3
DEFAULT_LIMITS = {"wall_time": 600.0, "cpu_time": None, "memory": DEFAULT_MEMORY}
DEFAULT_DATA_FILE_CAP = 50 * 1000**2
SKIPPED_DIRS = {"data", "submissions", "__pycache__", "training_output", ".git",
                ".ipynb_checkpoints"}
MAX_KIT_FILES_BYTES = 20 * 1000**2
LABEL_CHECK_ROWS = 1000
RENAME = "a RAMP kit is registered under its folder's name: rename the folder"


@dataclass
class RampData:
    X_train: object
    y_train: object  # as the kit returned it: what the host's workflow is given
    X_test: object  # None when the kit has no test data
    y_test: object  # None when the kit has no test data
    labels_train: np.ndarray  # plain arrays, for `problem show`
    labels_test: np.ndarray
    folds: list[tuple[np.ndarray, np.ndarray]]
    external: dict[str, Path]  # data-file elements: name -> the kit's default file
    kit_files: list[str]  # what of the kit folder ships with the data (relative paths)


def _call(kit: RampKit, what: str, function, *args, **kwargs):
    try:
        return function(*args, **kwargs)
    except Exception as error:
        raise kit_error(f"{RAMP_FILE} {what} failed", error, kit.kit_dir / RAMP_FILE) from None


def _length(kit: RampKit, value, what: str) -> int:
    try:
        return len(value)
    except TypeError:
        raise UsageError(f"{RAMP_FILE}: {what} has no length ({type(value).__name__})") from None


def _head(y, n: int):
    try:
        return y[:n]
    except Exception:
        return y


def _check_truth(kit: RampKit, y, what: str) -> None:
    """The kit's Predictions reads these labels, as ramp-test's scoring will (first rows)."""
    try:
        kit.module.Predictions(y_true=_head(y, LABEL_CHECK_ROWS))
    except Exception as error:
        raise UsageError(f"{RAMP_FILE}: Predictions(y_true={what}) fails, as ramp-test's scoring "
                         f"would: {_one_line(error)}") from None


def _class_labels(kit: RampKit, y, what: str) -> np.ndarray:
    array = np.asarray(y)
    if array.ndim != 1:
        raise UsageError(f"{RAMP_FILE}: {what} has shape {array.shape}; a classification kit "
                         "needs one label per row")
    if array.dtype == object:
        kinds = {type(_plain(v)) for v in array}
        array = array.astype(np.int64 if kinds <= {int, bool} else str)
    known = {_plain(label) for label in kit.label_names or ()}
    unknown = [v for v in np.unique(array).tolist() if v not in known
               and not (isinstance(v, float) and v.is_integer() and int(v) in known)]
    if unknown:
        raise UsageError(f"{RAMP_FILE}: {what} holds label {unknown[0]!r}, which is not in "
                         f"Predictions' label_names {kit.label_names}")
    return array


def _plain_labels(kit: RampKit, y, what: str) -> np.ndarray:
    """A plain array of the labels (no objects: it is saved without pickle), for `problem show`."""
    if kit.kind == "classification":
        return _class_labels(kit, y, what)
    array = np.asarray(y)
    if kit.kind == "regression":
        try:
            return array.astype(np.float64)
        except (TypeError, ValueError):
            raise UsageError(f"{RAMP_FILE}: {what} is not numeric, but the predictions are "
                             "regression") from None
    if array.dtype == object:
        try:
            return array.astype(np.float64)
        except (TypeError, ValueError):
            return array.astype(str)
    return array


def _fold_indices(kit: RampKit, part, n: int, fold: int, what: str) -> np.ndarray:
    array = np.asarray(part)
    if array.dtype == bool:
        if len(array) != n:
            raise UsageError(f"{RAMP_FILE}: get_cv fold {fold} gives a {what} mask of "
                             f"{len(array)} rows for {n} training rows")
        return np.flatnonzero(array).astype(np.int64)
    if array.ndim != 1 or (array.size and array.dtype.kind not in "iu"):
        raise UsageError(f"{RAMP_FILE}: get_cv fold {fold} {what} indices are not whole numbers")
    array = array.astype(np.int64)
    if array.size and (array.min() < 0 or array.max() >= n):
        raise UsageError(f"{RAMP_FILE}: get_cv fold {fold} {what} indices fall outside the "
                         f"{n} training rows")
    return array


def _external_files(kit: RampKit) -> dict[str, Path]:
    """The kit's default copy of each data-file element (data/<name>, else the starting kit's)."""
    found = {}
    for name in kit.files:
        if not is_data_file(name):
            continue
        for candidate in (kit.kit_dir / "data" / name,
                          kit.kit_dir / "submissions" / "starting_kit" / name):
            if candidate.is_file():
                found[name] = candidate
                break
    return found


def _kit_files(kit_dir: Path) -> list[str]:
    """What of the kit ships to hosts: its Python files outside data/ and submissions/, and
    everything in external_imports/ (the helpers ramp-test puts on sys.path)."""
    found, total = [], 0
    for root, dirs, files in os.walk(kit_dir):
        here = Path(root)
        inside_imports = here == kit_dir / EXTERNAL_IMPORTS or (
            kit_dir / EXTERNAL_IMPORTS) in here.parents
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d != "__pycache__" and (
            here != kit_dir or d not in SKIPPED_DIRS))
        for name in sorted(files):
            path = here / name
            if path.is_symlink() or not path.is_file():
                continue
            if inside_imports or name.endswith(".py"):
                found.append(str(path.relative_to(kit_dir)))
                total += path.stat().st_size
    if total > MAX_KIT_FILES_BYTES:
        raise UsageError(f"the kit's Python files and {EXTERNAL_IMPORTS}/ hold "
                         f"{format_size(total)}, more than the {format_cap(MAX_KIT_FILES_BYTES)} "
                         "shipped to hosts with the data: keep data in data/")
    return found


def _local_path(X, kit_dir: Path) -> str | None:
    """A file or folder of this machine that X names (image kits give (folder, ids))."""
    parts = X if isinstance(X, tuple) and len(X) <= 16 else (X,)
    for part in parts:
        if isinstance(part, str | os.PathLike) and len(str(part)) < 4096:
            path = Path(part)
            if (path if path.is_absolute() else kit_dir / path).exists():
                return str(part)
    return None


def _checked_split(kit: RampKit, split: str, X, y) -> tuple[int, np.ndarray]:
    """The rows of a split (train or test) and its plain labels, once X and y are checked
    to have as many rows and the kit's Predictions reads y."""
    n = _length(kit, X, f"X_{split}")
    if n != _length(kit, y, f"y_{split}"):
        raise UsageError(f"{RAMP_FILE}: get_{split}_data gives {n} rows of X but {len(y)} labels")
    labels = _plain_labels(kit, y, f"y_{split}")
    _check_truth(kit, y, f"y_{split}")
    return n, labels


def prepare_ramp_data(kit: RampKit) -> RampData:
    """Call the kit's data and cv functions and check what they give. Writes nothing."""
    module, path = kit.module, str(kit.kit_dir)
    with kit_environment(kit.kit_dir, kit.env):
        train = _call(kit, "get_train_data", module.get_train_data, path=path)
        test = _call(kit, "get_test_data", module.get_test_data, path=path)
        for what, pair in (("get_train_data", train), ("get_test_data", test)):
            if not isinstance(pair, tuple | list) or len(pair) != 2:
                raise UsageError(f"{RAMP_FILE}: {what} must return (X, y), got "
                                 f"{type(pair).__name__}")
        X_train, y_train = train
        X_test, y_test = test
        for what, X in (("get_train_data", X_train), ("get_test_data", X_test)):
            local = _local_path(X, kit.kit_dir)
            if local is not None:
                raise UsageError(
                    f"{RAMP_FILE}: {what} gives the path {local!r} of this machine, where the "
                    "workflow would read files at run time; hosts get the objects "
                    "get_train_data returns, not the files they name: datarun cannot run this kit")
        if X_train is None or y_train is None:
            raise UsageError(f"{RAMP_FILE}: get_train_data returned no data (None)")
        n_train, labels_train = _checked_split(kit, "train", X_train, y_train)
        if X_test is None or y_test is None:  # ramp-test then scores train and valid only
            X_test = y_test = None
            labels_test = labels_train[:0]
        else:
            labels_test = _checked_split(kit, "test", X_test, y_test)[1]
        cv = _call(kit, "get_cv", lambda: list(module.get_cv(X_train, y_train)))
    if not cv:
        raise UsageError(f"{RAMP_FILE}: get_cv gave no folds")
    folds = []
    for index, fold in enumerate(cv):
        if not isinstance(fold, tuple | list) or len(fold) != 2:
            raise UsageError(f"{RAMP_FILE}: get_cv fold {index} is not a (train, valid) pair")
        train_idx = _fold_indices(kit, fold[0], n_train, index, "train")
        valid_idx = _fold_indices(kit, fold[1], n_train, index, "valid")
        if not len(train_idx) or not len(valid_idx):
            raise UsageError(f"{RAMP_FILE}: get_cv fold {index} has no train or no valid rows")
        folds.append((train_idx, valid_idx))
    return RampData(X_train, y_train, X_test, y_test, labels_train, labels_test, folds,
                    _external_files(kit), _kit_files(kit.kit_dir))


def _pickle(value, path: Path, what: str) -> None:
    try:
        with open(path, "wb") as handle:
            pickle.dump(value, handle, protocol=PICKLE_PROTOCOL)
    except (pickle.PicklingError, TypeError, AttributeError) as error:
        raise UsageError(f"{RAMP_FILE}: {what} cannot be pickled to ship to hosts: {error}") from None


def _columns(X) -> list[str]:
    columns = getattr(X, "columns", None)
    return [str(c) for c in columns] if columns is not None else []


def _n_features(X) -> int:
    shape = getattr(X, "shape", None)
    return int(shape[1]) if shape is not None and len(shape) == 2 else 0


def write_ramp_data_tree(kit: RampKit, data: RampData, folder: Path) -> None:
    """The folder shipped to hosts (data/<data-hash>/): features, training labels, the kit's code."""
    _pickle(data.X_train, folder / "X_train.pkl", "X_train")
    _pickle(data.y_train, folder / "y_train.pkl", "y_train")
    _pickle(data.X_test, folder / "X_test.pkl", "X_test")
    for relative in data.kit_files:
        target = folder / KIT_FOLDER / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes((kit.kit_dir / relative).read_bytes())
    if data.external:
        (folder / "external").mkdir()
        for name, source in data.external.items():
            (folder / "external" / name).write_bytes(source.read_bytes())
    meta = {
        "format": "ramp", "kind": kit.kind,
        "classes": kit.label_names if kit.kind == "classification" else None, "target": None,
        "n_train": len(data.labels_train), "n_test": len(data.labels_test),
        "columns": _columns(data.X_train), "workflow": kit.workflow, "elements": kit.elements,
        "prediction": kit.prediction, "pred_shape": kit.pred_shape,
        "external": sorted(data.external), "kit": KIT_FOLDER, "env": kit.env,
    }
    (folder / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")


def ramp_spec(kit: RampKit, data: RampData) -> dict:
    """What `problems.spec["ramp"]` holds (registration adds the data-file cap)."""
    return {"workflow": kit.workflow, "elements": kit.elements, "files": kit.files,
            "prediction": kit.prediction, "label_names": kit.label_names,
            "scores": kit.scores, "external": sorted(data.external),
            "pred_shape": kit.pred_shape, "env": kit.env,
            "save_y_pred": callable(getattr(kit.module, "save_y_pred", None)),
            "early_checks": type(kit.module.workflow).__module__.startswith(
                "rampwf.workflows") and kit.workflow in EARLY_CHECKS}


def prepare_kit(kit_dir: Path, env: dict[str, str], out: Path) -> dict:
    """Read and check a kit and write what registration stores under `out`: `data/` (the
    tree shipped to hosts), `labels/` (kept here), `folds/<i>-train.npy` and
    `<i>-valid.npy`; return the summary registration needs (JSON-able, also written to
    `out/summary.json`). Touches no workspace, so it may run in another process."""
    env = check_env(env)
    ignored = ignored_environment(env)
    kit = load_ramp_kit(kit_dir, env)
    check_starting_kit(kit)
    data = prepare_ramp_data(kit)
    for name in ("data", "labels", "folds"):
        (out / name).mkdir()
    write_ramp_data_tree(kit, data, out / "data")
    np.save(out / "labels" / "y_train.npy", data.labels_train, allow_pickle=False)
    np.save(out / "labels" / "y_test.npy", data.labels_test, allow_pickle=False)
    _pickle(data.y_train, out / "labels" / "y_train.pkl", "y_train")
    _pickle(data.y_test, out / "labels" / "y_test.pkl", "y_test")
    for i, (train, valid) in enumerate(data.folds):
        np.save(out / "folds" / f"{i}-train.npy", train, allow_pickle=False)
        np.save(out / "folds" / f"{i}-valid.npy", valid, allow_pickle=False)
    summary = {
        "kit_dir": str(kit.kit_dir), "name": kit.name, "title": kit.title, "kind": kit.kind,
        "label_names": kit.label_names, "scores": kit.scores, "n_folds": len(data.folds),
        "n_train": len(data.labels_train), "n_test": len(data.labels_test),
        "n_features": _n_features(data.X_train),
        "ramp": ramp_spec(kit, data),
        "notes": [f"{name} is set in this environment but the kit does not see it: pass "
                  f"--env {name}={os.environ[name]} to give it to the kit and its tasks"
                  for name in ignored],
    }
    (out / "summary.json").write_text(json.dumps(summary))
    return summary


def register_ramp_problem(workspace, db, kit_dir: Path, env: dict[str, str] | None = None,
                          data_file_cap: int | None = None, prepared=None) -> dict:
    """Register a RAMP kit; return the problem's summary (as `describe_problem`).

    `prepared()`: the folder `prepare_kit` filled for this kit and env in another process
    (it raises the kit's refusal), or None: the kit is then read here."""
    import tempfile

    from datarun.problems.registered import describe_problem
    from datarun.problems.registry import _refuse_registered, store_prepared

    kit_dir = Path(kit_dir).expanduser().resolve()
    name = kit_name(kit_dir)
    _refuse_registered(db, name, RENAME)
    prepared = prepared() if prepared is not None else None
    with tempfile.TemporaryDirectory(prefix="datarun-kit-") as tmp:
        folder = Path(tmp) if prepared is None else Path(prepared)
        summary = (prepare_kit(kit_dir, env or {}, folder) if prepared is None
                   else json.loads((folder / "summary.json").read_text()))
        cap = DEFAULT_DATA_FILE_CAP if data_file_cap is None else int(data_file_cap)
        spec = {
            "name": name, "title": summary["title"], "kind": summary["kind"],
            "data": {"train": None, "test": None, "target": None, "test_size": None,
                     "drop": []},
            "cv": {"strategy": "get_cv", "n_splits": summary["n_folds"], "seed": None,
                   "test_size": None},
            "workflow": {"kind": "ramp"},
            "scores": {"names": [s["name"] for s in summary["scores"]]},
            "limits": DEFAULT_LIMITS,
            "ramp": dict(summary["ramp"], data_file_cap=cap),
        }
        folds = [(np.load(folder / "folds" / f"{i}-train.npy", allow_pickle=False),
                  np.load(folder / "folds" / f"{i}-valid.npy", allow_pickle=False))
                 for i in range(summary["n_folds"])]
        classes = summary["label_names"] if summary["kind"] == "classification" else None
        store_prepared(
            workspace, db, name, folder / "data", folder / "labels", folds,
            lambda data_hash, labels_hash: (
                name, summary["title"], summary["kind"], "ramp", json.dumps(spec), data_hash,
                labels_hash, summary["n_train"], summary["n_test"], summary["n_features"],
                None if classes is None else json.dumps(classes),
                json.dumps(spec["scores"]["names"]), json.dumps(DEFAULT_LIMITS),
                summary["kit_dir"], time.time(),
            ),
            RENAME)
    info = describe_problem(workspace, db, name)
    info["notes"] = summary["notes"]
    return info
