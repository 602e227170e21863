"""Escape sequences from tasks and hosts never reach the organiser's terminal.

A task prints an OSC 52 clipboard write, a clear screen, a bidi override, C1 controls and
a carriage return that overwrites its line, then fails with the same in its error; a host
answers `info` with the same in its versions. `logs`, `submission show`, `leaderboard`,
`dispatch` and `host check` print none of it; `--json` keeps the raw text, escaped by JSON.
Each attack is run a second time with the sanitiser switched off (identity), and then the
sequences do come through: the tests would catch a renderer that stopped using it.
"""

import json
import os
import stat
import tempfile
from io import StringIO
from pathlib import Path

import pytest
from rich.console import Console
from sshd import pin
from test_operator import GOOD, flowers, submit, tasks_of  # noqa: F401

from datarun.safetext import printable

# Everything a terminal would act on: ESC, BEL, CR, C1 CSI/OSC/ST, bidi overrides, DEL.
DANGEROUS = ("\x1b", "\x07", "\r", "\x9b", "\x9d", "\x9c", "\u202e", "\u2066", "\x7f", "\x00")
EVIL = ("\x1b]52;c;ZXZpbA==\x07\x1b[2J\x1b[Hvisible\u202etxt.exe\u2066\x9b31m"
        "\x9d0;title\x9c\x7f\rforged")

EVIL_IN_CODE = EVIL.replace("\r", "")  # a CR would end the comment line
HOSTILE_TASK = f'''
# The code itself carries raw escapes too: {EVIL_IN_CODE}
from sklearn.linear_model import LogisticRegression

EVIL = {EVIL!r}

class Evil(LogisticRegression):
    def fit(self, X, y):
        print(EVIL, flush=True)
        raise RuntimeError("boom " + EVIL)

def get_estimator():
    return Evil()
'''


def clean(text: str) -> bool:
    return not any(char in text for char in DANGEROUS)


@pytest.fixture
def unsafe(monkeypatch):
    """The protection off: every renderer's sanitiser is the identity."""
    def switch_off():
        import datarun.cli.render
        import datarun.safetext

        monkeypatch.setattr(datarun.safetext, "printable", lambda text: "" if text is None else str(text))
        monkeypatch.setattr(datarun.cli.render, "printable", datarun.safetext.printable)
    return switch_off


@pytest.mark.parametrize("raw, shown", [
    ("plain text", "plain text"),
    ("tab\tand\nnewline", "tab\tand\nnewline"),
    ("\x1b]52;c;ZXZpbA==\x07after", "after"),            # OSC 52 clipboard write, BEL-ended
    ("\x1b]52;c;ZXZpbA==\x1b\\after", "after"),          # ... ST-ended
    ("\x1b[2J\x1b[Hscreen", "screen"),                   # clear screen, cursor home
    ("\x1b[38;2;1;2;3mcolour\x1b[0m", "colour"),
    ("\x1bPdevice control\x1b\\x", "x"),                 # DCS
    ("\x9b31mred", "red"),                                # C1 CSI
    ("\x9d0;title\x9cx", "x"),                            # C1 OSC
    ("abc\u202edcba\u2066x\u2069\u200ey", "abcdcbaxy"),  # bidi overrides, isolates, marks
    ("line\roverwritten", "line\noverwritten"),
    ("windows\r\nline", "windows\nline"),
    ("nul\x00bel\x07del\x7fx", "nulbeldelx"),
    ("unterminated \x1b]52;c;ZXZp", "unterminated "),
    ("accents é 漢字 emoji 🎉 and zero\u200bwidth", "accents é 漢字 emoji 🎉 and zero\u200bwidth"),
])
def test_printable_strips_control_characters_and_whole_sequences(raw, shown):
    assert printable(raw) == shown


def _render(renderable) -> str:
    console = Console(file=StringIO(), width=300, color_system=None)
    console.print(renderable)
    return console.file.getvalue()


def test_every_table_renderer_makes_its_cells_printable():
    from datarun.cli import render
    from datarun.cli.host import check_table, hosts_table

    sub = {"id": 1, "team": EVIL, "name": EVIL, "problem": "p", "state": "failed", "event": EVIL,
           "bagged": {}, "tasks": [{"fold": 0, "state": "failed", "error_kind": EVIL, "scores": {},
                                    "train_time": None, "valid_time": None, "test_time": None,
                                    "cpu_time": None, "peak_memory": None, "host": EVIL}]}
    board = {"problem": "p", "event": EVIL, "private": False, "scores": ["acc"],
             "official_score": "acc", "lower_is_better": {"acc": False},
             "blend": {"score": EVIL, "combined_valid": 0.5, "best_single_valid": 0.5},
             "rows": [{"rank": 1, "team": EVIL, "submission": EVIL, "score": 0.5,
                       "valid": {"acc": 0.5}, "contributivity": 1.0, "train_time": 1.0,
                       "valid_time": 1.0, "test_time": 1.0, "cpu_time": 1.0,
                       "peak_memory": 1, "submitted_at": 0.0}]}
    event = {"name": EVIL, "problem": "p", "state": "open", "opens": None, "closes": None,
             "public_opens": None, "participants": [EVIL], "min_interval": None,
             "max_submissions": None, "submissions": 1, "teams": 1, "default": False,
             "by_team": [{"team": EVIL, "submissions": 1, "forced": 0, "last_submitted_at": 0.0}]}
    report = {"name": "node", "ok": False, "python": EVIL, "cpus": 2, "memory": 1, "disk_free": 1,
              "gpus": 0, "harness": EVIL, "problems": [EVIL], "warnings": [EVIL],
              "libraries": {"numpy": {"host": EVIL, "same": False}}}
    host = {"name": "node", "executor": "ssh", "user": EVIL, "address": EVIL, "port": 22,
            "slots": 1, "threads": 1, "memory": None, "gpus": 0, "tags": [EVIL], "ok": None}
    tables = [render.leaderboard_table(board), render.submissions_table(
        [{"id": 1, "problem": "p", "team": EVIL, "name": EVIL, "state": "done",
          "tasks": {"done": 1}, "created_at": 0.0}]), render.submission_table(sub, ["acc"]),
        render.events_table([event]), *render.event_tables(event), check_table([report]),
        hosts_table([host])]
    for table in tables:
        text = _render(table)
        assert clean(text), repr(text)
        assert "visible" in text or "forged" in text or "node" in text


def test_a_task_output_and_error_are_printed_without_their_escapes(flowers, cli, tmp_path, unsafe):  # noqa: F811
    evil = submit(cli, tmp_path, "evil", HOSTILE_TASK)
    good = submit(cli, tmp_path, "good", GOOD)
    assert cli("train").exit_code == 1  # the hostile submission fails its folds
    task = tasks_of(cli, evil)[0]
    assert task["error_kind"] == "fit_error" and "\x1b]52;c;" in task["error"]
    # A team name stored before names were checked (an older workspace) is hostile too.
    from datarun.store.db import open_db

    db = open_db(flowers)
    db.execute("UPDATE submissions SET team = ? WHERE id = ?", [EVIL, good])
    db.conn.commit()
    db.conn.close()

    logs = cli("logs", task["id"])
    show = cli("submission", "show", evil)
    code = cli("submission", "show", evil, "--code")
    board = cli("leaderboard", "flowers")
    for result in (logs, show, code, board):
        assert result.exit_code == 0, result.stderr
        assert clean(result.stdout) and clean(result.stderr), repr(result.stdout)
    assert "visibletxt.exe" in logs.stdout and "forged" in logs.stdout
    assert "fit_error: " in show.stdout and "boom visible" in show.stdout
    assert "visible" in board.stdout

    # JSON keeps the raw text, every control character escaped by JSON.
    raw = cli("logs", task["id"], "--json")
    assert "\x1b" not in raw.stdout and "\\u001b]52;c;" in raw.stdout
    assert raw.json()["log"] == EVIL + "\n"
    assert cli("leaderboard", "flowers", "--json").json()["rows"][0]["team"] == EVIL

    # Negative control: the same outputs with the sanitiser off carry the sequences.
    unsafe()
    for args in (("logs", task["id"]), ("submission", "show", evil), ("leaderboard", "flowers"),
                 ("submission", "show", evil, "--code")):
        assert "\x1b]52;c;" in cli(*args).stdout, args


def test_error_lines_and_messages_are_printed_without_escapes(capsys, unsafe):
    import typer

    from datarun.cli.app import err, handled
    from datarun.errors import HostError

    with pytest.raises(typer.Exit):
        with handled():
            raise HostError(f"host node: harness sync failed: {EVIL}")
    err(f"host node: {EVIL}")
    captured = capsys.readouterr()
    assert clean(captured.err)
    assert captured.err.startswith("error: host node: harness sync failed: visibletxt.exe")
    unsafe()
    err(EVIL)
    assert "\x1b]52" in capsys.readouterr().err


# --- a hostile host -------------------------------------------------------------------

HOSTILE_INFO = {
    "python": "3.11.2\x1b]52;c;ZXZpbA==\x07", "executable": "/x", "platform": "\x1b[2J",
    "hostname": "h\u202e", "cpus": 2, "usable_cpus": 2, "memory": 10**10, "disk_free": 10**10,
    "gpus": 0, "numpy": "1.0\x1b]0;pwned\x07", "pandas": None, "sklearn": None, "psutil": None,
    "rampwf": None, "joblib": None, "threadpoolctl": None,
    "missing": ["pandas\x1b]52;c;ZXZpbA==\x07", "sklearn", "psutil"],
    "harness": "1\x1b[2J", "workdir": "/w",
}


@pytest.fixture
def hostile_python():
    """A 'Python' on the host that answers every harness command with escape sequences."""
    folder = Path(tempfile.mkdtemp(prefix="datarun-hostile-"))
    folder.chmod(0o755)
    script = folder / "python"
    script.write_text("#!/bin/sh\ncat <<'EOF'\n" + json.dumps(HOSTILE_INFO) + "\nEOF\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH | 0o444)
    yield str(script)
    for path in folder.iterdir():
        path.unlink()
    folder.rmdir()


@pytest.mark.ssh
def test_a_hostile_hosts_answers_are_printed_without_escapes(flowers, cli, tmp_path, sshd_a,  # noqa: F811
                                                             hostile_python, unsafe):
    from datarun.executors.hosts import add_host
    from datarun.store.db import open_db

    pin(flowers, sshd_a)
    workdir = f"~/wd-hostile-{os.getpid()}"
    flowers.hosts_file.write_text("")
    add_host(flowers.hosts_file, "node", sshd_a.host_table(python=hostile_python, workdir=workdir))
    submit(cli, tmp_path, "good", GOOD)
    try:
        dispatch = cli("dispatch")  # the host's `info` lists what its Python lacks: hostile names
        assert dispatch.exit_code == 1
        assert "host node: its Python lacks pandas, scikit-learn, psutil" in dispatch.stderr
        check = cli("host", "check", "node")
        assert check.exit_code == 1
        for result in (dispatch, check):
            assert clean(result.stdout) and clean(result.stderr), repr(result.stdout + result.stderr)
        assert "3.11.2" in check.stdout
        raw = cli("host", "check", "node", "--json")
        assert raw.json()["hosts"][0]["python"] == HOSTILE_INFO["python"]
        unsafe()
        assert "\x1b]52" in cli("host", "check", "node").stdout
        db = open_db(flowers)
        db.execute("DELETE FROM hosts")  # the check marked the host unusable: forget it
        db.conn.commit()
        db.conn.close()
        assert "\x1b]52" in cli("dispatch").stderr
    finally:
        import shutil

        shutil.rmtree(os.path.expanduser(f"~{sshd_a.user}/{workdir[2:]}"), ignore_errors=True)
