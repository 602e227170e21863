"""Workflows: how a submission's files become predictions, one per task.json "workflow".

A workflow runs inside the task's child process: it imports the submission, fits on the
fold's training rows, predicts every training row and the test rows, and returns the
predictions in the protocol's shape. It raises TaskFailure with an error kind when the
submission is at fault. RAMP kits run under "ramp" (ramp.py); registry.py maps the names.
"""

import importlib.util
import os
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from .common import tail_text


class TaskFailure(Exception):
    def __init__(self, kind: str, text: str):
        super().__init__(text)
        self.kind = kind
        self.text = text


class PhaseClock:
    """Wall time per phase, and the current phase told to the runner (`note(phase)`)."""

    def __init__(self, note: Callable[[str], None] | None = None):
        self.note = note
        self.times: dict[str, float] = {}

    def run(self, phase: str, action: Callable):
        if self.note is not None:
            try:
                self.note(phase)
            except OSError:
                pass
        start = time.perf_counter()
        try:
            return action()
        finally:
            self.times[phase] = time.perf_counter() - start


HARNESS_DIR = str(Path(__file__).resolve().parent)


def _failure(kind: str) -> TaskFailure:
    """The current exception's traceback, without the harness's and importlib's frames."""
    error = sys.exc_info()[1]
    if error is None:  # called outside an except block: nothing to tell
        return TaskFailure(kind, "")
    frames = [frame for frame in traceback.extract_tb(error.__traceback__)
              if not frame.filename.startswith((HARNESS_DIR, "<frozen"))]
    text = "".join(["Traceback (most recent call last):\n"] if frames else [])
    text += "".join(traceback.format_list(frames))
    text += "".join(traceback.format_exception_only(type(error), error))
    # Paths relative to the task folder (the child's cwd): "submission/estimator.py".
    text = text.replace(os.getcwd() + os.sep, "")
    return TaskFailure(kind, tail_text(text))


def import_submission(folder: Path, module: str):
    """Import submission/<module>.py; any failure while importing is an import_error."""
    path = folder / f"{module}.py"
    if not path.is_file():
        raise TaskFailure("import_error", f"the submission has no {module}.py")
    # Under its own name and with its folder on sys.path, as a plain `import estimator`
    # would do: joblib's worker processes re-import the submission's functions by name.
    sys.path.insert(0, str(folder))
    spec = importlib.util.spec_from_file_location(module, path)
    if spec is None or spec.loader is None:
        raise TaskFailure("import_error", f"{module}.py cannot be imported as a module")
    loaded = importlib.util.module_from_spec(spec)
    sys.modules[module] = loaded
    try:
        spec.loader.exec_module(loaded)
    except MemoryError:
        raise
    except BaseException as error:  # SyntaxError, ImportError, SystemExit, anything at import
        if isinstance(error, KeyboardInterrupt):
            raise
        raise _failure("import_error") from None
    return loaded


def _as_key(value):
    """A label as JSON sees it, so numpy labels compare with task.json's classes."""
    return value.item() if hasattr(value, "item") else value


def _probabilities(task: dict, estimator, proba, n_rows: int, np):
    classes = task["classes"]
    try:
        proba = np.asarray(proba, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise TaskFailure("bad_predictions", f"predict_proba returned non-numbers: {error}") from None
    if proba.ndim != 2 or proba.shape[0] != n_rows:
        raise TaskFailure(
            "bad_predictions",
            f"predict_proba returned shape {proba.shape}, expected ({n_rows}, n_classes)")
    fitted = getattr(estimator, "classes_", None)
    if fitted is None:
        if proba.shape[1] != len(classes):
            raise TaskFailure(
                "bad_predictions",
                f"predict_proba returned {proba.shape[1]} columns for {len(classes)} classes "
                "and the estimator has no classes_")
        return proba
    fitted = [_as_key(c) for c in np.asarray(fitted).ravel()]
    if len(fitted) != proba.shape[1]:
        raise TaskFailure(
            "bad_predictions",
            f"predict_proba returned {proba.shape[1]} columns but classes_ has {len(fitted)}")
    position = {_as_key(c): i for i, c in enumerate(classes)}
    unknown = [c for c in fitted if c not in position]
    if unknown:
        raise TaskFailure("bad_predictions", f"the estimator predicts unknown classes {unknown}")
    # A fold may lack a class: its column stays zero.
    ordered = np.zeros((n_rows, len(classes)), dtype=np.float64)
    for column, label in enumerate(fitted):
        ordered[:, position[label]] = proba[:, column]
    return ordered


def _values(pred, n_rows: int, np):
    try:
        pred = np.asarray(pred, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise TaskFailure("bad_predictions", f"predict returned non-numbers: {error}") from None
    if pred.ndim == 2 and pred.shape[1] == 1:
        pred = pred[:, 0]
    if pred.shape != (n_rows,):
        raise TaskFailure(
            "bad_predictions", f"predict returned shape {pred.shape}, expected ({n_rows},)")
    return pred


def _predict(task: dict, estimator, X, np):
    if task["kind"] == "classification":
        return _probabilities(task, estimator, estimator.predict_proba(X), len(X), np)
    return _values(estimator.predict(X), len(X), np)


def _check_predictions(task: dict, name: str, pred) -> None:
    """The one check of datarun/remote/scoring/predictions.py, which the organiser runs
    again on what comes back. Imported here, not at the top, so that reading this module
    needs no numpy; the runner imports it before any fork (startup.serve), since a
    sandboxed task cannot import from disk."""
    from .scoring.predictions import prediction_fault

    fault = prediction_fault(pred, task["kind"] == "classification")
    if fault:
        raise TaskFailure("bad_predictions", f"{name} predictions, {fault}")


def run_estimator(task: dict, data, folder: Path, clock: PhaseClock) -> dict:
    """estimator.py defines get_estimator() -> an object with fit and predict(_proba)."""
    import numpy as np

    module = clock.run("import", lambda: import_submission(folder / "submission", "estimator"))
    if not callable(getattr(module, "get_estimator", None)):
        raise TaskFailure("import_error", "estimator.py does not define get_estimator()")
    train_idx = data.train_idx

    def fit():
        try:
            estimator = module.get_estimator()
            estimator.fit(data.X_train.iloc[train_idx], data.y_fit)
        except MemoryError:
            raise
        except Exception:
            raise _failure("fit_error") from None
        return estimator

    estimator = clock.run("train", fit)

    def predict(X):
        try:
            return _predict(task, estimator, X, np)
        except (TaskFailure, MemoryError):
            raise
        except Exception:
            raise _failure("predict_error") from None

    predictions = {
        "train": clock.run("valid", lambda: predict(data.X_train)),
        "test": clock.run("test", lambda: predict(data.X_test)),
    }
    for name, pred in predictions.items():
        _check_predictions(task, name, pred)
    return predictions

