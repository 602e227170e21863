"""RAMP kits (ramp-workflow's `problem.py`): reading a kit and what it says of itself.

A RAMP kit describes its problem in code, so datarun runs that code rather than
re-describing it: the kit's own `get_train_data`, `get_test_data`, `get_cv`, `workflow`,
`score_types` and `Predictions`, whatever they are. There is no list of workflows or
prediction types: any workflow object with `element_names`, `train_submission` and
`test_submission` runs (ramp-workflow's own, or one the kit defines), with any
`Predictions` type whose `y_pred` is a numeric array. This module imports problem.py and
checks what it defines (the workflow, the prediction type, the score types); calling the
kit's data functions, checking what they return and writing what registration stores is
`rampdata.py`'s part.

Environment variables a kit reads (RAMP_TEST_MODE and the like) are the problem's, given
with `problem add --env`: the kit's code runs with them at registration and in every
task, and never with a `RAMP_*` variable of the organiser's or a host's own environment.

ramp-workflow is an optional extra, imported only for RAMP kits. Every mistake in the
kit is found before anything is written, and reported in one line.
"""

import contextlib
import importlib.util
import os
import pickle
import re
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from datarun.errors import UsageError

# A kit's environment, its sys.path and the modules it imports are handled as the harness
# handles them on a host: ramp-test puts external_imports/ on sys.path, and RAMP_*
# variables are never taken from the organiser's or a host's environment.
from datarun.remote.ramp import KIT_ENV_PREFIX, _kit_context

RAMP_FILE = "problem.py"
KIT_FOLDER = "kit"  # in the shipped data tree: problem.py and the kit's modules
NAME_RE = re.compile(r"^[a-z0-9_-]+$")
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
REQUIRED_NAMES = ("get_train_data", "get_test_data", "get_cv", "workflow", "score_types",
                  "Predictions")
WORKFLOW_CALLS = ("train_submission", "test_submission")
RAMPWF_MISSING = ("this is a RAMP kit (problem.py), which needs ramp-workflow: "
                  "pip install 'datarun[ramp]'")

# What the files of ramp-workflow's own workflows must define, checked when a submission
# arrives (an early, clear refusal instead of a failed training run). Other workflows,
# the kit's own included, get no such check: their tasks say what is missing.
EARLY_CHECKS: dict[str, tuple[tuple[str, ...], ...]] = {
    "Estimator": (("get_estimator",),),
    "EstimatorExternalData": (("get_estimator",), ()),
    "SKLearnPipeline": (("get_estimator",),),
    "Classifier": (("Classifier",),),
    "Regressor": (("Regressor",),),
    "FeatureExtractorClassifier": (("FeatureExtractor",), ("Classifier",)),
    "FeatureExtractorRegressor": (("FeatureExtractor",), ("Regressor",)),
}


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


def _one_line(error: BaseException) -> str:
    text = " ".join(f"{type(error).__name__}: {error}".split())
    if isinstance(error, SyntaxError):
        text = f"SyntaxError: {error.msg}"
    return text[:300] + "..." if len(text) > 300 else text


def kit_error(what: str, error: BaseException, path: Path) -> UsageError:
    """One line from a kit's traceback: what failed, the exception, and where in problem.py."""
    return UsageError(f"{what}: {_one_line(error)}{_where(error, path)}")


def check_env(env: dict[str, str]) -> dict[str, str]:
    """The problem's environment, checked: names like shell variables, values one line."""
    for name, value in env.items():
        if not ENV_NAME_RE.match(name):
            raise UsageError(f"--env {name}=...: a variable name holds letters, digits and '_' "
                             "and does not start with a digit")
        if "\0" in value or "\n" in value:
            raise UsageError(f"--env {name}: the value must be one line of text")
    return dict(env)


@contextlib.contextmanager
def kit_environment(kit_dir: Path, env: dict[str, str]):
    """Run the kit's code as ramp-test would, with the problem's environment only (what it
    prints goes to stderr).

    `RAMP_*` variables of this process are hidden unless the problem sets them; the kit's
    folder and its `external_imports/` are on sys.path; modules imported from the kit are
    dropped from sys.modules afterwards (another kit may have modules of the same name).
    """
    # stdout is for datarun's data (--json)
    with _kit_context(kit_dir, env), contextlib.redirect_stdout(sys.stderr):
        yield


def import_problem(path: Path, module_name: str = "datarun_ramp_problem"):
    """Import a kit's problem.py as a module of its own (not kept in sys.modules)."""
    require_rampwf()
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise UsageError(f"{path.name} cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as error:
        raise kit_error(f"{path.name} failed to import", error, path) from None
    return module


def ignored_environment(env: dict[str, str]) -> list[str]:
    """The organiser's own RAMP_* variables that the kit will not see: `problem add` says so."""
    return sorted(n for n in os.environ if n.startswith(KIT_ENV_PREFIX) and n not in env)


@dataclass
class RampKit:
    kit_dir: Path
    module: Any  # the kit's problem.py
    name: str
    title: str
    workflow: str  # the workflow's class name
    elements: list[str]  # the workflow's element names, as the kit gives them
    prediction: str  # what Predictions is: multiclass, regression, combined... or the kit's class
    kind: str  # classification | regression | other
    label_names: list | None
    scores: list[dict]  # [{"name", "lower_is_better", "precision"}], the first is official
    pred_shape: list[int]  # y_pred's shape after the rows: [] (a value), [3] (three columns)
    env: dict[str, str] = field(default_factory=dict)

    @property
    def files(self) -> list[str]:
        """The file name of every workflow element: `estimator` -> `estimator.py`."""
        return [element_file(e) for e in self.elements]


def element_file(element: str) -> str:
    """An element without an extension is Python code; one with an extension is a data file."""
    return element if Path(element).suffix else f"{element}.py"


def is_data_file(name: str) -> bool:
    return not name.endswith(".py")


def _plain(value):
    return value.item() if hasattr(value, "item") else value


def _rampwf_kind(Predictions) -> str | None:
    """multiclass, regression, combined, detection, clustering for ramp-workflow's own types."""
    module = getattr(getattr(Predictions, "__init__", None), "__module__", "") or ""
    if module.startswith("rampwf.prediction_types."):
        return module.rsplit(".", 1)[-1]
    return None


def _prediction_type(Predictions) -> tuple[str, str, list[int]]:
    """(what it is, the problem's kind, y_pred's shape after the rows), or UsageError."""
    rampwf_kind = _rampwf_kind(Predictions)
    label = rampwf_kind or f"{getattr(Predictions, '__name__', '?')} (the kit's own)"
    try:
        container = Predictions(n_samples=2)
        y_pred = np.asarray(container.y_pred)
    except Exception as error:
        raise UsageError(f"{RAMP_FILE}: Predictions(n_samples=...) failed ({_one_line(error)}); "
                         "ramp-test's bagging makes its empty predictions that way") from None
    if y_pred.dtype == object:
        raise UsageError(
            f"{RAMP_FILE}: prediction type {label!r} holds Python objects (dtype object) in its "
            "y_pred, which cannot travel from hosts as .npy without pickle: datarun cannot "
            "run this kit")
    if y_pred.ndim < 1 or len(y_pred) != 2:
        raise UsageError(f"{RAMP_FILE}: Predictions(n_samples=2).y_pred has shape "
                         f"{y_pred.shape}; ramp-workflow's predictions have one row per sample")
    if rampwf_kind == "multiclass":
        kind = "classification"
    elif rampwf_kind == "regression":
        kind = "regression"
    else:
        kind = "other"
    return label, kind, [int(n) for n in y_pred.shape[1:]]


def kit_name(kit_dir: Path) -> str:
    name = kit_dir.name.lower().replace(" ", "_")
    if not NAME_RE.match(name):
        raise UsageError(
            f"a RAMP kit is registered under its folder's name, and {kit_dir.name!r} may hold "
            "only letters, digits, '_' and '-': rename the folder")
    return name


def _check_workflow(workflow) -> tuple[str, list[str]]:
    name = type(workflow).__name__
    missing = [call for call in WORKFLOW_CALLS if not callable(getattr(workflow, call, None))]
    if missing:
        raise UsageError(f"{RAMP_FILE}: workflow {name} has no {' or '.join(missing)}: ramp-test "
                         "calls workflow.train_submission and workflow.test_submission")
    elements = getattr(workflow, "element_names", None)
    if not isinstance(elements, list | tuple) or not elements or not all(
            isinstance(e, str) for e in elements):
        raise UsageError(f"{RAMP_FILE}: workflow {name} has no element_names (a list of the "
                         "submission's file names): datarun needs it to know what a "
                         "submission holds")
    for element in elements:
        if (not element or element != Path(element).name or element.startswith(".")
                or element in (".", "..")):
            raise UsageError(f"{RAMP_FILE}: workflow {name} has element {element!r}, which is "
                             "not a plain file name")
    files = [element_file(e) for e in elements]
    if len(set(files)) != len(files):
        raise UsageError(f"{RAMP_FILE}: workflow {name} names a file twice: {files}")
    return name, list(elements)


def load_ramp_kit(kit_dir: Path, env: dict[str, str] | None = None) -> RampKit:
    """Import and check a kit's problem.py (its data is not read here)."""
    kit_dir = Path(kit_dir).expanduser().resolve()
    env = check_env(env or {})
    path = kit_dir / RAMP_FILE
    with kit_environment(kit_dir, env):
        module = import_problem(path)
    missing = [name for name in REQUIRED_NAMES if not hasattr(module, name)]
    if missing:
        raise UsageError(f"{RAMP_FILE} does not define {', '.join(missing)}: a RAMP kit needs "
                         f"{', '.join(REQUIRED_NAMES)}")
    workflow_name, elements = _check_workflow(module.workflow)
    prediction, kind, pred_shape = _prediction_type(module.Predictions)
    raw_labels = getattr(module.Predictions, "label_names", None)
    label_names = None
    if isinstance(raw_labels, list | tuple | np.ndarray):
        label_names = [_plain(label) for label in raw_labels]
    if kind == "classification" and (label_names is None or len(label_names) < 2):
        raise UsageError(f"{RAMP_FILE}: Predictions has {len(label_names or [])} label names; "
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
                   workflow=workflow_name, elements=elements, prediction=prediction, kind=kind,
                   label_names=label_names,
                   scores=scores, pred_shape=pred_shape, env=env)


def check_starting_kit(kit: RampKit) -> None:
    """The starting kit (when the kit has one) holds the workflow's code files: otherwise the
    workflow's element names and the kit disagree, and no submission could follow both."""
    folder = kit.kit_dir / "submissions" / "starting_kit"
    if not folder.is_dir():
        return
    for name in kit.files:
        if not is_data_file(name) and not (folder / name).is_file():
            raise UsageError(
                f"submissions/starting_kit has no {name}, which workflow {kit.workflow}'s "
                f"element {Path(name).stem!r} names: the workflow and the kit's files disagree")




def kit_folder(workspace, problem: dict) -> Path:
    """The registered kit's code, in its data tree (problems registered before kit/ existed
    have problem.py at the tree's top)."""
    from datarun.problems.registered import data_dir

    folder = data_dir(workspace, problem)
    return folder / KIT_FOLDER if (folder / KIT_FOLDER / RAMP_FILE).is_file() else folder


def problem_environment(problem: dict) -> dict[str, str]:
    return dict((problem.get("spec") or {}).get("ramp", {}).get("env") or {})


def problem_module(workspace, problem: dict):
    """The registered problem.py (from the data tree), imported on the organiser's side."""
    kit = kit_folder(workspace, problem)
    with kit_environment(kit, problem_environment(problem)):
        return import_problem(kit / RAMP_FILE, f"datarun_ramp_{problem['name'].replace('-', '_')}")


def load_ramp_labels(workspace, problem: dict) -> tuple[object, object]:
    """(y_train, y_test) as the kit returned them (y_test None without test data)."""
    from datarun.store.blobs import BlobStore

    folder = BlobStore(workspace.blobs_dir).tree_path(problem["labels_hash"])
    values = []
    for name in ("y_train", "y_test"):
        path = folder / f"{name}.pkl"
        if path.is_file():  # written here at registration: organiser to organiser
            with open(path, "rb") as handle:
                values.append(pickle.load(handle))
        else:  # a problem registered before the labels were kept as the kit's objects
            array = np.load(folder / f"{name}.npy", allow_pickle=False)
            values.append(array if name == "y_train" or len(array) else None)
    return values[0], values[1]
