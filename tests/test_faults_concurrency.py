"""Many datarun processes on one workspace at once, for real: dispatchers racing each
other, and a crowd of `submit` while `train` runs.

No database error may reach the user, no task may run twice, a dispatcher that finds
another at work exits 3 and says so, and every submission must be stored exactly once
with its tasks.
"""

import json
import os
import signal
import sqlite3
import time
from pathlib import Path

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


def lock_holder(workspace) -> int | None:
    """The pid holding the workspace's dispatcher lock, read from /proc/locks: probing with
    flock would take the lock for a moment and could itself make a dispatcher lose."""
    try:
        info = os.stat(workspace.lock_path)
    except FileNotFoundError:
        return None
    file_id = f"{os.major(info.st_dev):02x}:{os.minor(info.st_dev):02x}:{info.st_ino}"
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()  # "1: FLOCK  ADVISORY  WRITE 12345 fe:00:2146374 0 EOF"
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == file_id:
            return int(fields[4])
    return None


def stopped_while_holding_the_lock(workspace, process) -> bool:
    """SIGSTOP a starting dispatcher the moment it holds the lock: True if it is stopped
    holding it (it then holds it until SIGCONT), False if it ended first."""
    while process.poll() is None:
        if lock_holder(workspace) == process.pid:
            os.kill(process.pid, signal.SIGSTOP)
            if lock_holder(workspace) == process.pid:
                return True
            os.kill(process.pid, signal.SIGCONT)  # it let go between the look and the stop
        time.sleep(0.001)
    return False


def test_dispatchers_started_together_never_run_a_task_twice(local):
    local.submit(3, sleep=0.3)
    losers = 0
    for _ in range(60):
        # The loser, for certain: a dispatcher that finds the lock held exits 3 at once,
        # saying why, while the holder (stopped holding it) goes on to finish its pass.
        holder = datarun_process(local.workspace, "dispatch", "--json")
        if stopped_while_holding_the_lock(local.workspace, holder):
            try:
                loser = datarun_process(local.workspace, "dispatch", "--json")
                out, err = loser.communicate(timeout=120)
            finally:
                os.kill(holder.pid, signal.SIGCONT)
            assert loser.returncode == 3, (loser.returncode, out, err)
            assert "another datarun dispatcher is running in this workspace" in err
            assert clean(err), err
            losers += 1
        out, err = holder.communicate(timeout=120)
        assert holder.returncode == 0, err
        assert clean(err), err
        assert json.loads(out)["host_errors"] == {}
        # A race: two started at the same instant. Both may win, one after the other; both
        # losing would leave the workspace unserved.
        pair = [datarun_process(local.workspace, "dispatch", "--json") for _ in range(2)]
        codes = []
        for process in pair:
            out, err = process.communicate(timeout=120)
            codes.append(process.returncode)
            assert clean(err), err
            if process.returncode == 3:
                assert "another datarun dispatcher is running in this workspace" in err
            else:
                assert process.returncode == 0, err
                assert json.loads(out)["host_errors"] == {}
        assert sorted(codes) in ([0, 0], [0, 3]), codes
        if all(row["state"] == "done" for row in task_rows(local.workspace).values()):
            break
    assert {row["state"] for row in task_rows(local.workspace).values()} == {"done"}
    assert losers >= 1, "no dispatcher was ever caught holding the lock"
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
