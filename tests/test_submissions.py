"""Submitting: what is accepted, what is refused (and that a refusal stores nothing)."""

import os
import shutil

import pytest
from conftest import EXAMPLES

LOGREG = EXAMPLES / "iris" / "submissions" / "logreg"


@pytest.fixture
def iris(workspace, cli):
    result = cli("problem", "add", EXAMPLES / "iris")
    assert result.exit_code == 0, result.stderr
    return workspace


def submission(tmp_path, text="from sklearn.dummy import DummyClassifier\n\n"
               "def get_estimator():\n    return DummyClassifier()\n", name="sub"):
    folder = tmp_path / name
    folder.mkdir()
    (folder / "estimator.py").write_text(text)
    return folder


def count_submissions(cli):
    return len(cli("submission", "list", "--json").json()["submissions"])


def test_submit_stores_and_queues_one_task_per_fold(iris, cli):
    result = cli("submit", "iris", LOGREG, "--team", "ada", "--json")
    assert result.exit_code == 0, result.stderr
    data = result.json()
    assert data["created"] is True and data["tasks"] == 5 and data["name"] == "logreg"
    rows = cli("submission", "list", "--json").json()["submissions"]
    assert [(r["id"], r["team"], r["state"], r["tasks"]) for r in rows] == [
        (data["id"], "ada", "queued", {"queued": 5})]


def test_identical_resubmission_is_recognised_and_not_queued_again(iris, cli, tmp_path):
    first = cli("submit", "iris", LOGREG, "--team", "ada", "--json").json()
    copy = tmp_path / "again"
    shutil.copytree(LOGREG, copy)
    second = cli("submit", "iris", copy, "--team", "ada", "--name", "again")
    assert second.exit_code == 0
    assert f"identical to submission {first['id']}" in second.stderr
    assert count_submissions(cli) == 1
    # The same code from another team is another submission.
    assert cli("submit", "iris", LOGREG, "--team", "grace", "--json").json()["created"] is True


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: (d / "estimator.py").unlink(), "no estimator.py in"),
        (lambda d: (d / "notes.txt").write_text("hi"), "unexpected file notes.txt"),
        (lambda d: (d / "extra").mkdir(), "unexpected folder extra/"),
        (lambda d: (d / "estimator.py").write_text("def get_estimator(:\n"), "estimator.py line 1:"),
        (lambda d: (d / "estimator.py").write_text("x = 1\n"), "does not define get_estimator()"),
        (lambda d: (d / "estimator.py").write_bytes(b"\x00\x01binary"), "is a binary file"),
        (lambda d: (d / "estimator.py").write_bytes(b"\xff\xfe caf\xe9"), "is not UTF-8 text"),
        (lambda d: (d / "estimator.py").write_text("# pad\n" * 100_000), "estimator.py is 600.0 kB; the cap is 512 kB a code file"),
    ],
)
def test_bad_submission_folders_are_refused_with_what_to_fix(iris, cli, tmp_path, make, message):
    folder = submission(tmp_path)
    make(folder)
    result = cli("submit", "iris", folder, "--team", "ada")
    assert result.exit_code == 2
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert count_submissions(cli) == 0


def test_a_link_that_climbs_out_of_the_folder_is_refused(iris, cli, tmp_path):
    secret = tmp_path / "secret.py"
    secret.write_text("def get_estimator(): pass\n")
    folder = tmp_path / "sub"
    folder.mkdir()
    os.symlink("../secret.py", folder / "estimator.py")
    result = cli("submit", "iris", folder, "--team", "ada")
    assert result.exit_code == 2
    assert "estimator.py is a link (to ../secret.py)" in result.stderr
    assert count_submissions(cli) == 0


@pytest.mark.parametrize(
    "args, message",
    [
        (["submit", "nope", str(LOGREG), "--team", "ada"], "unknown problem 'nope'"),
        (["submit", "iris", "/does/not/exist", "--team", "ada"], "submission folder /does/not/exist does not exist"),
        (["submit", "iris", str(LOGREG / "estimator.py"), "--team", "ada"], "is not a folder"),
        (["submit", "iris", str(LOGREG), "--team", "  "], "team must not be empty"),
        (["submit", "iris", str(LOGREG), "--team", "a\nb"], "error: team 'a\\nb' holds U+000A, a control character: type the name without it"),
        (["submit", "iris", str(LOGREG), "--team", "x" * 101], "team is longer than 100 characters"),
        (["submission", "show", "999"], "no submission 999"),
        (["submission", "show", "abc"], "a submission id is a number"),
        (["submission", "list", "--problem", "nope"], "unknown problem 'nope'"),
    ],
)
def test_bad_arguments_are_refused(iris, cli, args, message):
    result = cli(*args)
    assert result.exit_code == 2
    assert message in result.stderr
    assert count_submissions(cli) == 0


def test_team_names_with_shell_characters_are_stored_verbatim(iris, cli):
    team = "o'brien; $(rm -rf ~) `id` \"quoted\""
    data = cli("submit", "iris", LOGREG, "--team", team, "--json").json()
    assert cli("submission", "show", str(data["id"]), "--json").json()["team"] == team


def test_show_code_returns_the_participants_files(iris, cli):
    data = cli("submit", "iris", LOGREG, "--team", "ada", "--json").json()
    files = cli("submission", "show", str(data["id"]), "--code", "--json").json()["files"]
    assert files == {"estimator.py": (LOGREG / "estimator.py").read_text()}
    text = cli("submission", "show", str(data["id"]), "--code").stdout
    assert "get_estimator" in text
