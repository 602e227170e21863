"""`datarun problem add|list|show`: JSON on stdout, tables at a fixed width, exit codes."""

from io import StringIO
from pathlib import Path

import pytest
from rich.console import Console

from datarun.cli.problem import balance_table, problem_view, problems_table

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def render(renderable) -> str:
    console = Console(file=StringIO(), width=100, color_system=None)
    console.print(renderable)
    return console.file.getvalue()


def test_add_prints_the_problem_summary_as_json(cli, workspace):
    result = cli("problem", "add", EXAMPLES / "iris", "--json")
    assert result.exit_code == 0, result.stderr
    info = result.json()
    assert info["name"] == "iris" and info["n_train"] == 120 and info["n_test"] == 30
    assert [f["n_valid"] for f in info["folds"]] == [24] * 5
    assert info["cv"] == {"strategy": "stratified-kfold", "n_splits": 5, "seed": 42,
                          "test_size": None}
    assert result.stderr == ""


def test_add_without_json_says_what_it_registered_on_stderr(cli, workspace):
    result = cli("problem", "add", EXAMPLES / "diabetes")
    assert result.exit_code == 0
    assert "Registered problem 'diabetes': 353 train rows, 89 test rows, 10 features, 5 folds" in result.stderr
    assert "Diabetes progression after one year" in result.stdout


def test_list_and_show_as_json(cli, workspace):
    assert cli("problem", "list", "--json").json()["problems"] == []
    cli("problem", "add", EXAMPLES / "iris")
    cli("problem", "add", EXAMPLES / "diabetes")
    listed = cli("problem", "list", "--json").json()["problems"]
    assert [p["name"] for p in listed] == ["diabetes", "iris"]
    assert listed[0]["scores"] == ["rmse", "mae", "r2"] and listed[0]["n_folds"] == 5
    shown = cli("problem", "show", "diabetes", "--json").json()
    assert shown["kind"] == "regression" and shown["classes"] is None
    assert shown["limits"] == {"wall_time": 60.0, "cpu_time": None, "memory": 1_000_000_000}
    assert set(shown["target_summary"]["train"]) == {"mean", "std", "min", "max"}


def test_list_with_nothing_registered_says_so(cli, workspace):
    result = cli("problem", "list")
    assert result.exit_code == 0 and result.stdout == ""
    assert "No problems registered yet" in result.stderr


def test_show_renders_settings_balance_and_folds(cli, workspace):
    info = cli("problem", "add", EXAMPLES / "iris", "--json").json()
    text = render(problem_view(info))
    assert "iris: Iris species" in text
    assert "120 train rows, 30 test rows, 4 features" in text
    assert "accuracy (higher is better, official), log_loss (lower is better)" in text
    assert "wall time 1m00s, cpu time none, memory 1.0 GB" in text
    assert "stratified-kfold, 5 splits, shuffled with seed 42" in text
    assert "data/test.csv (a file of its own)" in text
    balance = render(balance_table(info)).splitlines()
    assert any(line.split("│")[1:4] == [" setosa     ", "    40 ", "   10 "] for line in balance)
    assert all(len(line) <= 100 for line in text.splitlines())
    shown = cli("problem", "show", "iris")
    assert shown.exit_code == 0 and "Folds" in shown.stdout


def test_the_problems_table_lists_one_row_per_problem(cli, workspace):
    cli("problem", "add", EXAMPLES / "iris")
    cli("problem", "add", EXAMPLES / "diabetes")
    from datarun.problems.registered import list_problems
    from datarun.store.db import open_db

    db = open_db(workspace)
    text = render(problems_table(list_problems(db)))
    db.conn.close()
    lines = [line for line in text.splitlines() if "│" in line]
    assert lines[0].split("│")[1].strip() == "diabetes" and "kfold x5" in lines[0]
    assert "stratified-kfold x5" in lines[1] and "120" in lines[1]
    assert "regression" in text and "rmse, mae, r2" in text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("problem", "add", "{tmp}"), "has no problem.toml: a native kit needs one"),
        (("problem", "add", "{tmp}/nowhere"), "does not exist"),
        (("problem", "show", "nope"), "unknown problem 'nope' (none registered yet"),
    ],
)
def test_bad_input_exits_2_with_one_line(cli, workspace, tmp_path, args, message):
    result = cli(*(a.format(tmp=tmp_path) for a in args))
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ") and message in result.stderr
    assert result.stderr.count("\n") == 1 and result.stdout == ""


def test_a_toml_syntax_error_is_reported_with_its_line(cli, workspace, tmp_path):
    (tmp_path / "problem.toml").write_text('name = "x"\nkind = classification\n')
    result = cli("problem", "add", tmp_path)
    assert result.exit_code == 2
    assert "TOML syntax error" in result.stderr and "line 2" in result.stderr


def test_adding_a_problem_twice_exits_2_and_keeps_the_first(cli, workspace):
    cli("problem", "add", EXAMPLES / "iris")
    result = cli("problem", "add", EXAMPLES / "iris", "--json")
    assert result.exit_code == 2 and result.json()["error"]["kind"] == "invalid"
    assert "error: problem 'iris' is already registered" in result.stderr
    assert [p["name"] for p in cli("problem", "list", "--json").json()["problems"]] == ["iris"]


def test_problem_commands_need_a_workspace(cli):
    result = cli("problem", "list")
    assert result.exit_code == 2
    assert "is not a datarun workspace" in result.stderr
