"""Checking what comes back from a host before any of it is believed.

A host is not trusted: its `result.json` is size-capped and validated field by field,
and its predictions are `.npy` files loaded with `allow_pickle=False`. A result that
cannot be read as one (missing, oversized, pickled, not numbers, a bad field) is not an
error of the submission: the task is recorded as `harness_error` with what was wrong.
Predictions that are read but are not valid predictions for the problem (the wrong
shape, NaN or infinite values, class probabilities outside [0, 1] or rows not summing to
one: `datarun.remote.scoring.predictions`, the check the harness makes) are `bad_predictions`,
as the harness would have recorded them: a host that skipped its check changes nothing.

Before any of that, a result must be the answer of the attempt it is taken for: it must
carry the nonce that attempt was sent with (task.json's, copied by the harness). One that
does not (another attempt's, another workspace's, or planted) is `ResultNotOurs`: the
dispatcher refuses it, records why, and treats the attempt as lost on its host.
"""

import hmac
import json
import math
from dataclasses import dataclass
from pathlib import Path

from datarun.remote.common import ERROR_KINDS

MAX_RESULT_BYTES = 256 * 1024
MAX_LOG_BYTES = 4 * 1024 * 1024
MAX_ERROR_CHARS = 4000
MEASURED_BY = ("cgroup-v1", "cgroup-v2", "procfs")
NUMBER_FIELDS = ("train_time", "valid_time", "test_time", "wall_time", "cpu_time", "peak_memory",
                 "started_at", "finished_at")


class ResultRejected(Exception):
    """What came back from a host is not a valid result."""


class ResultNotOurs(ResultRejected):
    """A result.json that is not the answer of the attempt it was collected for."""


def check_nonce(data: dict, nonce: str | None) -> None:
    """Refuse a result that does not carry the nonce its attempt was sent with."""
    if nonce is None:
        raise ResultNotOurs("no nonce is known for this attempt, so no result can be taken for it")
    theirs = data.get("nonce")
    if not isinstance(theirs, str):
        raise ResultNotOurs("result.json carries no nonce: it is not this attempt's result")
    if not hmac.compare_digest(theirs.encode(), nonce.encode()):
        raise ResultNotOurs("result.json carries another attempt's nonce: it is not this attempt's result")


class BadPredictions(ResultRejected):
    """The result is readable, but its predictions are not valid for the problem.

    `result` is the rest of it (measures, environment, log), set by `read_result`."""

    result: "TaskResult | None" = None


@dataclass
class TaskResult:
    state: str  # done | failed
    error_kind: str | None
    error: str | None
    measures: dict  # NUMBER_FIELDS -> float | None
    environment: dict
    y_pred_train: object = None  # np.ndarray for done tasks
    y_pred_test: object = None
    log: bytes = b""


def _number(value, field: str):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise ResultRejected(f"result.json field {field} is not a non-negative number: {value!r}")
    return float(value)


def _load_predictions(path: Path, expected_shape: tuple[int, ...], classification: bool,
                      keep_dtype: bool = False):
    """The array, checked; as float64 unless `keep_dtype` (a RAMP kit scores the kit's own
    y_pred dtype, bool, integers or floats, as ramp-test does)."""
    import numpy as np

    from datarun.remote.scoring.predictions import prediction_fault

    if not path.is_file() or path.is_symlink():
        raise ResultRejected(f"{path.name} is missing")
    n_values = 1
    for dim in expected_shape:
        n_values *= dim
    if path.stat().st_size > n_values * 8 + 4096:
        raise ResultRejected(f"{path.name} is {path.stat().st_size} bytes, more than {expected_shape} floats need")
    with open(path, "rb") as f:
        if f.read(6) != b"\x93NUMPY":
            raise ResultRejected(f"{path.name} is not a .npy file")
    try:
        array = np.load(path, allow_pickle=False)
    except ValueError as error:
        if "allow_pickle" in str(error) or "pickled" in str(error):
            raise ResultRejected(f"{path.name} holds pickled objects, which datarun never loads") from None
        raise ResultRejected(f"{path.name} is truncated or damaged ({error})") from None
    except Exception as error:  # truncated or garbage file
        raise ResultRejected(f"{path.name} is not a readable .npy file ({type(error).__name__})") from None
    kinds = "biuf" if keep_dtype else "fiu"
    if (not isinstance(array, np.ndarray) or array.dtype.kind not in kinds
            or array.dtype.itemsize > 8):
        raise ResultRejected(f"{path.name} holds {getattr(array, 'dtype', type(array))}, not numbers")
    if array.shape != expected_shape:
        raise BadPredictions(f"{path.name} has shape {array.shape}, expected {expected_shape}")
    if not keep_dtype:
        array = array.astype("float64", copy=False)
    fault = prediction_fault(array, classification)
    if fault:
        raise BadPredictions(f"{path.name}, {fault}")
    return array



def _result_json(path: Path, nonce: str | None, cap: int, too_big) -> dict:
    """A result.json read as a JSON object of the attempt `nonce`, refused over `cap` bytes
    (with the error `too_big(size)`) or when missing, linked or not an object."""
    if not path.is_file() or path.is_symlink():
        raise ResultRejected("result.json is missing")
    size = path.stat().st_size
    if size > cap:
        raise too_big(size)
    try:
        data = json.loads(path.read_bytes())
    except (ValueError, UnicodeDecodeError):
        raise ResultRejected("result.json is not valid JSON (truncated?)") from None
    if not isinstance(data, dict):
        raise ResultRejected("result.json is not a JSON object")
    check_nonce(data, nonce)
    return data

# What a result's environment may say of its host (the harness's `common.environment`):
# other keys are dropped, so what the organiser keeps and prints is what docs/JSON.md names.
ENVIRONMENT_KEYS = ("hostname", "python", "numpy", "pandas", "sklearn", "psutil", "harness")


def host_environment(environment: dict) -> dict[str, str | None]:
    return {key: None if environment.get(key) is None else str(environment[key])[:200]
            for key in ENVIRONMENT_KEYS if key in environment}


def _outcome(data: dict, key: str) -> tuple[str, str | None]:
    """(state, error_kind) of a result.json that is task `key`'s, done or failed with a
    known kind (the harness's kinds: host_lost is the organiser's)."""
    if data.get("key") != key:
        raise ResultRejected(f"result.json is for task {data.get('key')!r}, not {key!r}")
    state = data.get("state")
    if state not in ("done", "failed"):
        raise ResultRejected(f"result.json state is {state!r}, not done or failed")
    error_kind = data.get("error_kind")
    if state == "failed" and error_kind not in ERROR_KINDS:
        raise ResultRejected(f"result.json error_kind {error_kind!r} is not a known kind")
    return state, error_kind


def _environment(data: dict) -> dict[str, str | None]:
    """Where the task ran (the keys docs/JSON.md names), and how the harness measured it
    and whether it ran sandboxed, kept with it."""
    environment = data.get("environment") or {}
    if not isinstance(environment, dict):
        raise ResultRejected("result.json environment is not an object")
    environment = host_environment(environment)
    if data.get("measured_by") in MEASURED_BY:
        environment["measured_by"] = data["measured_by"]
    if data.get("isolation") in ("sandbox", "none"):
        environment["isolation"] = data["isolation"]
    return environment


def read_result(folder: Path, key: str, shape_train: tuple[int, ...], shape_test: tuple[int, ...],
                nonce: str | None, probabilities: bool = False, keep_dtype: bool = False) -> TaskResult:
    """Validate and load the result folder of task `key`, sent with `nonce`; raise
    ResultNotOurs if it is not that attempt's, BadPredictions if only its predictions are
    off, ResultRejected if anything else is. `probabilities`: the predictions must be class
    probabilities (a native classification problem); else only finite numbers. `keep_dtype`:
    predictions in their own numeric dtype (RAMP kits), else float64."""
    data = _result_json(Path(folder) / "result.json", nonce, MAX_RESULT_BYTES, lambda size: ResultRejected(
        f"result.json is {size} bytes, over the {MAX_RESULT_BYTES} cap"))
    state, error_kind = _outcome(data, key)
    error = data.get("error")
    if error is not None and not isinstance(error, str):
        raise ResultRejected("result.json error is not text")
    environment = _environment(data)
    measures = {field: _number(data.get(field), field) for field in NUMBER_FIELDS}
    result = TaskResult(
        state=state,
        error_kind=error_kind if state == "failed" else None,
        error=error[-MAX_ERROR_CHARS:] if error else None,
        measures=measures,
        environment=environment,
    )
    log = Path(folder) / "output.log"
    if log.is_file() and not log.is_symlink():
        with open(log, "rb") as f:
            result.log = f.read(MAX_LOG_BYTES)
    if state == "done":
        try:
            result.y_pred_train = _load_predictions(Path(folder) / "y_pred_train.npy",
                                                    shape_train, probabilities, keep_dtype)
            result.y_pred_test = _load_predictions(Path(folder) / "y_pred_test.npy",
                                                   shape_test, probabilities, keep_dtype)
        except BadPredictions as bad:
            bad.result = result
            raise
    return result


# --- a sensitive problem's result: numbers only ---------------------------------------------

MAX_SEALED_BYTES = 16 * 1024  # datarun.remote.sensitive.MAX_SEALED_BYTES
MAX_SEALED_ERROR = 300
SEALED_KEYS = {"key", "nonce", "state", "error_kind", "error", "scores", "sealed", "environment",
               "measured_by", "isolation", *NUMBER_FIELDS}
SPLITS = ("train", "valid", "test")


class SensitiveLeak(ResultRejected):
    """A sensitive host sent more than a sealed result: files, or fields beyond numbers."""


def check_scores(value, score_names: list[str]) -> list[tuple[str, str, float | None]]:
    if not isinstance(value, list) or len(value) > len(SPLITS) * len(score_names):
        raise SensitiveLeak("its scores are not a list of at most one score per split and score name")
    rows, seen = [], set()
    for row in value:
        if (not isinstance(row, list) or len(row) != 3 or row[0] not in SPLITS or row[1] not in score_names
                or (row[0], row[1]) in seen):
            raise SensitiveLeak(f"its scores hold {str(row)[:60]!r}, not [split, score name, number]")
        seen.add((row[0], row[1]))
        score = row[2]
        if score is not None and (isinstance(score, bool) or not isinstance(score, int | float)
                                  or not math.isfinite(score)):
            raise SensitiveLeak(f"its {row[0]} {row[1]} is {str(score)[:40]!r}, not a number")
        rows.append((row[0], row[1], None if score is None else float(score)))
    return rows


def read_sealed_result(folder: Path, key: str, nonce: str | None,
                       score_names: list[str]) -> tuple[TaskResult, list[tuple[str, str, float | None]]]:
    """A sensitive problem's result: result.json alone, small, every field a number (or the
    few short texts the host's seal allows), scored on the host. Anything more (a prediction
    file, the task's output, an oversized or unknown field) is refused, naming what it was:
    a sensitive host never sends the organiser predictions or data."""
    folder = Path(folder)
    extra = sorted(p.name for p in folder.iterdir() if p.name != "result.json") if folder.is_dir() else []
    if extra:
        raise SensitiveLeak(f"it sent {', '.join(extra)[:200]} beside result.json; a sensitive problem's "
                            "host sends its sealed result.json alone")
    data = _result_json(folder / "result.json", nonce, MAX_SEALED_BYTES, lambda size: SensitiveLeak(
        f"its result.json is {size} bytes, over the {MAX_SEALED_BYTES} of a sealed result"))
    unknown = sorted(set(data) - SEALED_KEYS)
    if unknown or data.get("sealed") is not True:
        raise SensitiveLeak(f"its result.json is not sealed by the host (fields {', '.join(unknown)[:120] or 'sealed'})")
    state, error_kind = _outcome(data, key)
    error = data.get("error")
    if error is not None and (not isinstance(error, str) or len(error) > MAX_SEALED_ERROR):
        raise SensitiveLeak(f"its error text is not a short text (at most {MAX_SEALED_ERROR} characters)")
    environment = _environment(data)
    scores = check_scores(data.get("scores") or [], score_names)
    if state == "done" and not scores:
        raise ResultRejected("a done task's sealed result carries no scores")
    result = TaskResult(state=state, error_kind=error_kind if state == "failed" else None,
                        error=error, measures={f: _number(data.get(f), f) for f in NUMBER_FIELDS},
                        environment=environment)
    return result, scores if state == "done" else []
