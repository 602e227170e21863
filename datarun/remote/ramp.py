"""RAMP workflows on a host: the kit's own problem.py runs the submission, as ramp-test does.

A RAMP data set (`meta.json` with `"format": "ramp"`) holds what the organiser made:
`X_train.pkl`, `y_train.pkl`, `X_test.pkl` (the objects the kit's `get_train_data` and
`get_test_data` returned; `X_test` is None when the kit has no test data), the kit's
`problem.py` and `external/<file>` for data-file elements. The runner loads it once per
data hash, imports ramp-workflow and problem.py there, and every forked task inherits
them; a host without ramp-workflow fails each task with an `import_error` that says what
to install, never with a traceback.

Per task, like ramp-workflow's `train_test_submission`: `workflow.train_submission` on
the fold's training indices, then `workflow.test_submission` on every training row and on
the test rows, each turned into the kit's `Predictions(y_pred=...).y_pred` array. Only
those float arrays leave the host (as .npy); the organiser scores them.
"""

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
            self.problem = _import_problem(folder / "problem.py", folder.name)
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
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_ramp_data(folder: Path, meta: dict) -> RampData:
    return RampData(folder, meta)


def _skipped_dirs() -> tuple[str, ...]:
    dirs = [HARNESS_DIR, "<frozen"]
    module = sys.modules.get("rampwf")
    if module is not None and getattr(module, "__file__", None):
        dirs.append(str(Path(module.__file__).resolve().parent))
    return tuple(dirs)


def _failure(kind: str) -> TaskFailure:
    """The current exception, with only the submission's frames (not ours, not rampwf's)."""
    error = sys.exc_info()[1]
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


def _as_array(task: dict, problem, y_pred, n_rows: int, what: str):
    import numpy as np

    classes = task.get("classes")
    expected = (n_rows, len(classes)) if classes else (n_rows,)
    try:
        array = np.asarray(problem.Predictions(y_pred=y_pred).y_pred, dtype=np.float64)
    except Exception as error:
        raise TaskFailure("bad_predictions", f"the {what} predictions do not fit the kit's "
                          f"Predictions: {type(error).__name__}: {error}") from None
    if array.shape != expected:
        raise TaskFailure("bad_predictions",
                          f"the {what} predictions have shape {array.shape}, expected {expected}")
    if not np.all(np.isfinite(array)):
        bad = int(array.size - np.count_nonzero(np.isfinite(array)))
        raise TaskFailure("bad_predictions", f"{what} predictions hold {bad} NaN or infinite values")
    return array


def run_ramp(task: dict, data, folder: Path, clock: PhaseClock) -> dict:
    """Train and test one fold with the kit's workflow; predictions in the protocol's shapes."""
    import numpy as np

    ramp: RampData = data.ramp
    if ramp.error:
        raise TaskFailure(ramp.error_kind, ramp.error)
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
    y_pred_train = clock.run("valid", lambda: predict(ramp.X_train, (train_idx, valid_idx)))
    train = _as_array(task, problem, y_pred_train, n_train, "train")
    if ramp.X_test is None:
        classes = task.get("classes")
        test = np.empty((0, len(classes)) if classes else (0,), dtype=np.float64)
    else:
        y_pred_test = clock.run("test", lambda: predict(ramp.X_test, None))
        test = _as_array(task, problem, y_pred_test, n_test, "test")
    return {"train": train, "test": test}
