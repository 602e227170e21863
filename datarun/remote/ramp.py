"""RAMP workflows on a host: the kit's own problem.py runs the submission, as ramp-test does.

A RAMP data set (`meta.json` with `"format": "ramp"`) holds what the organiser made:
`X_train.pkl`, `y_train.pkl`, `X_test.pkl` (the objects the kit's `get_train_data` and
`get_test_data` returned; `X_test` is None when the kit has no test data), `kit/` (the
kit's problem.py, its other Python files and its `external_imports/`) and
`external/<file>` for data-file elements. Everything a task needs is in its data set and
its task folder: nothing is read from anywhere else on the host. The runner loads the data
set once per data hash, imports ramp-workflow and problem.py there, and every forked task
inherits them; a host without ramp-workflow fails each task with an `import_error` that
says what to install, never with a traceback.

Any workflow object runs: per task, like ramp-workflow's `train_test_submission`,
`workflow.train_submission(submission/, X_train, y_train, train_idx)`, then
`workflow.test_submission` on every training row and on the test rows, each turned into
the kit's `Predictions(y_pred=...).y_pred` array, of any shape, kept in its own numeric
dtype (the kit's scores read it as ramp-test's would). Only those arrays leave the host,
as .npy without pickle; the organiser scores them.

The kit's code runs with the problem's environment (meta.json "env", from `problem add
--env`) and never with a `RAMP_*` variable of the host's own environment (RAMP_TEST_MODE
would silently change what a kit reads).
"""

import contextlib
import importlib.util
import inspect
import os
import pickle
import sys
import traceback
from pathlib import Path

from .common import tail_text
from .workflows import HARNESS_DIR, PhaseClock, TaskFailure, import_submission

RAMPWF_MISSING = ("this host lacks ramp-workflow, which RAMP problems need: "
                  "pip install ramp-workflow")
KIT_ENV_PREFIX = "RAMP_"
EXTERNAL_IMPORTS = "external_imports"
NUMBER_KINDS = "biuf"  # bool, integers, floats: what .npy carries without pickle
MAX_ITEMSIZE = 8


def apply_environment(env: dict) -> None:
    """The problem's variables in, the host's own RAMP_* variables out."""
    for name in [n for n in os.environ if n.startswith(KIT_ENV_PREFIX) and n not in env]:
        del os.environ[name]
    os.environ.update({str(k): str(v) for k, v in env.items()})


def kit_paths(kit: Path) -> list[str]:
    """What ramp-test puts on sys.path for a kit (its external_imports/), and the kit folder."""
    return [str(kit / EXTERNAL_IMPORTS), str(kit)]


@contextlib.contextmanager
def _kit_context(kit: Path, env: dict):
    """Import the kit's code with its environment and paths, then leave the runner as it was:
    the runner serves other data sets, whose kits may have modules of the same names."""
    saved_env, saved_path, before = dict(os.environ), list(sys.path), set(sys.modules)
    try:
        apply_environment(env)
        sys.path[:0] = kit_paths(kit)
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved_env)
        sys.path[:] = saved_path
        root = str(kit) + os.sep
        for name in set(sys.modules) - before:
            if (getattr(sys.modules.get(name), "__file__", None) or "").startswith(root):
                del sys.modules[name]


class RampData:
    """A RAMP data set as loaded by the runner; `error` says why its tasks cannot run."""

    def __init__(self, folder: Path, meta: dict):
        self.folder = folder
        self.meta = meta
        self.problem = None
        self.error: str | None = None
        self.error_kind = "import_error"
        self.X_train = self.y_train = self.X_test = None
        self.external: dict[str, bytes] = {}
        self.env = dict(meta.get("env") or {})
        kit = folder / meta["kit"] if meta.get("kit") else folder  # older data sets: no kit/
        self.kit = kit
        try:
            import rampwf  # noqa: F401
        except ImportError:
            self.error = RAMPWF_MISSING
            return
        try:
            self.X_train = _unpickle(folder / "X_train.pkl")
            self.y_train = _unpickle(folder / "y_train.pkl")
            self.X_test = _unpickle(folder / "X_test.pkl")
            # Read now: an isolated task may not see the data folder.
            self.external = {name: (folder / "external" / name).read_bytes()
                             for name in meta.get("external", [])}
        except Exception as error:
            self.error_kind = "harness_error"
            self.error = (f"the RAMP data set {folder.name} cannot be read on this host "
                          f"({type(error).__name__}: {error}); are its pandas and numpy "
                          "versions close to the organiser's?")
            return
        try:
            with _kit_context(kit, self.env):
                self.problem = _import_problem(kit / "problem.py", folder.name)
        except Exception as error:
            self.error = tail_text("problem.py failed to import on this host: "
                                   + "".join(traceback.format_exception_only(type(error), error)))


def _unpickle(path: Path):
    # The organiser wrote these files (organiser -> host); nothing from a host is unpickled.
    with open(path, "rb") as handle:
        return pickle.load(handle)


def _import_problem(path: Path, digest: str):
    name = "datarun_ramp_problem_" + "".join(c if c.isalnum() else "_" for c in digest)
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"{path.name} cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_ramp_data(folder: Path, meta: dict) -> RampData:
    return RampData(folder, meta)


def _skipped_dirs() -> tuple[str, ...]:
    dirs = [HARNESS_DIR, "<frozen"]
    module = sys.modules.get("rampwf")
    location = getattr(module, "__file__", None)
    if location:
        dirs.append(str(Path(location).resolve().parent))
    return tuple(dirs)


def _failure(kind: str) -> TaskFailure:
    """The current exception, with only the submission's and the kit's frames (not ours,
    not rampwf's)."""
    error = sys.exc_info()[1]
    assert error is not None, "called while an exception is handled"
    skipped = _skipped_dirs()
    frames = [frame for frame in traceback.extract_tb(error.__traceback__)
              if not frame.filename.startswith(skipped)]
    text = "Traceback (most recent call last):\n" if frames else ""
    text += "".join(traceback.format_list(frames))
    text += "".join(traceback.format_exception_only(type(error), error))
    return TaskFailure(kind, tail_text(text.replace(os.getcwd() + os.sep, "")))


def _passes_fold(workflow) -> bool:
    """ramp-workflow hands test_submission the fold when its third parameter is `fold`."""
    params = list(inspect.signature(workflow.test_submission).parameters)
    return len(params) == 3 and params[2] == "fold"


def _row_shape(task: dict, meta: dict) -> tuple[int, ...]:
    """What one row of y_pred is: () for a value, (3,) for three columns."""
    if "pred_shape" in meta:
        return tuple(int(n) for n in meta["pred_shape"])
    classes = task.get("classes")  # data sets of older registrations
    return (len(classes),) if classes else ()


def prediction_form(task: dict, meta: dict) -> tuple[tuple[int, ...], str]:
    """What the runner lets through: rows of the kit's shape, numbers of any kind."""
    return _row_shape(task, meta), NUMBER_KINDS


def _as_array(problem, y_pred, n_rows: int, row_shape: tuple[int, ...], what: str):
    import numpy as np

    try:
        array = np.asarray(problem.Predictions(y_pred=y_pred).y_pred)
    except Exception as error:
        raise TaskFailure("bad_predictions", f"the {what} predictions do not fit the kit's "
                          f"Predictions: {type(error).__name__}: {error}") from None
    if array.dtype == object:
        raise TaskFailure("bad_predictions",
                          f"the {what} predictions are Python objects (dtype object), which "
                          "cannot leave the host as .npy without pickle: predict numbers")
    if array.dtype.kind not in NUMBER_KINDS or array.dtype.itemsize > MAX_ITEMSIZE:
        raise TaskFailure("bad_predictions",
                          f"the {what} predictions have dtype {array.dtype}; predictions are "
                          "numbers of at most 8 bytes (float64, float32, int64, bool...)")
    expected = (n_rows, *row_shape)
    if array.shape != expected:
        raise TaskFailure("bad_predictions",
                          f"the {what} predictions have shape {array.shape}, expected {expected}")
    if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
        bad = int(array.size - np.count_nonzero(np.isfinite(array)))
        raise TaskFailure("bad_predictions", f"{what} predictions hold {bad} NaN or infinite values")
    return array


def run_ramp(task: dict, data, folder: Path, clock: PhaseClock) -> dict:
    """Train and test one fold with the kit's workflow; predictions as the kit's y_pred arrays."""
    import numpy as np

    ramp: RampData = data.ramp
    if ramp.error:
        raise TaskFailure(ramp.error_kind, ramp.error)
    # This process is the task's own (forked): its environment and paths are the kit's now.
    apply_environment(ramp.env)
    sys.path[:0] = kit_paths(ramp.kit)
    assert ramp.problem is not None  # set whenever ramp.error is not
    problem, workflow = ramp.problem, ramp.problem.workflow
    submission = folder / "submission"
    for name, content in ramp.external.items():
        if not (submission / name).exists():  # the kit's default copy of a data-file element
            (submission / name).write_bytes(content)

    def load():
        # Imported once here so an import fault is an import_error, and under the element's
        # name so joblib workers find the submission's classes.
        for element in ramp.meta["elements"]:
            if not Path(element).suffix:
                import_submission(submission, element)
            elif not (submission / element).is_file():
                raise TaskFailure("import_error", f"the submission has no {element}")

    clock.run("import", load)
    train_idx = getattr(data, "train_idx", None)
    if train_idx is None:
        train_idx = np.load(folder / "train_idx.npy", allow_pickle=False)
    valid_idx = np.load(folder / "valid_idx.npy", allow_pickle=False)

    def fit():
        try:
            return workflow.train_submission(str(submission), ramp.X_train, ramp.y_train,
                                             train_idx)
        except MemoryError:
            raise
        except Exception:
            raise _failure("fit_error") from None

    trained = clock.run("train", fit)
    with_fold = _passes_fold(workflow)

    def predict(X, fold):
        try:
            if with_fold:
                return workflow.test_submission(trained, X, fold)
            return workflow.test_submission(trained, X)
        except MemoryError:
            raise
        except Exception:
            raise _failure("predict_error") from None

    n_train, n_test = ramp.meta["n_train"], ramp.meta["n_test"]
    row_shape = _row_shape(task, ramp.meta)
    y_pred_train = clock.run("valid", lambda: predict(ramp.X_train, (train_idx, valid_idx)))
    train = _as_array(problem, y_pred_train, n_train, row_shape, "train")
    if ramp.X_test is None:
        test = np.empty((0, *row_shape), dtype=train.dtype)
    else:
        y_pred_test = clock.run("test", lambda: predict(ramp.X_test, None))
        test = _as_array(problem, y_pred_test, n_test, row_shape, "test")
    return {"train": train, "test": test}
