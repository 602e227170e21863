"""The CLI's shared promises: exit codes, --help, `python -m datarun`, the wheel, renderers."""

import subprocess
import sys
import zipfile
from io import StringIO

from conftest import REPO
from rich.console import Console

from datarun.cli.render import leaderboard_table, status_tables
from datarun.errors import EXIT_CODES


def render(table, width=100) -> str:
    console = Console(file=StringIO(), width=width, color_system=None)
    console.print(table)
    return console.file.getvalue()


def test_help_lists_every_exit_code(cli):
    text = cli("--help").stdout
    for code, meaning in EXIT_CODES.items():
        assert f"{code} {meaning.split()[0]}" in " ".join(text.split())


def test_python_dash_m_runs_the_cli():
    result = subprocess.run([sys.executable, "-m", "datarun", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "leaderboard" in result.stdout


def test_a_command_outside_a_workspace_fails_with_exit_2(cli, tmp_path, monkeypatch):
    monkeypatch.delenv("DATARUN_HOME")
    monkeypatch.chdir(tmp_path)
    result = cli("status")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: no datarun workspace here")


def test_the_wheel_ships_the_harness_and_the_site_templates(tmp_path):
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp_path), str(REPO)],
                   check=True, capture_output=True)
    wheel = next(tmp_path.glob("datarun-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "datarun/remote/__init__.py" in names
    assert "datarun/remote/runner.py" in names
    assert "datarun/cli/app.py" in names
    for template in ("base.html", "index.html", "event.html", "submission.html", "style.css", "sort.js"):
        assert f"datarun/site/templates/{template}" in names


BOARD = {
    "problem": "iris", "official_score": "accuracy", "scores": ["accuracy", "log_loss"],
    "lower_is_better": {"accuracy": False, "log_loss": True}, "private": True,
    "rows": [
        {"rank": 1, "id": 3, "team": "ada", "submission": "logreg", "score": 0.96,
         "valid": {"accuracy": 0.96, "log_loss": 0.1234567}, "test": {"accuracy": 0.9, "log_loss": 0.2},
         "contributivity": 0.75, "train_time": 0.5, "valid_time": 0.01, "test_time": 0.02,
         "cpu_time": 0.61, "peak_memory": 181_000_000, "submitted_at": None},
        {"rank": 2, "id": 4, "team": "grace", "submission": "knn", "score": 0.9,
         "valid": {"accuracy": 0.9, "log_loss": None}, "test": {"accuracy": 0.8, "log_loss": 0.3},
         "contributivity": None, "train_time": 75.0, "valid_time": 0.01, "test_time": 0.02,
         "cpu_time": 140.0, "peak_memory": 2_500_000_000, "submitted_at": None},
    ],
}


def test_leaderboard_renders_at_a_fixed_width():
    text = render(leaderboard_table(BOARD), width=160)
    lines = text.splitlines()
    assert lines[0].strip() == "iris — private leaderboard"
    assert "accuracy ↑" in text and "test log_loss" in text
    ada = next(line for line in lines if "ada" in line)
    assert [cell.strip() for cell in ada.split("│")[1:5]] == ["1", "ada", "logreg", "0.9600"]
    assert "0.1235" in ada and "75%" in ada and "181.0 MB" in ada
    grace = next(line for line in lines if "grace" in line)
    assert "1m15s" in grace and "2.5 GB" in grace and "2m20s" in grace


def test_status_tables_show_slots_in_use():
    status = {"problems": {"iris": {"queued": 1, "running": 2, "done": 3, "failed": 4, "cancelled": 5,
                                    "submissions": 2}},
              "hosts": {"local": {"executor": "local", "slots": 2, "slots_in_use": 2, "waiting_on_host": 1,
                                  "done": 3, "failed": 4,
                                  "checked_ok": None}}}
    problems, hosts = (render(t) for t in status_tables(status))
    assert "iris" in problems and "│           2 │      1 │       2 │    3 │      4 │         5 │" in problems
    assert "2/2 (+1 waiting)" in hosts and "not checked" in hosts
