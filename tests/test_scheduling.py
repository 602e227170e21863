"""The order queued tasks start in: one fold of each untried submission first, then the
longest expected first, learned from each submission's finished folds. And where they go:
free seats, most free first, within each host's memory cap, as data."""

import pytest
from conftest import EXAMPLES

from datarun.dispatch.schedule import FreeSeats, assign, free_seats, seats
from datarun.executors.hosts import Host
from datarun.store.db import open_db
from datarun.store.taskqueries import Selection, any_queued, next_queued
from datarun.store.tasks import Task, TaskState

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
    return [(teams[t.submission], t.fold) for t in next_queued(db, limit, Selection(None, submission))]


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
    assert any_queued(db) and any_queued(db, Selection("iris", ids["new"]))
    for fold in range(5):
        set_task("new", fold, "done", 1.0)
    assert not any_queued(db, Selection(None, ids["new"])) and any_queued(db, Selection("iris"))


GB = 1024**3


def task(task_id: int, host: str | None = None, slot: int | None = None, memory: int = 0) -> Task:
    return Task(id=task_id, submission=1, fold=task_id, problem="p",
                state=TaskState.RUNNING if host else TaskState.QUEUED, host=host, slot=slot,
                limits={"memory": memory} if host else None)


def test_free_seats_are_returned_with_the_memory_running_tasks_hold():
    hosts = {"a": Host("a", executor="ssh", slots=2), "b": Host("b", executor="ssh", slots=2, memory=4 * GB)}
    running = [task(1, "a", 0, GB), task(2, "b", 1, 3 * GB), task(3, "gone", 0, GB)]
    free = free_seats(hosts, running, ["a", "b"])
    assert free == FreeSeats(seats={"a": [1, 2, 3], "b": [0]}, memory={"a": GB, "b": 3 * GB, "gone": GB})
    assert free.count == 4
    assert free_seats(hosts, running, ["b"]).seats == {"b": [0]}  # only the hosts taking tasks


def test_tasks_go_to_the_most_free_seats_first_within_each_memory_cap():
    hosts = {"a": Host("a", executor="ssh", slots=2), "b": Host("b", executor="ssh", slots=2, memory=4 * GB)}
    free = FreeSeats(seats={"a": [1], "b": [0, 1]}, memory={"b": 3 * GB})
    queued = [task(10), task(11), task(12)]
    plan = assign(queued, free, hosts, lambda t: {"memory": GB})
    # b has the most free seats but room for one more gigabyte only; then a takes one.
    assert {name: [(t.id, seat) for t, seat, _ in placed] for name, placed in plan.items()} == {
        "b": [(10, 0)], "a": [(11, 1)]}
    assert free == FreeSeats(seats={"a": [1], "b": [0, 1]}, memory={"b": 3 * GB})  # left as it was
