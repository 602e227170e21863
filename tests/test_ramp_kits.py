"""Registering RAMP kits: what is stored and shipped, the submission rules, every refusal.

The kits in tests/ramp_kits/ are written with ramp-workflow's own API; the broken ones are
built here from them, one fault each. A refused kit leaves nothing in the workspace.
"""

import json
import pickle
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

KITS = Path(__file__).resolve().parent / "ramp_kits"


def add(cli, kit):
    return cli("problem", "add", kit, "--json")


def copy_kit(tmp_path, name, as_name=None) -> Path:
    target = tmp_path / (as_name or name)
    shutil.copytree(KITS / name, target, ignore=shutil.ignore_patterns("training_output"))
    return target


def stored(workspace) -> tuple[int, int, list]:
    from datarun.store.db import open_db

    db = open_db(workspace)
    problems = db.execute("SELECT count(*) FROM problems").fetchone()[0]
    folds = db.execute("SELECT count(*) FROM folds").fetchone()[0]
    blobs = sorted(p.name for p in workspace.blobs_dir.rglob("*") if p.is_file())
    return problems, folds, blobs


def test_classifier_kit_registers_with_the_kits_own_folds_and_labels(workspace, cli):
    result = add(cli, KITS / "iris_classifier")
    assert result.exit_code == 0, result.stderr
    info = result.json()
    assert (info["name"], info["kind"], info["workflow"]) == ("iris_classifier", "classification", "ramp")
    assert info["ramp"] == {"workflow": "Classifier", "elements": ["classifier"],
                            "prediction": "multiclass"}
    assert (info["n_train"], info["n_test"], info["n_features"]) == (110, 40, 4)
    assert info["classes"] == ["setosa", "versicolor", "virginica"]
    assert [(s["name"], s["lower_is_better"], s["official"]) for s in info["scores"]] == [
        ("acc", False, True), ("nll", True, False), ("bal_acc", False, False)]

    # The folds are get_cv's, frozen as indices.
    from datarun.problems.rampkit import load_ramp_kit
    from datarun.problems.registered import data_dir, get_problem, load_fold, load_labels
    from datarun.store.db import open_db

    kit = load_ramp_kit(KITS / "iris_classifier")
    X, y = kit.module.get_train_data(path=str(KITS / "iris_classifier"))
    expected = list(kit.module.get_cv(X, y))
    db = open_db(workspace)
    assert [f["fold"] for f in info["folds"]] == [0, 1, 2]
    for fold, (train, valid) in enumerate(expected):
        got_train, got_valid = load_fold(workspace, db, "iris_classifier", fold)
        assert np.array_equal(got_train, train) and np.array_equal(got_valid, valid)

    # Shipped: features, training labels and problem.py; never the test labels.
    problem = get_problem(db, "iris_classifier")
    shipped = data_dir(workspace, problem)
    assert sorted(p.name for p in shipped.iterdir()) == [
        "X_test.pkl", "X_train.pkl", "kit", "meta.json", "y_train.pkl"]
    assert sorted(str(p.relative_to(shipped)) for p in (shipped / "kit").rglob("*")) == [
        "kit/problem.py"]
    with open(shipped / "X_train.pkl", "rb") as handle:
        assert np.array_equal(pickle.load(handle), X)
    meta = json.loads((shipped / "meta.json").read_text())
    assert (meta["format"], meta["n_test"], meta["external"]) == ("ramp", 40, [])
    y_train, y_test = load_labels(workspace, problem)
    assert np.array_equal(y_train, y) and len(y_test) == 40


def test_kit_without_test_data_registers_with_no_test_rows(workspace, cli):
    result = add(cli, KITS / "cancer_estimator")
    assert result.exit_code == 0, result.stderr
    info = result.json()
    assert (info["n_test"], info["classes"], len(info["folds"])) == (0, [0, 1], 4)
    assert info["ramp"]["workflow"] == "Estimator"
    assert info["target_summary"]["test"] == {}


def test_regression_and_feature_extractor_kits_register(workspace, cli):
    for kit, workflow in (("diabetes_regressor", "Regressor"),
                          ("diabetes_features", "FeatureExtractorRegressor")):
        result = add(cli, KITS / kit)
        assert result.exit_code == 0, result.stderr
        info = result.json()
        assert (info["kind"], info["classes"], info["ramp"]["workflow"]) == (
            "regression", None, workflow)
        assert info["ramp"]["prediction"] == "regression"
    shown = cli("problem", "show", "diabetes_features")
    assert shown.exit_code == 0 and "the kit's get_cv, 2 folds" in shown.stdout


def test_external_data_ships_the_kits_default_copy(workspace, cli):
    from datarun.problems.registered import data_dir, get_problem
    from datarun.store.db import open_db

    assert add(cli, KITS / "diabetes_external").exit_code == 0
    problem = get_problem(open_db(workspace), "diabetes_external")
    shipped = data_dir(workspace, problem)
    assert (shipped / "external" / "external_data.csv").read_bytes() == (
        KITS / "diabetes_external" / "data" / "external_data.csv").read_bytes()


def test_submissions_take_the_workflow_element_files(workspace, cli, tmp_path):
    assert add(cli, KITS / "iris_classifier").exit_code == 0
    subs = KITS / "iris_classifier" / "submissions"
    ok = cli("submit", "iris_classifier", subs / "starting_kit", "--team", "ada", "--json")
    assert ok.exit_code == 0, ok.stderr
    assert ok.json()["tasks"] == 3

    wrong = tmp_path / "wrong"
    wrong.mkdir()
    (wrong / "estimator.py").write_text("def get_estimator():\n    pass\n")
    result = cli("submit", "iris_classifier", wrong, "--team", "ada")
    assert result.exit_code == 2
    assert "unexpected file estimator.py" in result.stderr
    assert "the RAMP Classifier workflow takes only classifier.py" in result.stderr

    no_class = tmp_path / "no_class"
    no_class.mkdir()
    (no_class / "classifier.py").write_text("class Model:\n    pass\n")
    result = cli("submit", "iris_classifier", no_class, "--team", "ada")
    assert result.exit_code == 2
    assert "classifier.py does not define Classifier()" in result.stderr

    # What ramp-test leaves in a submission folder is not part of the submission.
    ran = tmp_path / "ran"
    shutil.copytree(subs / "knn", ran)
    (ran / "training_output" / "fold_0").mkdir(parents=True)
    result = cli("submit", "iris_classifier", ran, "--team", "ada", "--json")
    assert result.exit_code == 0, result.stderr


def test_external_data_file_is_optional_when_the_kit_has_a_default(workspace, cli, tmp_path):
    assert add(cli, KITS / "diabetes_external").exit_code == 0
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(KITS / "diabetes_external" / "submissions" / "starting_kit" / "estimator.py", bare)
    result = cli("submit", "diabetes_external", bare, "--team", "ada", "--json")
    assert result.exit_code == 0, result.stderr
    own = KITS / "diabetes_external" / "submissions" / "own_data"
    result = cli("submit", "diabetes_external", own, "--team", "ada", "--json")
    assert result.exit_code == 0, result.stderr


def test_features_kit_needs_both_element_files(workspace, cli, tmp_path):
    assert add(cli, KITS / "diabetes_features").exit_code == 0
    half = tmp_path / "half"
    half.mkdir()
    shutil.copy(KITS / "diabetes_features" / "submissions" / "starting_kit" / "regressor.py", half)
    result = cli("submit", "diabetes_features", half, "--team", "ada")
    assert result.exit_code == 2
    assert "no feature_extractor.py" in result.stderr
    assert "needs feature_extractor.py, regressor.py" in result.stderr


# --- refusals: one line, exit 2, nothing stored ------------------------------------------------


def edit_problem(kit: Path, old: str, new: str) -> None:
    path = kit / "problem.py"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


def refused(workspace, cli, kit) -> str:
    before = stored(workspace)
    result = add(cli, kit)
    assert result.exit_code == 2, result.stdout
    message = result.stderr.strip()
    assert message.startswith("error: ") and "\n" not in message
    # With --json, the same error as an object on stdout.
    assert json.loads(result.stdout)["error"] == {"kind": "invalid", "message": message[len("error: "):],
                                                  "exit_code": 2}
    assert stored(workspace) == before
    return message


def test_problem_py_that_fails_to_import_shows_its_traceback_tail(workspace, cli, tmp_path):
    kit = copy_kit(tmp_path, "iris_classifier")
    edit_problem(kit, "problem_title = ", "_scale = 1 / 0\nproblem_title = ")
    message = refused(workspace, cli, kit)
    assert message == ("error: problem.py failed to import: ZeroDivisionError: division by zero "
                       "(problem.py line 7)")


def test_problem_py_with_a_syntax_error_names_the_line(workspace, cli, tmp_path):
    kit = copy_kit(tmp_path, "iris_classifier")
    edit_problem(kit, "def get_cv(X, y):", "def get_cv(X, y)")
    message = refused(workspace, cli, kit)
    assert message.startswith("error: problem.py failed to import: SyntaxError: ")
    assert message.endswith("(problem.py line 20)")


def test_problem_py_missing_a_required_name(workspace, cli, tmp_path):
    kit = copy_kit(tmp_path, "iris_classifier")
    edit_problem(kit, "def get_cv(X, y):", "def make_cv(X, y):")
    message = refused(workspace, cli, kit)
    assert message == ("error: problem.py does not define get_cv: a RAMP kit needs "
                       "get_train_data, get_test_data, get_cv, workflow, score_types, Predictions")


def test_workflow_the_starting_kit_does_not_follow_is_refused(workspace, cli, tmp_path):
    kit = copy_kit(tmp_path, "iris_classifier")
    edit_problem(kit, "rw.workflows.Classifier()", "rw.workflows.Regressor()")
    message = refused(workspace, cli, kit)
    assert message == ("error: submissions/starting_kit has no regressor.py, which workflow "
                       "Regressor's element 'regressor' names: the workflow and the kit's files "
                       "disagree")


def test_object_predictions_cannot_travel_and_are_refused_with_why(workspace, cli, tmp_path):
    kit = copy_kit(tmp_path, "iris_classifier")
    edit_problem(kit, "rw.prediction_types.make_multiclass(\n    label_names=_prediction_label_names)",
                 "rw.prediction_types.make_detection()")
    message = refused(workspace, cli, kit)
    assert message == (
        "error: problem.py: prediction type 'detection' holds Python objects (dtype object) in "
        "its y_pred, which cannot travel from hosts as .npy without pickle: datarun cannot run "
        "this kit")


def test_labels_the_kits_predictions_cannot_read_are_refused(workspace, cli, tmp_path):
    """Two target columns declared, one given: ramp-test's scoring would fail on every fold."""
    kit = copy_kit(tmp_path, "diabetes_regressor")
    edit_problem(kit, "make_regression()", "make_regression(label_names=['a', 'b'])")
    message = refused(workspace, cli, kit)
    assert message == (
        "error: problem.py: Predictions(y_true=y_train) fails, as ramp-test's scoring would: "
        "ValueError: Wrong y_pred dimensions: y_pred should be 2D with 2 columns, instead its "
        "shape is (160,)")


def test_failing_data_function_shows_where(workspace, cli, tmp_path):
    kit = copy_kit(tmp_path, "iris_classifier")
    (kit / "data" / "test.csv").unlink()
    message = refused(workspace, cli, kit)
    assert message.startswith("error: problem.py get_test_data failed: FileNotFoundError: ")
    assert message.endswith("(problem.py line 26, in _read_data)")


def test_labels_outside_label_names_are_refused(workspace, cli, tmp_path):
    kit = copy_kit(tmp_path, "iris_classifier")
    edit_problem(kit, "['setosa', 'versicolor', 'virginica']", "['setosa', 'versicolor', 'other']")
    message = refused(workspace, cli, kit)
    assert message == ("error: problem.py: y_train holds label 'virginica', which is not in "
                       "Predictions' label_names ['setosa', 'versicolor', 'other']")


def test_same_kit_twice_says_to_rename_the_folder(workspace, cli):
    assert add(cli, KITS / "iris_classifier").exit_code == 0
    message = refused(workspace, cli, KITS / "iris_classifier")
    assert message == ("error: problem 'iris_classifier' is already registered: a RAMP kit is "
                       "registered under its folder's name: rename the folder")


def test_folder_name_that_is_no_problem_name(workspace, cli, tmp_path):
    kit = copy_kit(tmp_path, "iris_classifier", as_name="iris.v2")
    message = refused(workspace, cli, kit)
    assert "'iris.v2' may hold only letters, digits, '_' and '-': rename the folder" in message


def test_missing_ramp_workflow_locally(workspace, cli, monkeypatch):
    monkeypatch.setitem(sys.modules, "rampwf", None)  # import rampwf now raises ImportError
    message = refused(workspace, cli, KITS / "iris_classifier")
    assert message == ("error: this is a RAMP kit (problem.py), which needs ramp-workflow: "
                       "pip install 'datarun[ramp]'")


def test_bad_folds_are_refused(workspace, cli, tmp_path):
    kit = copy_kit(tmp_path, "iris_classifier")
    edit_problem(kit, "    return cv.split(X, y)\n",
                 "    return [(list(range(10)), [500, 501])]\n")
    message = refused(workspace, cli, kit)
    assert message == ("error: problem.py: get_cv fold 0 valid indices fall outside the 110 "
                       "training rows")


IRIS_READ = "    return _read_data(path, 'train.csv')\n"
BROKEN_KITS = [
    # (kit, text in problem.py, replacement, the one-line message)
    ("iris_classifier", IRIS_READ, "    return 42\n",
     "problem.py: get_train_data must return (X, y), got int"),
    ("iris_classifier", IRIS_READ, "    return None, None\n",
     "problem.py: get_train_data returned no data (None)"),
    ("iris_classifier", IRIS_READ, "    return 42, [1]\n", "problem.py: X_train has no length (int)"),
    ("iris_classifier", IRIS_READ, "    X, y = _read_data(path, 'train.csv')\n    return X, y[:-1]\n",
     "problem.py: get_train_data gives 110 rows of X but 109 labels"),
    ("iris_classifier", "    return _read_data(path, 'test.csv')\n",
     "    X, y = _read_data(path, 'test.csv')\n    return X[:-2], y\n",
     "problem.py: get_test_data gives 38 rows of X but 40 labels"),
    ("iris_classifier", IRIS_READ, "    X, y = _read_data(path, 'train.csv')\n    return X, X\n",
     "problem.py: y_train has shape (110, 4); a classification kit needs one label per row"),
    ("diabetes_regressor", "    y_array = data[_target_column_name].values\n",
     "    y_array = data[_target_column_name].astype(str).values + 'x'\n",
     "problem.py: y_train is not numeric, but the predictions are regression"),
    ("iris_classifier", "    return cv.split(X, y)\n", "    return []\n",
     "problem.py: get_cv gave no folds"),
    ("iris_classifier", "    return cv.split(X, y)\n", "    return [1, 2]\n",
     "problem.py: get_cv fold 0 is not a (train, valid) pair"),
    ("iris_classifier", "    return cv.split(X, y)\n",
     "    import numpy as np\n    return [(np.ones(5, bool), np.ones(5, bool))]\n",
     "problem.py: get_cv fold 0 gives a train mask of 5 rows for 110 training rows"),
    ("iris_classifier", "    return cv.split(X, y)\n", "    return [([0.5, 1.5], [2.0])]\n",
     "problem.py: get_cv fold 0 train indices are not whole numbers"),
    ("iris_classifier", "    return cv.split(X, y)\n", "    return [(list(range(5)), [])]\n",
     "problem.py: get_cv fold 0 has no train or no valid rows"),
    ("iris_classifier", "    return _read_data(path, 'test.csv')\n",
     "    X, y = _read_data(path, 'test.csv')\n    return [lambda: 0] * len(y), y\n",
     "problem.py: X_test cannot be pickled to ship to hosts: "),
    ("iris_classifier", "label_names=_prediction_label_names)", "label_names=['setosa'])",
     "problem.py: Predictions has 1 label names; classification needs two or more"),
    ("iris_classifier", "score_types = [", "score_types = []\n_unused = [",
     "problem.py: score_types must be a non-empty list of score types"),
    ("iris_classifier", "score_types = [", "score_types = ['accuracy',",
     "problem.py: score_types holds 'accuracy', not a ramp-workflow score type"),
    ("iris_classifier", "BalancedAccuracy(name='bal_acc')", "BalancedAccuracy(name='acc')",
     "problem.py: two score types share a name (['acc', 'nll', 'acc']): give each its own name="),
]


@pytest.mark.parametrize(("kit", "old", "new", "message"), BROKEN_KITS,
                         ids=[case[3][12:60] for case in BROKEN_KITS])
def test_broken_kit_is_refused_in_one_line(workspace, cli, tmp_path, kit, old, new, message):
    folder = copy_kit(tmp_path, kit)
    edit_problem(folder, old, new)
    assert refused(workspace, cli, folder).startswith(f"error: {message}")


def test_kit_named_like_an_event_says_to_rename_the_folder(workspace, cli):
    from conftest import EXAMPLES

    assert cli("problem", "add", EXAMPLES / "iris").exit_code == 0
    added = cli("event", "add", "iris_classifier", "--problem", "iris")
    assert added.exit_code == 0, added.stderr
    message = refused(workspace, cli, KITS / "iris_classifier")
    assert message == ("error: 'iris_classifier' is already the name of an event: a RAMP kit is "
                       "registered under its folder's name: rename the folder")
