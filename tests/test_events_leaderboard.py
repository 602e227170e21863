"""Per-event leaderboards, scores withheld before `public-opens`, and the CSV export.

No training here: submissions go in through the CLI, then their tasks are marked done and
scored with rows written straight into the workspace's real SQLite file.
"""

import csv
import io

import pytest
from conftest import EXAMPLES

from datarun.store.db import open_db

SUBMISSIONS = EXAMPLES / "iris" / "submissions"
SCORES = ["accuracy", "log_loss", "roc_auc"]


@pytest.fixture
def iris(workspace, cli):
    result = cli("problem", "add", EXAMPLES / "iris")
    assert result.exit_code == 0, result.stderr
    return workspace


def submit_scored(workspace, cli, folder, team, accuracy, event=None):
    args = ["submit", "iris", SUBMISSIONS / folder, "--team", team, "--json"]
    sid = cli(*args, *(["--event", event] if event else [])).json()["id"]
    db = open_db(workspace)
    with db.conn:
        db.execute("UPDATE tasks SET state = 'done', train_time = 0.5, valid_time = 0.25, "
                   "test_time = 0.125, cpu_time = 1.0, peak_memory = 1000 + fold "
                   "WHERE submission = ?", [sid])
        for (task, fold) in db.execute("SELECT id, fold FROM tasks WHERE submission = ?", [sid]).fetchall():
            db.execute("INSERT INTO scores VALUES (?, 'valid', 'accuracy', ?)", [task, accuracy + fold / 100])
        for split, offset in (("valid", 0.0), ("test", -0.5)):
            for score, value in zip(SCORES, (accuracy + offset, 1 - accuracy, 0.9), strict=True):
                db.execute("INSERT INTO bagged_scores (submission, split, score, value) "
                           "VALUES (?, ?, ?, ?)", [sid, split, score, value])
    return sid


@pytest.fixture
def board(iris, cli):
    cli("event", "add", "spring", "--problem", "iris")
    cli("event", "add", "secret", "--problem", "iris", "--public-opens", "2999-01-01")
    ids = {
        "ada": submit_scored(iris, cli, "logreg", "ada", 0.9, "spring"),
        "grace": submit_scored(iris, cli, "knn", "grace", 0.95, "spring"),
        "eve": submit_scored(iris, cli, "random_forest", "eve", 0.99, "secret"),
        "bob": submit_scored(iris, cli, "logreg", "bob", 0.5),
    }
    return ids


def rows(result):
    assert result.exit_code == 0, result.stderr
    return [(r["rank"], r["team"], r["score"]) for r in result.json()["rows"]]


def test_an_event_leaderboard_shows_only_that_events_submissions(board, cli):
    assert rows(cli("leaderboard", "iris", "--event", "spring", "--json")) == [
        (1, "grace", 0.95), (2, "ada", 0.9)]
    assert rows(cli("leaderboard", "iris", "--event", "iris", "--json")) == [(1, "bob", 0.5)]


def test_before_public_opens_the_public_view_withholds_scores_and_says_so(board, cli):
    result = cli("leaderboard", "iris", "--event", "secret", "--json")
    assert rows(result) == [(None, "eve", None)]
    row = result.json()["rows"][0]
    assert row["scores_hidden"] is True and row["contributivity"] is None
    assert set(row["valid"].values()) == set(row["valid_mean"].values()) == {None}
    assert "scores not public yet (event secret until 2999-01-01 00:00 UTC)" in result.stderr
    assert "organisers see them with --private" in result.stderr
    private = cli("leaderboard", "iris", "--event", "secret", "--private", "--json")
    assert rows(private) == [(1, "eve", 0.99)]
    assert private.json()["rows"][0]["test"]["accuracy"] == pytest.approx(0.49)
    assert "not public" not in private.stderr


def test_the_problem_wide_public_board_ranks_public_scores_and_withholds_the_rest(board, cli):
    result = cli("leaderboard", "iris", "--json")
    assert rows(result) == [(1, "grace", 0.95), (2, "ada", 0.9), (3, "bob", 0.5), (None, "eve", None)]
    assert result.json()["hidden_events"] == [{"name": "secret", "public_opens_at": "2999-01-01T00:00:00Z"}]
    assert rows(cli("leaderboard", "iris", "--private", "--json"))[0] == (1, "eve", 0.99)
    table = cli("leaderboard", "iris").stdout
    assert "iris — public leaderboard" in table and "0.9500" in table and "0.9900" not in table


def test_the_public_board_shows_scores_once_public_opens_has_passed(iris, cli):
    cli("event", "add", "spring", "--problem", "iris", "--public-opens", "2000-01-01")
    submit_scored(iris, cli, "logreg", "ada", 0.9, "spring")
    result = cli("leaderboard", "iris", "--event", "spring", "--json")
    assert rows(result) == [(1, "ada", 0.9)] and "not public" not in result.stderr


def test_csv_has_every_column_flat_with_stable_names(board, cli):
    result = cli("leaderboard", "iris", "--event", "spring", "--csv")
    assert result.exit_code == 0, result.stderr
    reader = csv.DictReader(io.StringIO(result.stdout))
    per_score = [f"{prefix}_{name}" for name in SCORES for prefix in ("valid", "valid_mean", "valid_std")]
    assert reader.fieldnames == [
        "rank", "id", "team", "submission", "event", "score", *per_score, "contributivity",
        "train_time", "valid_time", "test_time", "cpu_time", "peak_memory", "submitted_at",
        "scores_hidden", "state", "folds", "folds_scored", "note"]
    first = next(reader)
    assert (first["rank"], first["id"], first["team"], first["submission"], first["event"]) == (
        "1", str(board["grace"]), "grace", "knn", "spring")
    assert float(first["score"]) == 0.95 and float(first["valid_log_loss"]) == pytest.approx(0.05)
    assert float(first["valid_mean_accuracy"]) == pytest.approx(0.97)
    assert float(first["valid_std_accuracy"]) == pytest.approx(0.0141421356)
    assert first["valid_mean_roc_auc"] == "" and first["contributivity"] == ""
    assert (first["train_time"], first["cpu_time"], first["peak_memory"]) == ("2.5", "5.0", "1004")
    assert first["submitted_at"].endswith("Z") and first["scores_hidden"] == "0"
    assert (first["state"], first["folds"], first["folds_scored"]) == ("scored", "5", "5")


def test_private_csv_adds_test_columns_and_shows_withheld_scores(board, cli):
    reader = csv.DictReader(io.StringIO(cli("leaderboard", "iris", "--private", "--csv").stdout))
    test_columns = [f"test_{name}" for name in SCORES]
    start = reader.fieldnames.index("valid_std_roc_auc") + 1
    assert reader.fieldnames[start:start + 4] == [*test_columns, "contributivity"]
    first = next(reader)
    assert (first["team"], first["test_accuracy"], first["scores_hidden"]) == ("eve", "0.49", "0")
    public = list(csv.DictReader(io.StringIO(cli("leaderboard", "iris", "--csv").stdout)))
    assert not set(test_columns) & set(public[0])
    assert (public[-1]["team"], public[-1]["rank"], public[-1]["score"], public[-1]["scores_hidden"]) == (
        "eve", "", "", "1")


@pytest.mark.parametrize(
    "args, message",
    [
        (["leaderboard", "iris", "--event", "autumn"], "unknown event 'autumn'"),
        (["leaderboard", "nope"], "unknown problem 'nope'"),
        (["leaderboard", "iris", "--json", "--csv"], "--json and --csv both print on stdout: choose one"),
    ],
)
def test_bad_leaderboard_arguments_are_refused(iris, cli, args, message):
    result = cli(*args)
    assert result.exit_code == 2
    assert message in result.stderr


def test_an_event_of_another_problem_is_refused(iris, cli):
    assert cli("problem", "add", EXAMPLES / "diabetes").exit_code == 0
    cli("event", "add", "spring", "--problem", "diabetes")
    result = cli("leaderboard", "iris", "--event", "spring")
    assert result.exit_code == 2
    assert "event 'spring' is for problem 'diabetes', not 'iris'" in result.stderr
