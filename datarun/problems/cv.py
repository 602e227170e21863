"""Cross-validation folds and the held-out test split, computed once per problem.

Folds are made with scikit-learn's splitters and the kit's seed when a problem is
registered, then frozen as index arrays: every submission of a problem is trained on the
same rows, which is what comparing and blending submissions needs. scikit-learn's own
complaints (a class too small for the folds asked) become one-line UsageErrors that say
which setting to change.
"""

import numpy as np

from datarun.errors import UsageError

KIT = "problem.toml"


def _check_class_sizes(y: np.ndarray, needed: int, what: str, fix: str) -> None:
    values, counts = np.unique(y, return_counts=True)
    smallest = int(np.argmin(counts))
    if counts[smallest] < needed:
        raise UsageError(
            f"{what} needs at least {needed} rows of each class, but class "
            f"{values[smallest].item()!r} has {counts[smallest]} in the training data: {fix}"
        )


def make_splitter(strategy: str, n_splits: int, seed: int, test_size: float | None):
    from sklearn import model_selection as ms

    if strategy == "kfold":
        return ms.KFold(n_splits=n_splits, shuffle=True, random_state=seed)
    if strategy == "stratified-kfold":
        return ms.StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    if strategy == "shuffle-split":
        return ms.ShuffleSplit(n_splits=n_splits, test_size=test_size, random_state=seed)
    if strategy == "stratified-shuffle-split":
        return ms.StratifiedShuffleSplit(n_splits=n_splits, test_size=test_size, random_state=seed)
    if strategy == "time-series":
        return ms.TimeSeriesSplit(n_splits=n_splits)
    raise UsageError(f"{KIT}: unknown [cv] strategy {strategy!r}")


def make_folds(strategy: str, n_splits: int, seed: int, test_size: float | None,
               y: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """The (train_idx, valid_idx) int64 pairs of the training rows, in fold order."""
    n_rows = len(y)
    lower = f"lower [cv] n_splits (now {n_splits})"
    if strategy in ("kfold", "stratified-kfold") and n_splits > n_rows:
        raise UsageError(f"{KIT}: [cv] n_splits = {n_splits} is more than the {n_rows} training rows: {lower}")
    if strategy == "time-series" and n_splits >= n_rows:
        raise UsageError(f"{KIT}: [cv] n_splits = {n_splits} needs more than {n_splits} training rows "
                         f"for time-series, there are {n_rows}: {lower}")
    if strategy == "stratified-kfold":
        _check_class_sizes(y, n_splits, f"{KIT}: [cv] stratified-kfold with n_splits = {n_splits}", lower)
    if strategy == "stratified-shuffle-split":
        _check_class_sizes(y, 2, f"{KIT}: [cv] stratified-shuffle-split",
                           "add rows of that class or use shuffle-split")
    splitter = make_splitter(strategy, n_splits, seed, test_size)
    try:
        folds = [
            (np.asarray(train, dtype=np.int64), np.asarray(valid, dtype=np.int64))
            for train, valid in splitter.split(np.zeros((n_rows, 1)), y)
        ]
    except ValueError as error:
        message = " ".join(str(error).split())
        raise UsageError(f"{KIT}: [cv] {strategy} cannot split the training data: {message}") from None
    return folds


def test_split_method(kind: str, strategy: str) -> str:
    """How a kit without a test file has its test rows held out (see `split_test`)."""
    if strategy == "time-series":
        return "last-rows"
    return "stratified-shuffle" if kind == "classification" else "shuffle"


def describe_split(spec: dict, kind: str) -> dict:
    """Which test split and which folds a registered problem's settings made, and their seeds.

    {"test": {method, file, test_size, seed, text}, "folds": {strategy, n_splits, test_size,
    seed, text}}; a seed is None where the split takes none (time-series keeps the order).
    """
    data, cv = spec["data"], spec["cv"]
    if spec.get("ramp"):
        return {
            "test": {"method": "kit", "file": None, "test_size": None, "seed": None,
                     "text": "the kit's get_test_data"},
            "folds": {"strategy": "get_cv", "n_splits": cv["n_splits"], "test_size": None,
                      "seed": None, "text": f"the kit's get_cv, {cv['n_splits']} folds"},
        }
    strategy, seed = cv["strategy"], cv["seed"]
    ordered = strategy == "time-series"
    if data.get("test"):
        test = {"method": "file", "file": data["test"], "test_size": None, "seed": None,
                "text": f"{data['test']} (a file of its own)"}
    else:
        method = test_split_method(kind, strategy)
        share = f"{data['test_size']:.0%} of the rows"
        text = {"last-rows": f"the last {share} (time-series: in order, no seed)",
                "stratified-shuffle": f"{share}, stratified by class, shuffled with seed {seed}",
                "shuffle": f"{share}, shuffled (not stratified) with seed {seed}"}[method]
        test = {"method": method, "file": None, "test_size": data["test_size"],
                "seed": None if ordered else seed, "text": text}
    folds_text = f"{strategy}, {cv['n_splits']} splits"
    if cv.get("test_size") is not None:
        folds_text += f", validation share {cv['test_size']}"
    folds_text += ", in order (no seed)" if ordered else f", shuffled with seed {seed}"
    folds = {"strategy": strategy, "n_splits": cv["n_splits"], "test_size": cv.get("test_size"),
             "seed": None if ordered else seed, "text": folds_text}
    return {"test": test, "folds": folds}


def split_test(n_rows: int, test_size: float, seed: int, y: np.ndarray | None,
               ordered: bool) -> tuple[np.ndarray, np.ndarray]:
    """(train_rows, test_rows) of a table with no separate test file.

    Classification is split stratified (y given), regression by a plain shuffle, both
    seeded by [cv] seed; a time-series problem keeps the order and holds out its last
    rows, so the test set lies after everything trained on (`test_split_method`).
    """
    n_test = int(np.ceil(n_rows * test_size))
    if n_test < 1 or n_test >= n_rows:
        raise UsageError(f"{KIT}: [data] test_size = {test_size} leaves no test or no training "
                         f"rows out of {n_rows}: change test_size or add a test file")
    if ordered:
        rows = np.arange(n_rows, dtype=np.int64)
        return rows[: n_rows - n_test], rows[n_rows - n_test:]
    from sklearn.model_selection import ShuffleSplit, StratifiedShuffleSplit

    if y is not None:
        _check_class_sizes(y, 2, f"{KIT}: the stratified test split ([data] test_size)",
                           "add rows of that class or give a test file")
        splitter = StratifiedShuffleSplit(n_splits=1, test_size=test_size, random_state=seed)
    else:
        splitter = ShuffleSplit(n_splits=1, test_size=test_size, random_state=seed)
    try:
        train, test = next(splitter.split(np.zeros((n_rows, 1)), y))
    except ValueError as error:
        message = " ".join(str(error).split())
        raise UsageError(f"{KIT}: [data] test_size cannot split the data: {message}") from None
    # Sorted, so the prepared files keep the rows in their original order.
    return np.sort(train).astype(np.int64), np.sort(test).astype(np.int64)
