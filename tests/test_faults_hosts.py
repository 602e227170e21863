"""Hosts that crash or hang mid-task, for real: killed or stopped sshd, runner and tasks.

Two loopback hosts with short timeouts (command_timeout 1.5 s, so a host's grace period is
8 s) and tasks that sleep in fit, so a fault lands while they run. Each test checks that
nothing is lost (every task ends done, or host_lost once its losses reach max_attempts)
and nothing is counted twice (one recorded attempt per task, the one that fitted, with
one set of scores).
"""

import json

import pytest
from conftest import EXAMPLES
from faultcluster import Cluster, Training, runs, started_on, task_rows, wait_until
from sshd import needs_root

from datarun.errors import UsageError

pytestmark = [pytest.mark.ssh, needs_root]

FAST = {"command_timeout": 1.5, "connect_timeout": 1.0}


@pytest.fixture
def cluster(tmp_path, monkeypatch):
    cluster = Cluster(tmp_path, EXAMPLES, names=("a", "b"), **FAST)
    monkeypatch.setenv("DATARUN_HOME", str(cluster.workspace.root))
    yield cluster
    cluster.close()


def scores_per_task(workspace) -> dict[int, int]:
    import sqlite3

    conn = sqlite3.connect(workspace.db_path)
    try:
        return dict(conn.execute("SELECT task, count(*) FROM scores GROUP BY task").fetchall())
    finally:
        conn.close()


def failures(cluster) -> list:
    return [(t, r["state"], r["host"], r["attempt"], r["error_kind"], r["error"])
            for t, r in task_rows(cluster.workspace).items() if r["state"] != "done"]


def assert_each_counted_once(cluster, rows: dict[int, dict]) -> None:
    """Every done task's recorded attempt is one that fitted, and it has one set of scores."""
    marks = runs(cluster.trace)
    scores = scores_per_task(cluster.workspace)
    for task_id, row in rows.items():
        if row["state"] == "done":
            assert row["attempt"] in marks[str(task_id)]["fit"], (task_id, row, marks.get(str(task_id)))
            assert scores[task_id] == 3  # accuracy on train, valid and test: once each
            assert json.loads(row["environment"])["host"] == row["host"]


def test_a_crashed_hosts_tasks_finish_on_the_other_host(cluster):
    cluster.submit(3, sleep=2.0)
    training = Training(cluster.workspace)
    victims = wait_until(lambda: started_on(cluster, "a"), 30, "a task fitting on host a")
    cluster.crash("a")
    summary = training.join(90)
    assert (summary["done"], summary["failed"], summary["queued"]) == (6, 0, 0), "\n".join(map(str, failures(cluster)))
    assert summary["requeued"] >= len(victims)
    assert "a" in summary["host_errors"]
    rows = task_rows(cluster.workspace)
    for task_id in victims:
        assert rows[task_id]["host"] == "b" and rows[task_id]["lost"] == 1
        assert rows[task_id]["attempt"] >= 2
    assert_each_counted_once(cluster, rows)
    # The given-up attempts are remembered, to be cancelled and removed if host a returns.
    leftovers = json.loads((cluster.workspace.state_dir / "leftovers.json").read_text())
    assert {f"t{t}-a{rows[t]['attempt'] - 1}" for t in victims} <= set(leftovers["a"])


def test_after_max_attempts_a_lost_task_fails_as_host_lost(cluster):
    cluster.submit(2, sleep=2.0)
    training = Training(cluster.workspace, max_attempts=1)
    victims = wait_until(lambda: started_on(cluster, "a"), 30, "a task fitting on host a")
    cluster.crash("a")
    summary = training.join(90)
    rows = task_rows(cluster.workspace)
    failed = [task_id for task_id, row in rows.items() if row["state"] == "failed"]
    # Those fitting on host a when it died, and any it had been handed but not yet started.
    assert set(victims) <= set(failed) and summary["done"] + len(failed) == 4, summary
    for task_id in failed:
        assert rows[task_id]["state"] == "failed" and rows[task_id]["error_kind"] == "host_lost"
        assert rows[task_id]["error"].startswith("host a did not answer for ")
        assert rows[task_id]["error"].endswith("(lost 1 of 1 times)")
    assert_each_counted_once(cluster, rows)


@pytest.mark.parametrize("value", [0, -2, 1.5, True])
def test_max_attempts_must_be_a_whole_number_of_at_least_one(workspace, value):
    from datarun.dispatch.train import dispatch_once, train
    from datarun.store.db import open_db

    db = open_db(workspace)
    for run in (train, dispatch_once):
        with pytest.raises(UsageError, match=rf"^--max-attempts must be a whole number of at least 1, "
                                             rf"got {value!r}$"):
            run(workspace, db, max_attempts=value)


def test_a_hung_host_is_worked_around_and_its_late_results_not_counted(cluster):
    from datarun.dispatch.train import dispatch_once
    from datarun.store.db import open_db

    cluster.submit(3, sleep=2.0)
    training = Training(cluster.workspace)
    wait_until(lambda: started_on(cluster, "a"), 30, "a task fitting on host a")
    cluster.hang("a", with_sshd=True)
    # Host b carries every task while host a stays frozen: connecting to it times out.
    summary = training.join(90)
    assert (summary["done"], summary["failed"]) == (6, 0), summary
    rows = task_rows(cluster.workspace)
    moved = {task_id: row["attempt"] - 1 for task_id, row in rows.items() if row["lost"]}
    assert moved and all(rows[task_id]["host"] == "b" for task_id in moved)
    assert_each_counted_once(cluster, rows)

    # Host a wakes up and finishes the attempts it had: they are recognised as late.
    cluster.wake("a")
    results = [cluster.tasks("a") / f"t{t}-a{a}" / "result.json" for t, a in moved.items()]
    wait_until(lambda: all(path.exists() for path in results), 30, "host a to finish its stale attempts")
    assert all(a in runs(cluster.trace)[str(t)]["fit"] for t, a in moved.items())
    db = open_db(cluster.workspace)
    late = dispatch_once(cluster.workspace, db)
    assert late["late"] == len(moved) and late["collected"] == 0, late
    assert task_rows(cluster.workspace) == rows  # nothing recorded twice, nothing changed
    assert_each_counted_once(cluster, rows)
    # The next pass removes them from the host, and forgets them.
    dispatch_once(cluster.workspace, db)
    assert not any(cluster.tasks("a").iterdir())
    assert json.loads((cluster.workspace.state_dir / "leftovers.json").read_text()) == {}


def test_a_host_whose_runner_stops_beating_gets_no_work_and_its_tasks_move(cluster):
    from datarun.dispatch.train import dispatch_once
    from datarun.store.db import open_db

    cluster.submit(3, sleep=2.0)
    training = Training(cluster.workspace)
    wait_until(lambda: started_on(cluster, "a"), 30, "a task fitting on host a")
    # Its sshd still answers, so syncs succeed: only the runner's silent heartbeat tells.
    cluster.hang("a", with_sshd=False)
    summary = training.join(90)
    assert (summary["done"], summary["failed"]) == (6, 0), summary
    rows = task_rows(cluster.workspace)
    moved = {task_id: row["attempt"] - 1 for task_id, row in rows.items() if row["lost"]}
    assert moved and all(rows[task_id]["host"] == "b" for task_id in moved)
    assert_each_counted_once(cluster, rows)
    # The frozen attempts are cancelled on host a (by train, or else by the next cron pass),
    # so they never finish there; a cancelled attempt may already be removed from it.
    folder = cluster.tasks("a")
    db = open_db(cluster.workspace)

    def cancelled() -> bool:
        if all((folder / f"t{t}-a{a}" / "cancel").exists() or not (folder / f"t{t}-a{a}").exists()
               for t, a in moved.items()):
            return True
        dispatch_once(cluster.workspace, db)
        return False

    wait_until(cancelled, 30, "the given-up attempts to be cancelled on host a")
    cluster.wake("a")
    leftovers = cluster.workspace.state_dir / "leftovers.json"
    wait_until(lambda: dispatch_once(cluster.workspace, db) and not any(folder.iterdir())
               and json.loads(leftovers.read_text()) == {}, 30, "host a's leftovers to be removed")
    assert task_rows(cluster.workspace) == rows
    assert all(a not in runs(cluster.trace)[str(t)]["fit"] for t, a in moved.items())
