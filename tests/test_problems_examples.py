"""The example kits: their data is what make_data.py builds, they register, and their
submissions behave as the demo needs (the good ones fit fast, broken_fit raises)."""

import importlib.util
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from datarun.problems.kits import load_kit
from datarun.problems.workflows import get_workflow

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
KITS = sorted(p.parent.name for p in EXAMPLES.glob("*/problem.toml"))


def load_estimator(folder: Path):
    spec = importlib.util.spec_from_file_location(f"example_{folder.name}", folder / "estimator.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_estimator()


def test_make_data_rebuilds_the_committed_files_byte_for_byte(tmp_path):
    spec = importlib.util.spec_from_file_location("make_data", EXAMPLES / "make_data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(tmp_path)
    built = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.csv"))
    assert [str(p) for p in built] == ["diabetes/data/train.csv", "iris/data/test.csv",
                                       "iris/data/train.csv"]
    for path in built:
        assert (tmp_path / path).read_bytes() == (EXAMPLES / path).read_bytes(), path


def test_there_is_a_classification_and_a_regression_kit():
    kinds = {load_kit(EXAMPLES / name).kind for name in KITS}
    assert {"iris", "diabetes"} <= set(KITS) and kinds == {"classification", "regression"}


@pytest.mark.parametrize("kit", KITS)
def test_each_submission_holds_just_the_workflow_files(kit):
    spec = load_kit(EXAMPLES / kit)
    workflow = get_workflow(spec.workflow)
    folders = sorted(p for p in (EXAMPLES / kit / "submissions").iterdir() if p.is_dir())
    assert len(folders) >= 3
    for folder in folders:
        names = {p.name for p in folder.iterdir() if p.name != "__pycache__"}
        assert names == set(workflow.required), folder


@pytest.mark.parametrize("kit", KITS)
def test_the_good_submissions_fit_and_predict_quickly(kit):
    spec = load_kit(EXAMPLES / kit)
    frame = pd.read_csv(spec.train_path)
    X, y = frame.drop(columns=spec.target), frame[spec.target].to_numpy()
    for folder in sorted((EXAMPLES / kit / "submissions").iterdir()):
        if folder.name in ("broken_fit", "memory_hog"):
            continue
        estimator = load_estimator(folder)
        start = time.perf_counter()
        estimator.fit(X, y)
        if spec.kind == "classification":
            proba = estimator.predict_proba(X)
            assert proba.shape == (len(X), len(np.unique(y)))
            assert (proba.argmax(axis=1) == np.searchsorted(np.unique(y), y)).mean() > 0.9
        else:
            assert estimator.predict(X).shape == (len(X),)
        assert time.perf_counter() - start < 1.0, folder


def test_broken_fit_raises_a_clear_value_error():
    estimator = load_estimator(EXAMPLES / "iris" / "submissions" / "broken_fit")
    with pytest.raises(ValueError, match="this estimator cannot fit"):
        estimator.fit(np.zeros((4, 4)), np.array(["a", "b", "a", "b"]))


def test_the_memory_hog_really_touches_twice_the_iris_memory_limit():
    limit = load_kit(EXAMPLES / "iris").limits.memory
    folder = EXAMPLES / "iris" / "submissions" / "memory_hog"
    # In a child process, so the ~2 GB is given back at once and this process's peak is untouched.
    code = (
        "import importlib.util, resource, sys, numpy as np\n"
        f"spec = importlib.util.spec_from_file_location('hog', {str(folder / 'estimator.py')!r})\n"
        "module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)\n"
        "module.get_estimator().fit(np.zeros((3, 4)), np.array([0, 1, 2]))\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60, check=True)
    assert int(result.stdout) > 1.8 * limit
