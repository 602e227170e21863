"""Terminal output fit for people, through the CLI as a subprocess: tables fit 80 and 100
columns (columns dropped in the stated order, names abbreviated, scores never cut), piped
output is not padded, `--code` is raw when piped, task ids and tracebacks are shown, and
`--version`, `-h`, completion and Click's usage errors behave.
"""

import json
import os
import subprocess
import sys

import pytest
import sitedata
from conftest import EXAMPLES
from rich.cells import cell_len

from datarun.cli.render import LEADERBOARD_DROP_ORDER


def datarun(workspace, *args, columns: int | None = None, code: int = 0) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key != "COLUMNS"}
    env["DATARUN_HOME"] = str(workspace.root) if workspace else env.get("DATARUN_HOME", "")
    if columns:
        env["COLUMNS"] = str(columns)
    result = subprocess.run([sys.executable, "-m", "datarun", *map(str, args)], capture_output=True,
                            text=True, env=env, timeout=120)
    assert result.returncode == code, (result.returncode, result.stderr)
    return result


@pytest.fixture
def board_ws(workspace, cli):
    return workspace, sitedata.make_workspace(workspace, cli)


@pytest.mark.parametrize("columns", [80, 100])
@pytest.mark.parametrize("private", [False, True])
def test_a_leaderboard_fits_the_terminal_and_never_cuts_a_score(board_ws, columns, private):
    workspace, ids = board_ws
    view = ["--private"] if private else []
    text = datarun(workspace, "leaderboard", "iris", *view, columns=columns).stdout
    lines = text.splitlines()
    assert lines and all(cell_len(line) <= columns for line in lines), max(map(cell_len, lines))
    assert "0.…" not in text and ".…" not in text
    board = json.loads(datarun(workspace, "leaderboard", "iris", *view, "--json").stdout)
    for row in board["rows"]:
        if row["score"] is not None:
            assert f"{row['score']:.4f}" in text  # the official score, whole
        if private and row["test"]["accuracy"] is not None:
            assert f"{row['test']['accuracy']:.4f}" in text
    assert "accuracy ↑" in text and "rank" in text and "team" in text
    dropped = text[text.index("not shown at this width:"):]
    assert "submitted" in dropped  # the first to go
    if columns == 100:
        assert "log_loss" in lines[1] or "log_loss" in lines[2]  # other scores stay longer than times


def test_columns_go_in_the_stated_order(board_ws):
    workspace, _ = board_ws
    shown_at = {}
    for columns in range(60, 260, 10):
        header = datarun(workspace, "leaderboard", "iris", columns=columns).stdout.splitlines()[2]
        shown_at[columns] = [cell.strip() for cell in header.split("┃")[1:-1]]
    everything = shown_at[250]
    assert everything[-6:] == ["train", "valid", "test", "cpu", "memory", "submitted"]
    gone_first = [column for column in everything if column not in shown_at[60]]
    order = [min(width for width, shown in shown_at.items() if column in shown) for column in gone_first]
    by_width = [column for _, column in sorted(zip(order, gone_first, strict=True), key=lambda p: -p[0])]
    assert by_width[0] == "submitted" and by_width.index("memory") < by_width.index("contrib")
    assert len(LEADERBOARD_DROP_ORDER) == 9  # the README quotes this order


def test_piped_output_is_not_padded_and_keeps_every_column(board_ws):
    workspace, _ = board_ws
    text = datarun(workspace, "leaderboard", "iris", "--private").stdout
    assert all(line == line.rstrip() for line in text.splitlines())
    assert "submitted" in text and "test roc_auc" in text and "not shown" not in text
    status = datarun(workspace, "status").stdout
    assert all(line == line.rstrip() for line in status.splitlines())


def test_submission_show_lists_task_ids_and_fits_80_columns(board_ws, cli):
    workspace, ids = board_ws
    details = cli("submission", "show", ids["edsger"], "--json").json()
    text = datarun(workspace, "submission", "show", ids["edsger"], columns=80).stdout
    assert all(cell_len(line) <= 80 for line in text.splitlines())
    rows = [line.split("│") for line in text.splitlines() if line.startswith("│")]
    assert [int(cells[2]) for cells in rows if cells[1].strip().isdigit()] == [t["id"] for t in details["tasks"]]
    assert "task" in text.splitlines()[2]


def test_code_piped_is_the_file_and_raw_keeps_its_exact_bytes(board_ws, cli, tmp_path):
    workspace, ids = board_ws
    original = (EXAMPLES / "iris" / "submissions" / "logreg" / "estimator.py").read_text()
    assert datarun(workspace, "submission", "show", ids["ada"], "--code").stdout == original
    assert datarun(workspace, "submission", "show", ids["ada"], "--code", "--raw").stdout == original
    # Code holding an escape character: stripped when piped (a pipe may end on a terminal),
    # kept by --raw.
    folder = tmp_path / "evil"
    folder.mkdir()
    (folder / "estimator.py").write_text(original + "BELL = '\x07'  # \x1b[2J\n")
    evil = cli("submit", "iris", folder, "--team", "mallory", "--json", "--force").json()["id"]
    piped = datarun(workspace, "submission", "show", evil, "--code").stdout
    assert "\x1b" not in piped and piped.startswith(original)
    raw = datarun(workspace, "submission", "show", evil, "--code", "--raw").stdout
    assert raw == (folder / "estimator.py").read_text()


def test_logs_of_a_failed_task_show_its_traceback(board_ws):
    workspace, ids = board_ws
    from datarun.store.db import open_db

    task = open_db(workspace).execute(
        "SELECT id FROM tasks WHERE submission = ? AND state = 'failed'", [ids["edsger"]]).fetchone()[0]
    text = datarun(workspace, "logs", task).stdout
    assert "── fit_error" in text and "ValueError: the forest refused fold two" in text
    data = json.loads(datarun(workspace, "logs", task, "--json").stdout)
    assert data["error_kind"] == "fit_error" and data["error"] == sitedata.ERROR


def test_version_short_help_and_completion(workspace):
    from datarun import __version__

    assert datarun(workspace, "--version").stdout == f"datarun {__version__}\n"
    assert datarun(workspace, "-h").stdout.startswith("Usage: ")
    assert "--private" in datarun(workspace, "leaderboard", "-h").stdout
    assert "--install-completion" in datarun(workspace, "--help").stdout
    # The script a shell sources, asked for as a shell's start-up file asks for it (Typer
    # would otherwise guess the shell from the parent process: pytest's, not a shell).
    script = subprocess.run([sys.executable, "-m", "datarun"], capture_output=True, text=True,
                            env={**os.environ, "_DATARUN_COMPLETE": "source_bash"}, timeout=120)
    assert script.returncode == 0 and "_datarun_completion" in script.stdout


@pytest.mark.parametrize("args, message", [
    (["leaderboard", "iris", "--bogus"], "error: no such option: --bogus (`datarun leaderboard --help`)"),
    (["submission", "show"], "error: missing argument 'ID' (`datarun submission show --help`)"),
    (["submission", "shw"], "error: no such command 'shw'. Did you mean 'show'? (`datarun submission --help`)"),
    (["train", "--submission", "abc"], "error: invalid value for '--submission': Input should be a "
                                       "valid integer, unable to parse string as an integer "
                                       "(`datarun train --help`)"),
])
def test_usage_errors_are_one_line_with_exit_2(workspace, args, message):
    result = subprocess.run([sys.executable, "-m", "datarun", *args], capture_output=True, text=True,
                            env={**os.environ, "DATARUN_HOME": str(workspace.root)}, timeout=60)
    assert result.returncode == 2
    assert result.stderr == message + "\n"
    assert result.stdout == ""
    as_json = subprocess.run([sys.executable, "-m", "datarun", *args, "--json"], capture_output=True,
                             text=True, env={**os.environ, "DATARUN_HOME": str(workspace.root)}, timeout=60)
    assert as_json.returncode == 2
    assert json.loads(as_json.stdout)["error"]["kind"] == "usage"
