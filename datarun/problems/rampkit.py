"""RAMP kits (ramp-workflow's `problem.py`) on the organiser's side: reading and registering.

A RAMP kit describes its problem in code, so datarun runs that code rather than
re-describing it: the kit's own `get_train_data`, `get_test_data`, `get_cv`, `workflow`,
`score_types` and `Predictions`. Registration calls them once, checks what they return,
freezes the folds `get_cv` gives as index arrays (like any other problem's), and stores:

- the data tree shipped to hosts: `X_train.pkl`, `y_train.pkl`, `X_test.pkl` (exactly the
  objects the kit returned, pickled here by the organiser, so the submission sees what
  `ramp-test` would give it), the kit's `problem.py` (the host needs its workflow and
  Predictions), `external/<file>` for workflow elements that are data files
  (EstimatorExternalData's `external_data.csv`), and `meta.json` with `"format": "ramp"`;
- the labels tree kept here: `y_train.npy` and `y_test.npy`, plain arrays (test labels
  never leave the organiser's machine).

ramp-workflow is an optional extra, imported only for RAMP kits. Every mistake in the
kit is found before anything is written, and reported in one line.
"""

import importlib.util
import json
import pickle
import re
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from datarun.errors import UsageError

RAMP_FILE = "problem.py"
NAME_RE = re.compile(r"^[a-z0-9_-]+$")
REQUIRED_NAMES = ("get_train_data", "get_test_data", "get_cv", "workflow", "score_types",
                  "Predictions")
PICKLE_PROTOCOL = 4  # readable by any Python a host may run (3.8 and later)
DEFAULT_LIMITS = {"wall_time": 600.0, "cpu_time": None, "memory": 4 * 1000**3}
RENAME = "a RAMP kit is registered under its folder's name: rename the folder"
RAMPWF_MISSING = ("this is a RAMP kit (problem.py), which needs ramp-workflow: "
                  "pip install 'datarun[ramp]'")

# The ramp-workflow workflows datarun runs, and what the file of each element (by position)
# must define: checked when a submission arrives.
WORKFLOW_FUNCTIONS: dict[str, tuple[tuple[str, ...], ...]] = {
    "Estimator": (("get_estimator",),),
    "EstimatorExternalData": (("get_estimator",), ()),
    "SKLearnPipeline": (("get_estimator",),),
    "Classifier": (("Classifier",),),
    "Regressor": (("Regressor",),),
    "FeatureExtractorClassifier": (("FeatureExtractor",), ("Classifier",)),
    "FeatureExtractorRegressor": (("FeatureExtractor",), ("Regressor",)),
}
PREDICTION_KINDS = {"multiclass": "classification", "regression": "regression"}


def is_ramp_kit(kit_dir: Path) -> bool:
    """A folder with problem.py and no problem.toml (a native kit wins when both are there)."""
    kit_dir = Path(kit_dir).expanduser()
    return (kit_dir / RAMP_FILE).is_file() and not (kit_dir / "problem.toml").exists()


def require_rampwf():
    try:
        import rampwf
    except ImportError:
        raise UsageError(RAMPWF_MISSING) from None
    return rampwf


def _where(error: BaseException, path: Path) -> str:
    """Where in the kit's file the error was raised: ' (problem.py line 12, in get_cv)'."""
    frames = traceback.extract_tb(error.__traceback__)
    ours = [f for f in frames if Path(f.filename).name == path.name] or frames
    if isinstance(error, SyntaxError) and error.lineno:
        return f" ({path.name} line {error.lineno})"
    if not ours:
        return ""
    frame = ours[-1]
    inside = "" if frame.name == "<module>" else f", in {frame.name}"
    return f" ({Path(frame.filename).name} line {frame.lineno}{inside})"


def kit_error(what: str, error: BaseException, path: Path) -> UsageError:
    """One line from a kit's traceback: what failed, the exception, and where in problem.py."""
    text = " ".join(f"{type(error).__name__}: {error}".split())
    if isinstance(error, SyntaxError):
        text = f"SyntaxError: {error.msg}"
    if len(text) > 300:
        text = text[:300] + "..."
    return UsageError(f"{what}: {text}{_where(error, path)}")


def import_problem(path: Path, module_name: str = "datarun_ramp_problem"):
    """Import a kit's problem.py as a module of its own (not kept in sys.modules)."""
    require_rampwf()
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as error:
        raise kit_error(f"{path.name} failed to import", error, path) from None
    return module


@dataclass
class RampKit:
    kit_dir: Path
    module: object
    name: str
    title: str
    workflow: str  # the ramp-workflow class name
    elements: list[str]  # the workflow's element names, as the kit gives them
    prediction: str  # multiclass | regression
    kind: str  # classification | regression
    label_names: list | None
    scores: list[dict]  # [{"name", "lower_is_better", "precision"}], the first is official

    @property
    def files(self) -> list[str]:
        """The file name of every workflow element: `estimator` -> `estimator.py`."""
        return [element_file(e) for e in self.elements]


def element_file(element: str) -> str:
    return element if Path(element).suffix else f"{element}.py"


def _plain(value):
    return value.item() if hasattr(value, "item") else value


def prediction_kind(Predictions) -> str:
    """multiclass or regression, from the module ramp-workflow built the type in."""
    module = getattr(getattr(Predictions, "__init__", None), "__module__", "") or ""
    kind = module.rsplit(".", 1)[-1]
    if not module.startswith("rampwf.prediction_types.") or kind not in PREDICTION_KINDS:
        label = kind if module.startswith("rampwf.") else getattr(Predictions, "__name__", "?")
        raise UsageError(
            f"{RAMP_FILE}: prediction type {label!r} is not supported (datarun scores "
            "multiclass, binary and regression predictions: make_multiclass, make_regression)")
    if kind == "regression" and getattr(Predictions, "n_columns", 0):
        raise UsageError(
            f"{RAMP_FILE}: multi-target regression predictions ({Predictions.n_columns} "
            "columns) are not supported: datarun scores one regression target")
    return kind


def kit_name(kit_dir: Path) -> str:
    name = kit_dir.name.lower().replace(" ", "_")
    if not NAME_RE.match(name):
        raise UsageError(
            f"a RAMP kit is registered under its folder's name, and {kit_dir.name!r} may hold "
            "only letters, digits, '_' and '-': rename the folder")
    return name


def load_ramp_kit(kit_dir: Path) -> RampKit:
    """Import and check a kit's problem.py (its data is not read here)."""
    kit_dir = Path(kit_dir).expanduser().resolve()
    path = kit_dir / RAMP_FILE
    module = import_problem(path)
    missing = [name for name in REQUIRED_NAMES if not hasattr(module, name)]
    if missing:
        raise UsageError(f"{RAMP_FILE} does not define {', '.join(missing)}: a RAMP kit needs "
                         f"{', '.join(REQUIRED_NAMES)}")
    workflow = module.workflow
    workflow_name = type(workflow).__name__
    if (not type(workflow).__module__.startswith("rampwf.workflows")
            or workflow_name not in WORKFLOW_FUNCTIONS):
        raise UsageError(
            f"{RAMP_FILE}: workflow {workflow_name} is not supported (datarun runs "
            f"{', '.join(WORKFLOW_FUNCTIONS)} from ramp-workflow)")
    elements = [str(e) for e in workflow.element_names]
    prediction = prediction_kind(module.Predictions)
    label_names = None
    if prediction == "multiclass":
        label_names = [_plain(label) for label in module.Predictions.label_names]
        if len(label_names) < 2:
            raise UsageError(f"{RAMP_FILE}: Predictions has {len(label_names)} label names; "
                             "classification needs two or more")
    score_types = module.score_types
    if not isinstance(score_types, list | tuple) or not score_types:
        raise UsageError(f"{RAMP_FILE}: score_types must be a non-empty list of score types")
    scores = []
    for score in score_types:
        if not hasattr(score, "score_function") or not hasattr(score, "name"):
            raise UsageError(f"{RAMP_FILE}: score_types holds {score!r}, not a ramp-workflow "
                             "score type")
        scores.append({"name": str(score.name),
                       "lower_is_better": bool(score.is_lower_the_better),
                       "precision": int(getattr(score, "precision", 3))})
    names = [s["name"] for s in scores]
    if len(set(names)) != len(names):
        raise UsageError(f"{RAMP_FILE}: two score types share a name ({names}): give each its own "
                         "name=")
    title = str(getattr(module, "problem_title", "") or kit_dir.name)
    return RampKit(kit_dir=kit_dir, module=module, name=kit_name(kit_dir), title=title,
                   workflow=workflow_name, elements=elements, prediction=prediction,
                   kind=PREDICTION_KINDS[prediction], label_names=label_names, scores=scores)


@dataclass
class RampData:
    X_train: object
    y_train: object  # as the kit returned it: what the host's workflow is given
    X_test: object  # None when the kit has no test data
    labels_train: np.ndarray  # plain arrays for scoring here
    labels_test: np.ndarray
    folds: list[tuple[np.ndarray, np.ndarray]]
    external: dict[str, Path]  # data-file elements: name -> the kit's default file


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


def _labels(kit: RampKit, y, what: str) -> np.ndarray:
    array = np.asarray(y)
    if array.ndim != 1:
        raise UsageError(f"{RAMP_FILE}: {what} has shape {array.shape}; datarun needs one "
                         "label or value per row")
    if kit.kind == "regression":
        try:
            return array.astype(np.float64)
        except (TypeError, ValueError):
            raise UsageError(f"{RAMP_FILE}: {what} is not numeric, but the predictions are "
                             "regression") from None
    if array.dtype == object:
        kinds = {type(_plain(v)) for v in array}
        array = array.astype(np.int64 if kinds <= {int, bool} else str)
    known = {_plain(label) for label in kit.label_names}
    unknown = [v for v in np.unique(array).tolist() if v not in known
               and not (isinstance(v, float) and v.is_integer() and int(v) in known)]
    if unknown:
        raise UsageError(f"{RAMP_FILE}: {what} holds label {unknown[0]!r}, which is not in "
                         f"Predictions' label_names {kit.label_names}")
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
    for element in kit.elements:
        if not Path(element).suffix:
            continue
        for candidate in (kit.kit_dir / "data" / element,
                          kit.kit_dir / "submissions" / "starting_kit" / element):
            if candidate.is_file():
                found[element] = candidate
                break
    return found


def prepare_ramp_data(kit: RampKit) -> RampData:
    """Call the kit's data and cv functions and check what they give. Writes nothing."""
    module, path = kit.module, str(kit.kit_dir)
    train = _call(kit, "get_train_data", module.get_train_data, path=path)
    test = _call(kit, "get_test_data", module.get_test_data, path=path)
    for what, pair in (("get_train_data", train), ("get_test_data", test)):
        if not isinstance(pair, tuple | list) or len(pair) != 2:
            raise UsageError(f"{RAMP_FILE}: {what} must return (X, y), got {type(pair).__name__}")
    X_train, y_train = train
    X_test, y_test = test
    if X_train is None or y_train is None:
        raise UsageError(f"{RAMP_FILE}: get_train_data returned no data (None)")
    n_train = _length(kit, X_train, "X_train")
    if n_train != _length(kit, y_train, "y_train"):
        raise UsageError(f"{RAMP_FILE}: get_train_data gives {n_train} rows of X but "
                         f"{len(y_train)} labels")
    labels_train = _labels(kit, y_train, "y_train")
    if X_test is None or y_test is None:  # ramp-test then scores train and valid only
        X_test = None
        labels_test = labels_train[:0]
    else:
        n_test = _length(kit, X_test, "X_test")
        if n_test != _length(kit, y_test, "y_test"):
            raise UsageError(f"{RAMP_FILE}: get_test_data gives {n_test} rows of X but "
                             f"{len(y_test)} labels")
        labels_test = _labels(kit, y_test, "y_test")
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
    return RampData(X_train, y_train, X_test, labels_train, labels_test, folds,
                    _external_files(kit))


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
    """The folder shipped to hosts (data/<data-hash>/): features, training labels, problem.py."""
    _pickle(data.X_train, folder / "X_train.pkl", "X_train")
    _pickle(data.y_train, folder / "y_train.pkl", "y_train")
    _pickle(data.X_test, folder / "X_test.pkl", "X_test")
    (folder / RAMP_FILE).write_bytes((kit.kit_dir / RAMP_FILE).read_bytes())
    if data.external:
        (folder / "external").mkdir()
        for name, source in data.external.items():
            (folder / "external" / name).write_bytes(source.read_bytes())
    meta = {
        "format": "ramp", "kind": kit.kind, "classes": kit.label_names, "target": None,
        "n_train": len(data.labels_train), "n_test": len(data.labels_test),
        "columns": _columns(data.X_train), "workflow": kit.workflow, "elements": kit.elements,
        "prediction": kit.prediction, "external": sorted(data.external),
    }
    (folder / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")


def ramp_spec(kit: RampKit, data: RampData) -> dict:
    """What `problems.spec` holds for a RAMP problem (the keys native problems have, and "ramp")."""
    return {
        "name": kit.name, "title": kit.title, "kind": kit.kind,
        "data": {"train": None, "test": None, "target": None, "test_size": None, "drop": []},
        "cv": {"strategy": "get_cv", "n_splits": len(data.folds), "seed": None, "test_size": None},
        "workflow": {"kind": "ramp"},
        "scores": {"names": [s["name"] for s in kit.scores]},
        "limits": DEFAULT_LIMITS,
        "ramp": {"workflow": kit.workflow, "elements": kit.elements,
                 "files": kit.files, "prediction": kit.prediction,
                 "label_names": kit.label_names, "scores": kit.scores,
                 "external": sorted(data.external)},
    }


def register_ramp_problem(workspace, db, kit_dir: Path) -> dict:
    """Register a RAMP kit; return the problem's summary (as `describe_problem`)."""
    from datarun.problems.registry import _refuse_registered, describe_problem, store_problem

    kit = load_ramp_kit(kit_dir)
    _refuse_registered(db, kit.name, RENAME)
    data = prepare_ramp_data(kit)
    spec = ramp_spec(kit, data)
    store_problem(
        workspace, db, kit.name, lambda folder: write_ramp_data_tree(kit, data, folder),
        data.labels_train, data.labels_test, data.folds,
        lambda data_hash, labels_hash: (
            kit.name, kit.title, kit.kind, "ramp", json.dumps(spec), data_hash, labels_hash,
            len(data.labels_train), len(data.labels_test), _n_features(data.X_train),
            None if kit.label_names is None else json.dumps(kit.label_names),
            json.dumps([s["name"] for s in kit.scores]), json.dumps(DEFAULT_LIMITS),
            str(kit.kit_dir), time.time(),
        ),
        RENAME)
    return describe_problem(workspace, db, kit.name)


def problem_module(workspace, problem: dict):
    """The registered problem.py (from the data tree), imported on the organiser's side."""
    from datarun.problems.registry import data_dir

    return import_problem(data_dir(workspace, problem) / RAMP_FILE,
                          f"datarun_ramp_{problem['name'].replace('-', '_')}")
