"""The order queued tasks start in: one fold of each untried submission first, then the
longest expected first, learned from each submission's finished folds."""

import pytest
from conftest import EXAMPLES

from datarun.dispatch.schedule import any_queued, queued_tasks, seats
from datarun.executors.hosts import Host
from datarun.store.db import open_db

SUBS = EXAMPLES / "iris" / "submissions"


@pytest.fixture
def queue(workspace, cli):
    assert cli("problem", "add", EXAMPLES / "iris").exit_code == 0
    for team in ("quick", "slow", "new", "busy"):
        assert cli("submit", "iris", SUBS / "logreg", "--team", team).exit_code == 0
    db = open_db(workspace)
    ids = {row["team"]: row["id"] for row in db.query("SELECT id, team FROM submissions")}

    def set_task(team, fold, state, wall_time=None):
        db.execute("UPDATE tasks SET state = ?, wall_time = ? WHERE submission = ? AND fold = ?",
                   [state, wall_time, ids[team], fold])
        db.conn.commit()

    return ids, set_task, db


def order(db, ids, limit=100, submission=None):
    teams = {v: k for k, v in ids.items()}
    return [(teams[t["submission"]], t["fold"]) for t in queued_tasks(db, limit, None, submission)]


def test_untried_submissions_probe_first_then_longest_expected_first(queue):
    ids, set_task, db = queue
    set_task("quick", 0, "done", 0.5)
    set_task("slow", 0, "done", 4.0)
    set_task("slow", 1, "failed", 2.0)  # a failed fold's time counts too: mean 3.0
    set_task("busy", 0, "running")  # tried, nothing known yet
    got = order(db, ids)
    assert got[0] == ("new", 0)  # the probe of the submission nothing ran of yet
    assert got[1:4] == [("slow", 2), ("slow", 3), ("slow", 4)]  # 3.0 s expected
    assert got[4:8] == [("quick", 1), ("quick", 2), ("quick", 3), ("quick", 4)]  # 0.5 s
    # Then by submission and fold: the new one's other folds, the busy one's.
    assert got[8:] == [("new", 1), ("new", 2), ("new", 3), ("new", 4),
                       ("busy", 1), ("busy", 2), ("busy", 3), ("busy", 4)]


def test_every_untried_submission_gets_its_probe_before_any_second_fold(queue):
    ids, _, db = queue
    assert order(db, ids, limit=4) == [("quick", 0), ("slow", 0), ("new", 0), ("busy", 0)]
    assert order(db, ids, limit=6)[4:] == [("quick", 1), ("quick", 2)]


def test_the_order_keeps_to_the_selection(queue):
    ids, set_task, db = queue
    set_task("slow", 0, "done", 4.0)
    assert order(db, ids, submission=ids["quick"])[:2] == [("quick", 0), ("quick", 1)]


def test_a_host_holds_as_many_tasks_again_waiting_unless_memory_capped():
    assert seats(Host("a", executor="ssh", slots=3)) == 6
    assert seats(Host("a", executor="ssh", slots=3, memory=8 * 1024**3)) == 3


def test_any_queued_keeps_to_the_selection(queue):
    ids, set_task, db = queue
    assert any_queued(db, None, None) and any_queued(db, "iris", ids["new"])
    for fold in range(5):
        set_task("new", fold, "done", 1.0)
    assert not any_queued(db, None, ids["new"]) and any_queued(db, "iris", None)
