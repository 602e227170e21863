"""`datarun export` on a native problem, and each of its refusals.

The RAMP side (a RAMP submission's export read back by rampwf and compared with
ramp-test's own output) is in test_ramp_same_numbers.py.
"""

import csv
import json

import pandas as pd
import pytest
from conftest import EXAMPLES, stop_runners


@pytest.fixture
def trained(workspace, cli):
    assert cli("problem", "add", EXAMPLES / "iris").exit_code == 0
    result = cli("submit", "iris", EXAMPLES / "iris" / "submissions" / "logreg", "--team", "ada",
                 "--json")
    submission = result.json()["id"]
    assert cli("train", "--json").exit_code == 0
    yield submission
    stop_runners(workspace)


def test_problem_tasks_as_csv_and_json(trained, cli, tmp_path):
    shown = cli("submission", "show", trained, "--json", "--private").json()
    out = tmp_path / "tasks.csv"
    result = cli("export", "iris", "--csv", out, "--private")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""
    assert f"Wrote 5 tasks of problem iris to {out}" in result.stderr
    with open(out) as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 5
    assert list(rows[0])[:8] == ["problem", "event", "submission_id", "team", "submission",
                                 "task_id", "fold", "state"]
    for row, task in zip(rows, shown["tasks"], strict=True):
        assert (row["fold"], row["state"], row["team"]) == (str(task["fold"]), "done", "ada")
        assert float(row["valid_accuracy"]) == task["scores"]["valid"]["accuracy"]
        assert float(row["test_log_loss"]) == task["scores"]["test"]["log_loss"]
        assert int(row["peak_memory"]) == task["peak_memory"]
        assert float(row["cpu_time"]) == task["cpu_time"]

    result = cli("export", "iris", "--json", "-", "--private")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["problem"] == "iris" and len(data["tasks"]) == 5
    assert data["columns"] == list(rows[0])
    assert data["tasks"][0]["valid_accuracy"] == shown["tasks"][0]["scores"]["valid"]["accuracy"]


def test_native_submission_exports_in_ramp_layout(trained, cli, tmp_path):
    out = tmp_path / "training_output"
    result = cli("export", trained, "--ramp", out, "--private")
    assert result.exit_code == 0, result.stderr
    shown = cli("submission", "show", trained, "--json", "--private").json()
    bagged = pd.read_csv(out / "bagged_scores.csv")
    assert list(bagged.columns) == ["step", "n_bag", "accuracy", "log_loss", "roc_auc"]
    last = bagged[bagged["n_bag"] == 4].set_index("step")
    for step in ("valid", "test"):
        for score in ("accuracy", "log_loss"):
            assert last.loc[step, score] == pytest.approx(shown["bagged"][step][score], rel=1e-12)
    fold = pd.read_csv(out / "fold_2" / "scores.csv", index_col=0)
    assert fold.loc["valid", "accuracy"] == shown["tasks"][2]["scores"]["valid"]["accuracy"]
    assert fold.loc["test", "time"] == pytest.approx(shown["tasks"][2]["test_time"])
    import numpy as np

    with np.load(out / "fold_2" / "y_pred_train.npz") as npz:
        assert npz["y_pred"].shape == (120, 3)


def test_export_refusals(trained, cli, tmp_path):
    def refused(*args, message):
        result = cli("export", *args)
        assert result.exit_code == 2, result.stdout
        assert result.stderr.strip() == f"error: {message}"

    refused("iris", message="give exactly one of --ramp DIR (a submission), --csv FILE or "
            "--json FILE (a problem)")
    refused("iris", "--csv", tmp_path / "a", "--json", tmp_path / "b",
            message="give exactly one of --ramp DIR (a submission), --csv FILE or --json FILE "
            "(a problem), not --csv and --json")
    refused("iris", "--ramp", tmp_path / "x", message="a submission id is a number, got 'iris'")
    refused("99", "--ramp", tmp_path / "x",
            message="no submission 99: `datarun submission list` shows the ids")
    refused("nope", "--csv", tmp_path / "a.csv",
            message="unknown problem 'nope' (registered: iris)")
    refused("iris", "--csv", tmp_path, message=f"{tmp_path} is a folder: give a file name to "
            "write the CSV to")
    a_file = tmp_path / "file"
    a_file.write_text("")
    refused(trained, "--ramp", a_file,
            message=f"{a_file} is a file: give a folder to write training_output/ into")
    again = cli("submit", "iris", EXAMPLES / "iris" / "submissions" / "knn", "--team", "bob",
                "--json").json()["id"]
    refused(again, "--ramp", tmp_path / "out", message=f"submission {again} has 0 of 5 folds "
            "done: export it once `datarun train` has run every fold")
    assert not (tmp_path / "out").exists()
    refused(trained, "--ramp", a_file / "under",
            message=f"cannot write to {a_file / 'under'}: Not a directory")
    refused("iris", "--csv", tmp_path / "missing" / "a.csv",
            message=f"cannot write {tmp_path / 'missing' / 'a.csv'}: No such file or directory")
