"""Many datarun processes on one workspace at once, for real: dispatchers racing each
other, and a crowd of `submit` while `train` runs.

No database error may reach the user, no task may run twice, and every submission must
be stored exactly once with its tasks.
"""

import json
import sqlite3

import pytest
from conftest import EXAMPLES
from faultcluster import Cluster, datarun_process, make_submission, runs, task_rows, wait_until


@pytest.fixture
def local(tmp_path, monkeypatch):
    cluster = Cluster(tmp_path, EXAMPLES, names=(), local_slots=2)
    monkeypatch.setenv("DATARUN_HOME", str(cluster.workspace.root))
    yield cluster
    cluster.close()


def clean(err: str) -> bool:
    return "Traceback" not in err and "database" not in err.lower() and "sqlite" not in err.lower()


def test_dispatchers_started_together_never_run_a_task_twice(local):
    local.submit(3, sleep=0.3)
    outcomes = []
    for _ in range(60):
        pair = [datarun_process(local.workspace, "dispatch", "--json") for _ in range(2)]
        for process in pair:
            out, err = process.communicate(timeout=120)
            outcomes.append(process.returncode)
            assert process.returncode in (0, 3), err  # 3: the other one holds the lock
            assert clean(err), err
            if process.returncode == 3:
                assert "another datarun dispatcher is running in this workspace" in err
            else:
                assert json.loads(out)["host_errors"] == {}
        if all(row["state"] == "done" for row in task_rows(local.workspace).values()):
            break
    assert {row["state"] for row in task_rows(local.workspace).values()} == {"done"}
    assert 0 in outcomes
    for task_id, marks in runs(local.trace).items():
        assert marks == {"start": [1], "fit": [1]}, (task_id, marks)


def test_twenty_submits_while_train_runs_are_each_stored_once(local):
    first = local.submit(2, sleep=1.0)
    train = datarun_process(local.workspace, "train", "--json")
    wait_until(lambda: any(r["state"] == "running" for r in task_rows(local.workspace).values()), 60,
               "train to launch its first tasks")
    folders = [make_submission(local.root, local.trace, f"crowd{i}", 0.0) for i in range(20)]
    crowd = [datarun_process(local.workspace, "submit", "faults", folder, "--team", f"crowd{i}", "--json")
             for i, folder in enumerate(folders)]
    stored = []
    for process in crowd:
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
        assert clean(err), err
        result = json.loads(out)
        assert result["created"] and result["tasks"] == 2
        stored.append(result["id"])
    out, err = train.communicate(timeout=120)
    assert train.returncode == 0, err
    assert clean(err), err
    assert json.loads(out)["done"] == 4  # the tasks queued when it started

    assert len(set(stored)) == 20 and not set(stored) & set(first)
    conn = sqlite3.connect(local.workspace.db_path)
    try:
        teams = [team for (team,) in conn.execute("SELECT team FROM submissions WHERE team LIKE 'crowd%'")]
        per_submission = conn.execute("SELECT submission, count(*) FROM tasks GROUP BY submission").fetchall()
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    finally:
        conn.close()
    assert sorted(teams) == sorted(f"crowd{i}" for i in range(20))
    assert dict(per_submission) == {sid: 2 for sid in [*first, *stored]}
