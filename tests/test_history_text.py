"""`datarun history` as people read it: moments as UTC dates, never epoch seconds.

The pure line maker is tested on recorded rows of each kind of change; one run through
the CLI checks an edited event's line end to end."""

import re

import pytest
from conftest import EXAMPLES

from datarun.cli.tasks import history_line

RECORDED = 1_796_000_000.0  # 2026-11-30 00:53:20 UTC
CLOSES, LATER = 1_893_542_400.0, 1_925_078_400.0  # 2030-01-02, 2031-01-02 00:00 UTC


@pytest.mark.parametrize("action, subject, detail, line", [
    ("event_edited", "spring", {"before": {"closes": CLOSES, "max_final": None, "min_interval": 900.0},
                                "after": {"closes": LATER, "max_final": 2, "min_interval": 7200.0}},
     "2026-11-30 00:53:20 UTC  event_edited spring: closes_at 2030-01-02 00:00 UTC -> "
     "2031-01-02 00:00 UTC, max_final none -> 2, min_interval 15 minutes -> 2 hours"),
    ("event_edited", "spring", {"before": {"public_opens": CLOSES}, "after": {"public_opens": None}},
     "2026-11-30 00:53:20 UTC  event_edited spring: public_opens_at 2030-01-02 00:00 UTC -> none"),
    ("event_removed", "spring", {"problem": "iris"},
     "2026-11-30 00:53:20 UTC  event_removed spring: problem iris"),
    ("submission_hidden", "3", {"reason": "copied code"},
     "2026-11-30 00:53:20 UTC  submission_hidden 3: reason copied code"),
    ("submission_unhidden", "3", None, "2026-11-30 00:53:20 UTC  submission_unhidden 3"),
    ("final_selected", "ada", {"event": "spring", "submissions": [4, 7]},
     "2026-11-30 00:53:20 UTC  final_selected ada: event spring, submission_ids 4, 7"),
    ("problem_removed", "iris", {"forced": True, "submissions": 3, "events": 2, "folds": 5},
     "2026-11-30 00:53:20 UTC  problem_removed iris: forced yes, submissions 3, events 2, folds 5"),
])
def test_each_change_reads_with_dates_not_epoch_seconds(action, subject, detail, line):
    row = {"id": 1, "recorded_at": RECORDED, "action": action, "subject": subject, "detail": detail}
    assert history_line(row) == line


def test_history_prints_an_edited_events_dates(workspace, cli):
    assert cli("problem", "add", EXAMPLES / "iris").exit_code == 0
    cli("event", "add", "spring", "--problem", "iris", "--closes", "2030-01-01")
    assert cli("event", "edit", "spring", "--closes", "2030-12-31T23:59+01:00").exit_code == 0
    [line] = cli("history").stdout.strip().splitlines()
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d(:\d\d)? UTC  event_edited spring: closes_at "
                        r"2030-01-02 00:00 UTC -> 2030-12-31 22:59 UTC", line), line
    assert not re.search(r"\d{9,}", line)  # no epoch seconds
