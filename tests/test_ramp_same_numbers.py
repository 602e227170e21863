"""datarun and ramp-test on the same RAMP kits and submissions give the same numbers.

Every kit of tests/ramp_kits/ is registered, every submission trained by `datarun train`
on the embedded local host, and the same submissions are run by ramp-workflow's own
`ramp-test --save-output` on copies of the kits. Per-fold train/valid/test scores and the
bagged scores must agree to a relative 1e-9; `datarun export --ramp` must write what
ramp-test writes, read back with rampwf's own readers.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import stop_runners
from typer.testing import CliRunner

KITS = Path(__file__).resolve().parent / "ramp_kits"
RAMP_TEST = Path(sys.executable).parent / "ramp-test"
RAMP_BLEND = Path(sys.executable).parent / "ramp-blend"
RTOL = 1e-9
SUBMISSIONS = [
    ("iris_classifier", "starting_kit"), ("iris_classifier", "knn"),
    # float32 probabilities: scored in float32, as ramp-test scores them.
    ("iris_classifier", "float32"),
    ("diabetes_regressor", "starting_kit"), ("diabetes_regressor", "tree"),
    ("cancer_estimator", "starting_kit"), ("diabetes_features", "starting_kit"),
    ("diabetes_external", "starting_kit"), ("diabetes_external", "own_data"),
    # A submission with its own 5 MB data file (made by the fixture: see big_external_data).
    ("diabetes_external", "big_data"),
    # The kit's own workflow class (a feature step and a model) and its own score type.
    ("wine_custom", "starting_kit"), ("wine_custom", "forest"),
    # Three regression targets: predictions of shape (n, 3); a helper in external_imports/.
    ("diabetes_multi", "starting_kit"), ("diabetes_multi", "forest"),
]
N_FOLDS = {"iris_classifier": 3, "diabetes_regressor": 3, "cancer_estimator": 4,
           "diabetes_features": 2, "diabetes_external": 2, "wine_custom": 3,
           "diabetes_multi": 3}
BIG = 5 * 1000**2


def big_external_data(kit: Path) -> Path:
    """A submission of the external-data kit whose external_data.csv is over 5 MB: its own
    bmi for the kit's keys (doubled), then rows of keys no feature carries."""
    folder = kit / "submissions" / "big_data"
    folder.mkdir()
    shutil.copy(kit / "submissions" / "starting_kit" / "estimator.py", folder)
    frame = pd.read_csv(kit / "data" / "external_data.csv")
    frame["bmi"] = (frame["bmi"] * 2).round(6)
    rng = np.random.default_rng(0)
    n_pad = BIG // 16
    pad = pd.DataFrame({"key": np.arange(10**6, 10**6 + n_pad),
                        "bmi": rng.normal(0, 0.05, n_pad).round(6)})
    pd.concat([frame, pad]).to_csv(folder / "external_data.csv", index=False)
    assert (folder / "external_data.csv").stat().st_size > BIG
    return folder


class Run:
    def __init__(self, root: Path):
        from datarun.store.workspace import init_workspace

        self.kits = root / "kits"
        for kit in N_FOLDS:
            shutil.copytree(KITS / kit, self.kits / kit,
                            ignore=shutil.ignore_patterns("training_output", "__pycache__"))
        self.workspace = init_workspace(root / "ws")
        self.runner = CliRunner()
        self.ids: dict[tuple[str, str], int] = {}

    def cli(self, *args):
        from datarun.cli import app

        env = dict(os.environ, DATARUN_HOME=str(self.workspace.root))
        result = self.runner.invoke(app, ["--workspace", str(self.workspace.root),
                                          *map(str, args)], env=env)
        if result.exception and not isinstance(result.exception, SystemExit):
            raise result.exception
        return result

    def ok(self, *args):
        import json

        result = self.cli(*args, "--json")
        assert result.exit_code == 0, result.stderr
        return json.loads(result.stdout)

    def ramp_output(self, kit: str, submission: str) -> Path:
        return self.kits / kit / "submissions" / submission / "training_output"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    run = Run(tmp_path_factory.mktemp("ramp-same"))
    big_external_data(run.kits / "diabetes_external")
    for kit in N_FOLDS:
        run.ok("problem", "add", run.kits / kit)
    for kit, submission in SUBMISSIONS:
        folder = run.kits / kit / "submissions" / submission
        run.ids[kit, submission] = run.ok("submit", kit, folder, "--team", submission)["id"]
    # The external data file left out: the kit's default copy stands in for it.
    bare = run.kits.parent / "bare"
    bare.mkdir()
    shutil.copy(run.kits / "diabetes_external" / "submissions" / "starting_kit" / "estimator.py",
                bare)
    run.ids["diabetes_external", "bare"] = run.ok(
        "submit", "diabetes_external", bare, "--team", "bare")["id"]
    try:
        summary = run.ok("train")
        assert (summary["done"], summary["failed"]) == (sum(N_FOLDS[k] for k, _ in SUBMISSIONS)
                                                        + 2, 0)
        for kit, submission in SUBMISSIONS:
            done = subprocess.run(
                [str(RAMP_TEST), "--submission", submission, "--save-output"],
                cwd=run.kits / kit, capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        yield run
    finally:
        stop_runners(run.workspace)


def assert_close(got, expected, what):
    assert got is not None, what
    assert got == pytest.approx(expected, rel=RTOL, abs=1e-12), what


@pytest.mark.parametrize(("kit", "submission"), SUBMISSIONS)
def test_fold_scores_equal_ramp_test(run, kit, submission):
    shown = run.ok("submission", "show", run.ids[kit, submission], "--private")
    assert [t["fold"] for t in shown["tasks"]] == list(range(N_FOLDS[kit]))
    for task in shown["tasks"]:
        expected = pd.read_csv(run.ramp_output(kit, submission) / f"fold_{task['fold']}" /
                               "scores.csv", index_col=0)
        assert sorted(task["scores"]) == sorted(expected.index)
        for step in expected.index:
            for score in expected.columns.drop("time"):
                assert_close(task["scores"][step][score], expected.loc[step, score],
                             f"{kit}/{submission} fold {task['fold']} {step} {score}")


@pytest.mark.parametrize(("kit", "submission"), SUBMISSIONS)
def test_bagged_scores_equal_ramp_test(run, kit, submission):
    shown = run.ok("submission", "show", run.ids[kit, submission], "--private")
    expected = pd.read_csv(run.ramp_output(kit, submission) / "bagged_scores.csv")
    last = expected[expected["n_bag"] == N_FOLDS[kit] - 1].set_index("step")
    assert sorted(shown["bagged"]) == sorted(last.index)
    for step in last.index:
        for score in last.columns.drop("n_bag"):
            assert_close(shown["bagged"][step][score], last.loc[step, score],
                         f"{kit}/{submission} bagged {step} {score}")


def test_kits_default_external_data_stands_in_for_a_missing_file(run):
    bare = run.ok("submission", "show", run.ids["diabetes_external", "bare"], "--private")
    same = run.ok("submission", "show", run.ids["diabetes_external", "starting_kit"], "--private")
    own = run.ok("submission", "show", run.ids["diabetes_external", "own_data"], "--private")
    big = run.ok("submission", "show", run.ids["diabetes_external", "big_data"], "--private")
    assert bare["bagged"] == same["bagged"]
    # own_data and big_data ship their own external_data.csv: it is the one used.
    assert own["bagged"]["valid"]["rmse"] != same["bagged"]["valid"]["rmse"]
    assert big["bagged"]["valid"]["rmse"] not in (same["bagged"]["valid"]["rmse"],
                                                  own["bagged"]["valid"]["rmse"])


def test_multi_target_predictions_keep_their_three_columns(run):
    from datarun.problems.registered import get_problem
    from datarun.store.blobs import BlobStore
    from datarun.store.db import open_db

    db = open_db(run.workspace)
    assert get_problem(db, "diabetes_multi")["spec"]["ramp"]["pred_shape"] == [3]
    store = BlobStore(run.workspace.blobs_dir)
    for pred_train, pred_test in db.execute(
            "SELECT pred_train, pred_test FROM tasks WHERE submission = ?",
            [run.ids["diabetes_multi", "forest"]]):
        assert store.get_array(pred_train).shape == (300, 3)
        assert store.get_array(pred_test).shape == (142, 3)


@pytest.mark.parametrize(("kit", "submission"), [
    ("iris_classifier", "knn"), ("diabetes_regressor", "starting_kit"),
    ("cancer_estimator", "starting_kit"), ("wine_custom", "forest"),
    ("diabetes_multi", "forest"), ("diabetes_external", "big_data"),
])
def test_export_is_read_back_by_rampwf_as_ramp_tests_own(run, kit, submission, tmp_path):
    from rampwf.utils.cli.show import _bagged_table_and_headers, _load_score_submission
    from rampwf.utils.io import load_y_pred

    from datarun.problems.rampkit import import_problem, kit_environment

    exported = tmp_path / "submissions" / "datarun" / "training_output"
    result = run.cli("export", run.ids[kit, submission], "--ramp", exported, "--private")
    assert result.exit_code == 0, result.stderr
    ramp_dir = run.ramp_output(kit, submission)

    def files(folder):
        return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")
                      if p.is_file() and p.name != "state.txt")

    assert files(exported) == files(ramp_dir)

    ours = _load_score_submission(str(exported.parent), None, None)
    theirs = _load_score_submission(str(ramp_dir.parent), None, None)
    scores = [c for c in theirs.columns if c != "time"]
    assert list(ours.columns) == list(theirs.columns)
    np.testing.assert_allclose(ours[scores].to_numpy(), theirs[scores].to_numpy(), rtol=RTOL)

    metric = scores[0]
    ours_bagged, _ = _bagged_table_and_headers({"datarun": str(exported.parent)}, metric)
    theirs_bagged, _ = _bagged_table_and_headers({"ramp": str(ramp_dir.parent)}, metric)
    if N_FOLDS[kit] and (ramp_dir / "fold_0" / "y_pred_test.npz").exists():
        np.testing.assert_allclose(ours_bagged.iloc[:, 1:].to_numpy(dtype=float),
                                   theirs_bagged.iloc[:, 1:].to_numpy(dtype=float), rtol=RTOL)
    full_ours = pd.read_csv(exported / "bagged_scores.csv")
    full_theirs = pd.read_csv(ramp_dir / "bagged_scores.csv")
    assert list(full_ours.columns) == list(full_theirs.columns)
    assert full_ours[["step", "n_bag"]].equals(full_theirs[["step", "n_bag"]])
    np.testing.assert_allclose(full_ours.iloc[:, 2:].to_numpy(), full_theirs.iloc[:, 2:].to_numpy(),
                               rtol=RTOL)

    with kit_environment(run.kits / kit, {}):
        problem = import_problem(run.kits / kit / "problem.py")
    for fold in range(N_FOLDS[kit]):
        for suffix in ("train", "test"):
            if not (ramp_dir / f"fold_{fold}" / f"y_pred_{suffix}.npz").exists():
                continue
            ours_pred = load_y_pred(problem, input_path=str(exported / f"fold_{fold}"),
                                    suffix=suffix)
            theirs_pred = load_y_pred(problem, input_path=str(ramp_dir / f"fold_{fold}"),
                                      suffix=suffix)
            np.testing.assert_allclose(ours_pred, theirs_pred, rtol=RTOL, atol=1e-12)
        assert float((exported / f"fold_{fold}" / "train_time").read_text()) > 0



@pytest.mark.parametrize("kit", ["iris_classifier", "diabetes_regressor", "wine_custom",
                                 "diabetes_multi"])
def test_contributivity_is_ramp_blends(run, kit):
    """ramp-blend on ramp-test's outputs, the submissions in datarun's order: the same
    per-fold shares and the same combined test score."""
    names = [s for k, s in SUBMISSIONS if k == kit]
    done = subprocess.run([str(RAMP_BLEND), "--submissions", repr(names), "--save-output"],
                          cwd=run.kits / kit, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    output = run.kits / kit / "submissions" / "training_output"
    theirs = pd.read_csv(output / "contributivities.csv").set_index("submission")
    folds = [c for c in theirs.columns if c.startswith("fold_")]
    board = run.ok("leaderboard", kit, "--private")
    ours = {row["name"]: row["contributivity"] for row in board["rows"]}
    for name in names:
        assert ours[name] == pytest.approx(theirs.loc[name, folds].sum(), rel=1e-12, abs=1e-12)
    combined = pd.read_csv(output / "bagged_scores_combined.csv")
    last = combined[(combined["step"] == "test") & (combined["n_bag"] == N_FOLDS[kit] - 1)]
    assert_close(board["blend"]["combined_test"], last.iloc[0, 2], f"{kit} combined test")


def test_leaderboard_ranks_ramp_submissions_through_the_cli(run):
    board = run.ok("leaderboard", "iris_classifier", "--private")
    rows = board["rows"]
    assert {r["name"] for r in rows} == {"starting_kit", "knn", "float32"}
    assert board["lower_is_better"]["nll"] is True
    assert rows[0]["score"] >= rows[1]["score"]  # acc: higher is better
    assert all(r["contributivity"] is not None for r in rows)
    assert run.cli("leaderboard", "diabetes_regressor").exit_code == 0
