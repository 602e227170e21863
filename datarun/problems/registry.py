"""Registering problems from kits (reading them back is `datarun.problems.registered`).

Registration reads the kit's data, checks it, splits off a test set when the kit has no
test file, computes the folds once and freezes them, and stores three things through the
blob store: the *data tree* shipped to hosts (features and training labels, never the
test labels), the *labels tree* kept on the organiser's machine (training and test
labels), and the fold indices. Everything is read and checked before anything is
written, and the rows go in one transaction, so a bad kit leaves nothing behind.

Feature files are CSV written by pandas with full float precision: read by pandas 3 (or
by older pandas with `float_precision="round_trip"`) they give back the very same
float64 values.

numpy, pandas and the fold code are imported where they are used: importing this module
(the demo does, at start) costs none of them.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from datarun.errors import UsageError
from datarun.problems.kits import MEMORY_WHERE, ProblemSpec, load_kit
from datarun.problems.registered import describe_problem, get_problem
from datarun.problems.resources import environment_of, parse_environment, parse_resources
from datarun.store.blobs import BlobStore

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    # Annotations only: `datarun owner prepare` runs this module's preparation on the data
    # owner's server, which needs neither the workspace nor sqlite-utils.
    from datarun.store.workspace import Workspace


def _exact_csv_options() -> dict:
    # pandas 3 parses floats exactly by default and deprecates the option; before 3 the
    # default parser may be off by one bit, so ask for round-trip parsing explicitly.
    import pandas as pd

    return {} if int(pd.__version__.split(".")[0]) >= 3 else {"float_precision": "round_trip"}
DATA_FILES = ("X_train.npy", "y_train.npy", "X_test.npy", "meta.json")  # numeric features
CSV_DATA_FILES = ("X_train.csv", "y_train.npy", "X_test.csv", "meta.json")  # any other


@dataclass
class PreparedData:
    X_train: pd.DataFrame
    X_test: object
    y_train: np.ndarray
    y_test: np.ndarray
    classes: list | None
    folds: list[tuple[np.ndarray, np.ndarray]]


def read_table(path: Path, what: str):
    """A DataFrame from a CSV or parquet file; UsageError naming the file otherwise."""
    import pandas as pd

    csv_options = _exact_csv_options()
    if not path.is_file():
        raise UsageError(f"{what} file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        try:
            frame = pd.read_csv(path, **csv_options)
        except pd.errors.EmptyDataError:
            raise UsageError(f"{what} file {path.name} is empty") from None
        except (pd.errors.ParserError, UnicodeDecodeError) as error:
            message = " ".join(str(error).split())
            raise UsageError(f"{what} file {path.name} is not readable CSV: {message}") from None
    elif suffix in (".parquet", ".pq"):
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise UsageError(
                f"{what} file {path.name} is parquet, which needs pyarrow: "
                "pip install 'datarun[parquet]'"
            ) from None
        try:
            frame = pd.read_parquet(path)
        except (OSError, ValueError) as error:
            message = " ".join(str(error).split())
            raise UsageError(f"{what} file {path.name} is not readable parquet: {message}") from None
    else:
        raise UsageError(f"{what} file {path.name}: use a .csv or .parquet file")
    if len(frame) == 0:
        raise UsageError(f"{what} file {path.name} is empty: it has no rows")
    return frame


def _labels(frame, target: str, kind: str, what: str) -> np.ndarray:
    import numpy as np

    column = frame[target]
    if column.isna().any():
        raise UsageError(f"{what}: target column {target!r} has missing values")
    if kind == "regression":
        import pandas as pd

        if not pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column):
            raise UsageError(f"{what}: target column {target!r} must be numeric for a regression problem")
        return column.to_numpy(dtype=np.float64)
    values = column.to_numpy()
    if values.dtype.kind in "iu":
        return values.astype(np.int64)
    if values.dtype.kind == "f":
        if not np.all(np.equal(np.mod(values, 1), 0)):
            raise UsageError(f"{what}: target column {target!r} holds fractional numbers: "
                             "a classification target needs class labels (use kind = \"regression\"?)")
        return values.astype(np.int64)
    # Strings (and anything else) become a fixed-width unicode array: never object dtype,
    # so labels load with allow_pickle=False.
    return np.asarray([str(v) for v in values], dtype=str)


def _features(frame, spec: ProblemSpec, what: str):
    missing = [c for c in spec.drop if c not in frame.columns]
    if missing:
        raise UsageError(f"{what}: [data] drop names column {missing[0]!r}, which the data lacks")
    features = frame.drop(columns=[spec.target, *spec.drop])
    if features.shape[1] == 0:
        raise UsageError(f"{what}: no feature columns left after the target and [data] drop")
    return features


def prepare_data(spec: ProblemSpec) -> PreparedData:
    """Read, check and split the kit's data; compute the folds. Writes nothing."""
    import numpy as np

    from datarun.problems.cv import make_folds, split_test, test_split_method
    train_name = spec.train
    train = read_table(spec.train_path, "[data] train")
    if spec.target not in train.columns:
        raise UsageError(
            f"{train_name}: target column {spec.target!r} not found "
            f"(columns: {', '.join(map(str, train.columns[:20]))})"
        )
    if spec.test_path is not None:
        assert spec.test is not None  # test_path is test's path
        test = read_table(spec.test_path, "[data] test")
        if list(test.columns) != list(train.columns):
            missing = [c for c in train.columns if c not in test.columns]
            extra = [c for c in test.columns if c not in train.columns]
            detail = (f"missing {missing}" if missing else "") + (
                (", " if missing and extra else "") + (f"extra {extra}" if extra else ""))
            raise UsageError(
                f"{spec.test}: columns differ from {train_name}: {detail or 'same names, other order'}"
            )
        y_train = _labels(train, spec.target, spec.kind, train_name)
        y_test = _labels(test, spec.target, spec.kind, spec.test)
        X_train, X_test = _features(train, spec, train_name), _features(test, spec, spec.test)
    else:
        assert spec.test_size is not None  # the kit parser sets a default without a test file
        y_all = _labels(train, spec.target, spec.kind, train_name)
        method = test_split_method(spec.kind, spec.cv_strategy)
        rows_train, rows_test = split_test(
            len(train), spec.test_size, spec.seed,
            y_all if method == "stratified-shuffle" else None,
            ordered=method == "last-rows",
        )
        features = _features(train, spec, train_name)
        X_train = features.iloc[rows_train].reset_index(drop=True)
        X_test = features.iloc[rows_test].reset_index(drop=True)
        y_train, y_test = y_all[rows_train], y_all[rows_test]
    classes = None
    if spec.kind == "classification":
        classes_array = np.unique(y_train)
        unseen = np.setdiff1d(np.unique(y_test), classes_array)
        if len(unseen):
            raise UsageError(f"the test data has class {unseen[0].item()!r}, which the training data lacks")
        if len(classes_array) < 2:
            raise UsageError(f"{train_name}: the target has one class only; classification needs two or more")
        classes = classes_array.tolist()
    folds = make_folds(spec.cv_strategy, spec.n_splits, spec.seed, spec.cv_test_size, y_train)
    return PreparedData(X_train, X_test, y_train, y_test, classes, folds)


def _write_csv(frame, path: Path) -> None:
    # pandas writes floats with repr(), the shortest text that reads back to the same bits.
    frame.to_csv(path, index=False)


def binary_table(frame) -> bool:
    """Whether a feature table is stored as one .npy array: when all its columns share one
    numeric dtype (float64 or int64), the array reads back, without parsing, as the very
    frame a CSV would give (same values bit for bit, same dtypes, same names). Other
    tables (strings, mixed dtypes) stay CSV."""
    import numpy as np

    dtypes = {dtype for dtype in frame.dtypes}
    return len(frame.columns) > 0 and len(dtypes) == 1 and next(iter(dtypes)) in (
        np.dtype(np.float64), np.dtype(np.int64))


def write_table(frame, folder: Path, name: str) -> str:
    """Write a feature table of the data tree as NAME.npy (see binary_table) or NAME.csv;
    the file's name. The harness (remote/child.DataSet) reads either."""
    import numpy as np

    if binary_table(frame):
        np.save(folder / f"{name}.npy", np.ascontiguousarray(frame.to_numpy()), allow_pickle=False)
        return f"{name}.npy"
    _write_csv(frame, folder / f"{name}.csv")
    return f"{name}.csv"


def write_data_tree(spec: ProblemSpec, data: PreparedData, folder: Path) -> None:
    """The folder shipped to hosts (docs/PROTOCOL.md, data/<data-hash>/): no test labels."""
    import numpy as np

    write_table(data.X_train, folder, "X_train")
    write_table(data.X_test, folder, "X_test")
    np.save(folder / "y_train.npy", data.y_train, allow_pickle=False)
    meta = {
        "kind": spec.kind, "classes": data.classes, "target": spec.target,
        "n_train": len(data.y_train), "n_test": len(data.y_test),
        "columns": [str(c) for c in data.X_train.columns],
    }
    (folder / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")


def _refuse_registered(db, name: str, fix: str = "pick another name in problem.toml") -> None:
    if db.execute("SELECT 1 FROM problems WHERE name = ?", [name]).fetchone():
        raise UsageError(f"problem {name!r} is already registered: {fix}")
    # A problem's default event takes the problem's name, so the name must be free there too.
    if "events" in db.table_names() and db.execute("SELECT 1 FROM events WHERE name = ?", [name]).fetchone():
        raise UsageError(f"{name!r} is already the name of an event: {fix}")


def store_problem(workspace: Workspace, db, name: str, write_data, y_train, y_test, folds,
                  make_row, refuse_fix: str = "pick another name in problem.toml") -> None:
    """Store a checked problem: its data tree (what hosts get, written by
    `write_data(folder)`), its labels tree (what they never get), its folds, and its row,
    built by `make_row(data_hash, labels_hash)`."""
    import numpy as np

    with tempfile.TemporaryDirectory(prefix="datarun-kit-") as tmp:
        data_folder, labels_folder = Path(tmp, "data"), Path(tmp, "labels")
        data_folder.mkdir()
        labels_folder.mkdir()
        write_data(data_folder)
        np.save(labels_folder / "y_train.npy", y_train, allow_pickle=False)
        np.save(labels_folder / "y_test.npy", y_test, allow_pickle=False)
        store_prepared(workspace, db, name, data_folder, labels_folder, folds, make_row,
                       refuse_fix)


def store_prepared(workspace: Workspace, db, name: str, data_folder: Path, labels_folder: Path,
                   folds, make_row, refuse_fix: str = "pick another name in problem.toml") -> None:
    """Store a problem whose data and labels trees are written already.

    Raw SQL inside one explicit transaction: the problem and its folds are stored together
    or not at all. The blobs written first are content-addressed and harmless if the
    transaction fails: nothing refers to them.
    """
    store = BlobStore(workspace.blobs_dir)
    data_hash = store.put_tree(data_folder)
    labels_hash = store.put_tree(labels_folder)
    fold_rows = [
        (name, fold, store.put_array(train), store.put_array(valid), len(train), len(valid))
        for fold, (train, valid) in enumerate(folds)
    ]
    row = make_row(data_hash, labels_hash)
    with db.conn:
        db.conn.execute("BEGIN IMMEDIATE")
        _refuse_registered(db, name, refuse_fix)
        db.conn.execute(
            "INSERT INTO problems (name, title, kind, workflow, spec, data_hash, labels_hash, "
            "n_train, n_test, n_features, classes, score_names, limits, kit_path, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", row)
        db.conn.executemany(
            "INSERT INTO folds (problem, fold, train_hash, valid_hash, n_train, n_valid) "
            "VALUES (?, ?, ?, ?, ?, ?)", fold_rows)


def register_problem(workspace: Workspace, db, kit_dir: Path, env: dict[str, str] | None = None,
                     data_file_cap: int | None = None, prepared=None, needs: dict | None = None,
                     check_memory: Callable[[int, str], object] | None = None) -> dict:
    """Register a kit (native, or RAMP with problem.py); return the problem's summary.

    `env` (variables the kit's code reads) and `data_file_cap` (the size cap of a
    submission's data files) are for RAMP kits: a problem.toml kit runs no code of its own
    and its estimator workflow takes no data files. `prepared()`: the folder where
    `rampdata.prepare_kit` read the RAMP kit in another process, or None to read it here.
    `needs` (from `problem add --needs`) sets what a host must offer the problem's tasks,
    over the kit's own `[resources]` key by key; it is checked before any data is read.
    `check_memory(limit, where)` refuses a memory limit below the hosts' floor (what an
    empty task measures there: `datarun.executors.floors`), before any data is read.
    """
    from datarun.problems.rampdata import register_ramp_problem
    from datarun.problems.rampkit import is_ramp_kit

    if needs:
        parse_resources(needs, "--needs")
    if is_ramp_kit(kit_dir):
        environment = parse_environment(None, kit_dir)  # the kit's requirements.txt, checked first
        info = register_ramp_problem(workspace, db, kit_dir, env, data_file_cap, prepared)
        from datarun.store.problems import set_spec_keys

        set_spec_keys(db, info["name"], {"environment": environment})
        info["environment"] = environment_of(get_problem(db, info["name"]))
        if needs:
            info.update(_with_needs(workspace, db, info["name"], needs))  # its notes kept
        return info
    if env:
        raise UsageError("--env is for RAMP kits (problem.py), whose code reads its environment: "
                         f"{Path(kit_dir).name} is a problem.toml kit, which runs no code of its own")
    if data_file_cap is not None:
        raise UsageError("--data-file-cap is for RAMP kits (problem.py), whose workflows may take "
                         f"data files: {Path(kit_dir).name} is a problem.toml kit, whose estimator "
                         "workflow takes estimator.py only")
    spec = load_kit(kit_dir)
    _refuse_registered(db, spec.name)
    if check_memory is not None and spec.limits.memory:
        check_memory(spec.limits.memory, MEMORY_WHERE)
    data = prepare_data(spec)
    store_problem(
        workspace, db, spec.name, lambda folder: write_data_tree(spec, data, folder),
        data.y_train, data.y_test, data.folds,
        lambda data_hash, labels_hash: (
            spec.name, spec.title, spec.kind, spec.workflow, json.dumps(spec.to_dict()),
            data_hash, labels_hash, len(data.y_train), len(data.y_test), data.X_train.shape[1],
            None if data.classes is None else json.dumps(data.classes),
            json.dumps(list(spec.score_names)), json.dumps(spec.limits.to_dict()),
            str(spec.kit_dir), time.time(),
        ))
    return _with_needs(workspace, db, spec.name, needs) if needs else describe_problem(workspace, db, spec.name)


def _with_needs(workspace: Workspace, db, name: str, needs: dict) -> dict:
    from datarun.store.problems import set_spec_keys

    table = {key: value for key, value in get_problem(db, name)["spec"].get("resources", {}).items()
             if value not in (None, [], 0)}
    table.update(needs)
    set_spec_keys(db, name, {"resources": parse_resources(table, "--needs").to_dict()})
    return describe_problem(workspace, db, name)
