"""RAMP kits beyond ramp-workflow's own workflows: what runs, what is refused and why.

The kits are copies of tests/ramp_kits/ with one change each. Runs go through the CLI on
the embedded local host; ramp-test runs as a subprocess where its behaviour is the
reference (a kit whose predictions cannot be combined fails there at bagging).
"""

import io
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import EXAMPLES, stop_runners

KITS = Path(__file__).resolve().parent / "ramp_kits"
RAMP_TEST = Path(sys.executable).parent / "ramp-test"


def copy_kit(tmp_path, name, as_name=None) -> Path:
    target = tmp_path / (as_name or name)
    shutil.copytree(KITS / name, target,
                    ignore=shutil.ignore_patterns("training_output", "__pycache__"))
    return target


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new))


def refused(cli, *args) -> str:
    result = cli(*args)
    assert result.exit_code == 2, result.stdout
    message = result.stderr.strip()
    assert message.startswith("error: ") and "\n" not in message
    return message


@pytest.fixture
def trained(workspace):
    yield workspace
    stop_runners(workspace)


# --- a kit whose Predictions cannot be combined --------------------------------------------------

UNCOMBINABLE = '''_Regression = rw.prediction_types.make_regression()


class Predictions(_Regression):
    @classmethod
    def combine(cls, predictions_list, index_list=None):
        raise ValueError('these predictions cannot be averaged')
'''
NOTE = ("no bagged scores and no contributivity: combining the kit's predictions fails "
        "(ValueError: these predictions cannot be averaged), as it would in ramp-test; the "
        "scores shown are means over folds")


def test_predictions_that_cannot_be_combined_get_one_line_and_fold_scores(trained, cli, tmp_path):
    kit = copy_kit(tmp_path, "diabetes_regressor", "uncombinable")
    edit(kit / "problem.py", "Predictions = rw.prediction_types.make_regression()\n", UNCOMBINABLE)
    assert cli("problem", "add", kit).exit_code == 0
    ids = [cli("submit", "uncombinable", kit / "submissions" / name, "--team", name,
               "--json").json()["id"] for name in ("starting_kit", "tree")]
    result = cli("train", "--json")
    assert result.exit_code == 0, result.stderr
    assert result.json()["done"] == 6

    board = cli("leaderboard", "uncombinable", "--private", "--json").json()
    assert board["note"] == NOTE
    assert board["blend"]["combined_valid"] is None
    for row in board["rows"]:
        assert row["note"].startswith("no bagged scores: combining the kit's predictions fails")
        assert row["score"] == row["valid_mean"]["rmse"] is not None
        assert row["valid"] == row["valid_mean"] and row["contributivity"] is None
        assert row["test"]["rmse"] is not None
    assert [r["rank"] for r in board["rows"]] == [1, 2]

    table = cli("leaderboard", "uncombinable")
    assert table.exit_code == 0
    assert f"note: {NOTE}" in " ".join(table.stdout.split())

    assert cli("site", tmp_path / "site").exit_code == 0
    assert f"{NOTE}." in (tmp_path / "site" / "uncombinable" / "index.html").read_text().replace(
        "&#39;", "'")

    rows = list(pd.read_csv(io.StringIO(
        cli("leaderboard", "uncombinable", "--csv").stdout)).itertuples())
    assert all(r.note.startswith("no bagged scores: combining") for r in rows)

    out = tmp_path / "exported"
    exported = cli("export", ids[0], "--ramp", out, "--private")
    assert exported.exit_code == 0, exported.stderr
    assert ("note: no bagged scores: combining the kit's predictions fails (ValueError: these "
            "predictions cannot be averaged), as it would in ramp-test: no bagged_scores.csv "
            "written") in exported.stderr
    assert not (out / "bagged_scores.csv").exists()
    assert sorted(p.name for p in (out / "fold_0").iterdir()) == [
        "scores.csv", "test_time", "train_time", "valid_time", "y_pred_test.npz",
        "y_pred_train.npz"]

    # ramp-test scores every fold, then fails where datarun leaves the bagged scores out.
    done = subprocess.run([str(RAMP_TEST), "--submission", "starting_kit", "--save-output"],
                          cwd=kit, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "these predictions cannot be averaged" in done.stdout + done.stderr
    shown = cli("submission", "show", ids[0], "--json", "--private").json()
    for task in shown["tasks"]:
        theirs = pd.read_csv(kit / "submissions" / "starting_kit" / "training_output" /
                             f"fold_{task['fold']}" / "scores.csv", index_col=0)
        for step in ("train", "valid", "test"):
            assert task["scores"][step]["rmse"] == pytest.approx(theirs.loc[step, "rmse"],
                                                                 rel=1e-9)


# --- the problem's environment, and only it ------------------------------------------------------

ENV_PROBLEM = '''def get_train_data(path='.'):
    X, y = _read_data(path, 'train.csv')
    if os.getenv('RAMP_TEST_MODE'):  # what many kits do: a small sample for quick tests
        return X[:30], y[:30]
    return X, y
'''
ENV_CLASSIFIER = '''import os


class Classifier:
    def fit(self, X, y):
        raise ValueError('RAMP_TEST_MODE=%s KIT_LEVEL=%s' % (
            os.environ.get('RAMP_TEST_MODE'), os.environ.get('KIT_LEVEL')))

    def predict_proba(self, X):
        pass
'''


def test_tasks_see_the_problems_environment_never_the_organisers(trained, cli, tmp_path,
                                                                  monkeypatch):
    monkeypatch.setenv("RAMP_TEST_MODE", "organiser")
    quick = copy_kit(tmp_path, "iris_classifier", "quick")
    full = copy_kit(tmp_path, "iris_classifier", "full")
    for kit in (quick, full):
        edit(kit / "problem.py", "def get_train_data(path='.'):\n"
             "    return _read_data(path, 'train.csv')\n", ENV_PROBLEM)
    added = cli("problem", "add", quick, "--env", "RAMP_TEST_MODE=1", "--env", "KIT_LEVEL=a=b",
                "--json")
    assert added.exit_code == 0, added.stderr
    assert (added.json()["n_train"], added.json()["notes"]) == (30, [])
    added = cli("problem", "add", full, "--json")
    assert added.exit_code == 0
    assert added.json()["n_train"] == 110
    assert added.stderr.strip() == (
        "note: RAMP_TEST_MODE is set in this environment but the kit does not see it: pass "
        "--env RAMP_TEST_MODE=organiser to give it to the kit and its tasks")

    submission = tmp_path / "env"
    submission.mkdir()
    (submission / "classifier.py").write_text(ENV_CLASSIFIER)
    ids = {name: cli("submit", name, submission, "--team", "ada", "--json").json()["id"]
           for name in ("quick", "full")}
    assert cli("train", "--json").exit_code == 1  # every fit raises, saying what it saw
    seen = {name: cli("submission", "show", sid, "--json").json()["tasks"][0]["error"]
            for name, sid in ids.items()}
    assert seen["quick"].rstrip().endswith("ValueError: RAMP_TEST_MODE=1 KIT_LEVEL=a=b")
    assert seen["full"].rstrip().endswith("ValueError: RAMP_TEST_MODE=None KIT_LEVEL=None")


@pytest.mark.parametrize(("args", "message"), [
    (("--env", "RAMP_TEST_MODE"), "--env takes NAME=VALUE, got 'RAMP_TEST_MODE'"),
    (("--env", "1ST=x"), "--env 1ST=...: a variable name holds letters, digits and '_' and "
     "does not start with a digit"),
    (("--env", "A=two\nlines"), "--env A: the value must be one line of text"),
    (("--data-file-cap", "lots"), "--data-file-cap: expected a size like '512MB' or '2GB', "
     "got 'lots'"),
])
def test_bad_registration_options_are_refused(workspace, cli, args, message):
    assert refused(cli, "problem", "add", KITS / "iris_classifier", *args) == f"error: {message}"


def test_options_for_ramp_kits_are_refused_for_native_kits(workspace, cli):
    assert refused(cli, "problem", "add", EXAMPLES / "iris", "--env", "A=1") == (
        "error: --env is for RAMP kits (problem.py), whose code reads its environment: iris is "
        "a problem.toml kit, which runs no code of its own")
    assert refused(cli, "problem", "add", EXAMPLES / "iris", "--data-file-cap", "1MB") == (
        "error: --data-file-cap is for RAMP kits (problem.py), whose workflows may take data "
        "files: iris is a problem.toml kit, whose estimator workflow takes estimator.py only")


# --- data files in submissions ------------------------------------------------------------------


def test_data_files_have_their_own_cap_code_files_theirs(workspace, cli, tmp_path):
    kit = KITS / "diabetes_external"
    assert cli("problem", "add", kit, "--data-file-cap", "1.5MB").exit_code == 0
    submission = tmp_path / "sub"
    submission.mkdir()
    shutil.copy(kit / "submissions" / "starting_kit" / "estimator.py", submission)
    data = submission / "external_data.csv"
    data.write_bytes(b"key,bmi\n" + b"0,0.1\n" * ((1_500_000 - 8) // 6))
    assert data.stat().st_size <= 1_500_000
    result = cli("submit", "diabetes_external", submission, "--team", "ada", "--json")
    assert result.exit_code == 0, result.stderr  # a data file: not the 512 kB code cap
    data.write_bytes(data.read_bytes() + b"0,0.1\n" * 100)
    assert refused(cli, "submit", "diabetes_external", submission, "--team", "bob") == (
        "error: external_data.csv is 1.5 MB; the cap is 1.5 MB a data file (the problem's: "
        "problem add --data-file-cap)")
    data.unlink()
    code = (kit / "submissions" / "starting_kit" / "estimator.py").read_text() + "#"
    (submission / "estimator.py").write_text(code + "#" * (512_000 - len(code) + 1))
    assert refused(cli, "submit", "diabetes_external", submission, "--team", "bob") == (
        "error: estimator.py is 512.0 kB; the cap is 512 kB a code file")
    (submission / "estimator.py").write_text(code + "#" * (512_000 - len(code)))
    result = cli("submit", "diabetes_external", submission, "--team", "bob")
    assert result.exit_code == 0, result.stderr  # 512 kB is 512,000 bytes


def test_binary_data_files_are_data(workspace, cli, tmp_path):
    """A data element may be any bytes; only .py files must be UTF-8 text."""
    kit = copy_kit(tmp_path, "diabetes_external", "binary_external")
    edit(kit / "problem.py", "rw.workflows.EstimatorExternalData()",
         "rw.workflows.SKLearnPipeline(additional_filenames=['weights.npy'])")
    assert cli("problem", "add", kit).exit_code == 0
    submission = tmp_path / "sub"
    submission.mkdir()
    shutil.copy(kit / "submissions" / "starting_kit" / "estimator.py", submission)
    np.save(submission / "weights.npy", np.arange(10.0))
    result = cli("submit", "binary_external", submission, "--team", "ada", "--json")
    assert result.exit_code == 0, result.stderr
    assert sorted(cli("submission", "show", result.json()["id"], "--json").json()["files"]) == [
        "estimator.py", "weights.npy"]


# --- what cannot run, refused by name with its reason -------------------------------------------


def registration_refused(workspace, cli, kit) -> str:
    from datarun.store.db import open_db

    message = refused(cli, "problem", "add", kit)
    assert open_db(workspace).execute("SELECT count(*) FROM problems").fetchone()[0] == 0
    return message


WORKFLOW_PROBLEMS = [
    ("class _Nothing:\n    element_names = ['classifier']\n\n\nworkflow = _Nothing()",
     "problem.py: workflow _Nothing has no train_submission or test_submission: ramp-test "
     "calls workflow.train_submission and workflow.test_submission"),
    ("class _NoNames:\n    def train_submission(self, *a):\n        pass\n\n"
     "    def test_submission(self, *a):\n        pass\n\n\nworkflow = _NoNames()",
     "problem.py: workflow _NoNames has no element_names (a list of the submission's file "
     "names): datarun needs it to know what a submission holds"),
    ("workflow = rw.workflows.Classifier(['../classifier'])",
     "problem.py: workflow Classifier has element '../classifier', which is not a plain file "
     "name"),
    ("workflow = rw.workflows.FeatureExtractorClassifier(['classifier', 'classifier'])",
     "problem.py: workflow FeatureExtractorClassifier names a file twice: ['classifier.py', "
     "'classifier.py']"),
]


@pytest.mark.parametrize(("workflow", "message"), WORKFLOW_PROBLEMS,
                         ids=["no calls", "no element names", "path", "twice"])
def test_workflow_without_what_ramp_test_calls_is_refused(workspace, cli, tmp_path, workflow,
                                                          message):
    kit = copy_kit(tmp_path, "iris_classifier")
    edit(kit / "problem.py", "workflow = rw.workflows.Classifier()", workflow)
    assert registration_refused(workspace, cli, kit) == f"error: {message}"


PREDICTION_PROBLEMS = [
    ("class Predictions:\n    def __init__(self, **kwargs):\n        raise TypeError('no')\n",
     "problem.py: Predictions(n_samples=...) failed (TypeError: no); ramp-test's bagging makes "
     "its empty predictions that way"),
    ("class Predictions:\n    def __init__(self, n_samples=None, **kwargs):\n"
     "        self.y_pred = 1.0\n",
     "problem.py: Predictions(n_samples=2).y_pred has shape (); ramp-workflow's predictions "
     "have one row per sample"),
]


@pytest.mark.parametrize(("predictions", "message"), PREDICTION_PROBLEMS,
                         ids=["no n_samples", "no rows"])
def test_predictions_type_that_cannot_make_rows_is_refused(workspace, cli, tmp_path, predictions,
                                                           message):
    kit = copy_kit(tmp_path, "diabetes_regressor")
    edit(kit / "problem.py", "Predictions = rw.prediction_types.make_regression()\n", predictions)
    assert registration_refused(workspace, cli, kit) == f"error: {message}"


def test_features_that_name_files_of_this_machine_are_refused(workspace, cli, tmp_path):
    """Image kits give (folder, ids): the workflow reads the images there at run time."""
    kit = copy_kit(tmp_path, "iris_classifier")
    edit(kit / "problem.py", "    return _read_data(path, 'train.csv')\n",
         "    X, y = _read_data(path, 'train.csv')\n"
         "    return (os.path.join(path, 'data'), X), y\n")
    edit(kit / "problem.py", "    return _read_data(path, 'test.csv')\n",
         "    X, y = _read_data(path, 'test.csv')\n"
         "    return (os.path.join(path, 'data'), X), y\n")
    message = registration_refused(workspace, cli, kit)
    assert message == (
        f"error: problem.py: get_train_data gives the path {str(kit / 'data')!r} of this "
        "machine, where the workflow would read files at run time; hosts get the objects "
        "get_train_data returns, not the files they name: datarun cannot run this kit")


def test_a_kit_with_too_much_code_to_ship_is_refused(workspace, cli, tmp_path, monkeypatch):
    import datarun.problems.rampdata as rampdata

    monkeypatch.setattr(rampdata, "MAX_KIT_FILES_BYTES", 1000)
    kit = copy_kit(tmp_path, "iris_classifier")
    (kit / "helpers.py").write_text("#" * 2000 + "\n")
    size = sum(p.stat().st_size for p in (kit / "helpers.py", kit / "problem.py"))
    assert registration_refused(workspace, cli, kit) == (
        f"error: the kit's Python files and external_imports/ hold {size / 1000:.1f} kB, more "
        "than the 1 kB shipped to hosts with the data: keep data in data/")


ONE_AT_A_TIME = '''_Regression = rw.prediction_types.make_regression()


class Predictions(_Regression):
    @classmethod
    def combine(cls, predictions_list, index_list=None):
        if index_list is None:
            index_list = range(len(predictions_list))
        if len(index_list) > 1:
            raise ValueError('one at a time')
        return cls(y_pred=predictions_list[index_list[0]].y_pred)
'''


def test_a_blend_that_fails_alone_says_so_and_keeps_the_bagged_scores(trained, cli, tmp_path):
    """One fold: bagging combines one prediction at a time; blending needs two."""
    kit = copy_kit(tmp_path, "diabetes_regressor", "one_fold")
    edit(kit / "problem.py", "Predictions = rw.prediction_types.make_regression()\n",
         ONE_AT_A_TIME)
    edit(kit / "problem.py", "KFold(n_splits=3, shuffle=True, random_state=3)",
         "ShuffleSplit(n_splits=1, test_size=0.3, random_state=3)")
    edit(kit / "problem.py", "import KFold", "import ShuffleSplit")
    assert cli("problem", "add", kit).exit_code == 0
    for name in ("starting_kit", "tree"):
        assert cli("submit", "one_fold", kit / "submissions" / name, "--team", name).exit_code == 0
    assert cli("train", "--json").exit_code == 0
    board = cli("leaderboard", "one_fold", "--json").json()
    assert board["note"] == ("no contributivity: combining the kit's predictions fails "
                             "(ValueError: one at a time), as it would in ramp-test")
    assert all(row["note"] is None and row["score"] is not None for row in board["rows"])


SAVE_Y_PRED = '''

def save_y_pred(y_pred, data_path, output_path, suffix):
    import pandas as pd
    if os.path.basename(output_path) == 'fold_1' and os.environ.get('FAIL_SAVE'):
        raise ValueError('cannot save this fold')
    pd.DataFrame({'pred': y_pred}).to_csv(
        os.path.join(output_path, 'y_pred_{}.csv'.format(suffix)), index=False)


def load_y_pred(data_path, input_path, suffix):
    import pandas as pd
    return pd.read_csv(os.path.join(input_path, 'y_pred_{}.csv'.format(suffix)))['pred'].values
'''


def test_a_kit_that_saves_its_own_predictions_is_exported_its_way(trained, cli, tmp_path,
                                                                  monkeypatch):
    from rampwf.utils.io import load_y_pred

    from datarun.problems.rampkit import import_problem, kit_environment

    kit = copy_kit(tmp_path, "diabetes_regressor", "own_saver")
    (kit / "problem.py").write_text((kit / "problem.py").read_text() + SAVE_Y_PRED)
    assert cli("problem", "add", kit).exit_code == 0
    sid = cli("submit", "own_saver", kit / "submissions" / "starting_kit", "--team", "ada",
              "--json").json()["id"]
    assert cli("train", "--json").exit_code == 0
    out = tmp_path / "out"
    assert cli("export", sid, "--ramp", out, "--private").exit_code == 0
    assert sorted(p.name for p in (out / "fold_0").iterdir()) == [
        "scores.csv", "test_time", "train_time", "valid_time", "y_pred_test.csv",
        "y_pred_train.csv"]
    with kit_environment(kit, {}):
        problem = import_problem(kit / "problem.py")
    from datarun.store.blobs import BlobStore
    from datarun.store.db import open_db

    row = open_db(trained).execute("SELECT pred_train FROM tasks WHERE submission = ? AND "
                                   "fold = 0", [sid]).fetchone()
    np.testing.assert_array_equal(load_y_pred(problem, input_path=str(out / "fold_0"),
                                              suffix="train"),
                                  BlobStore(trained.blobs_dir).get_array(row[0]))

    monkeypatch.setenv("FAIL_SAVE", "1")
    assert refused(cli, "export", sid, "--ramp", tmp_path / "again") == (
        "error: problem.py save_y_pred failed: ValueError: cannot save this fold")
