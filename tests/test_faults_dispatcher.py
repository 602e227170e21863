"""A dispatcher killed with SIGKILL in the middle of `datarun train`, for real.

The runners on the hosts are detached and carry on. The next `dispatch` or `train`
collects what they finished meanwhile, re-queues what outlived its lease, and runs
nothing again that had already finished; no task is left `running`.
"""

import json
import signal
import sqlite3
import time

import pytest
from conftest import EXAMPLES
from faultcluster import Cluster, datarun_process, runs, task_rows, wait_until
from sshd import needs_root

pytestmark = [pytest.mark.ssh, needs_root]


@pytest.fixture
def cluster(tmp_path, monkeypatch):
    cluster = Cluster(tmp_path, EXAMPLES, names=("a", "b"), command_timeout=1.5, connect_timeout=1.0)
    monkeypatch.setenv("DATARUN_HOME", str(cluster.workspace.root))
    yield cluster
    cluster.close()


def finish(process, timeout: float = 120) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out, err


def test_train_after_a_killed_dispatcher_collects_and_reruns_nothing_finished(cluster):
    cluster.submit(4, sleep=2.0)
    first = datarun_process(cluster.workspace, "train", "--json")

    def midway() -> bool:
        states = [row["state"] for row in task_rows(cluster.workspace).values()]
        marks = runs(cluster.trace)
        fitting = [t for t, m in marks.items() if m["start"] and not m["fit"]]
        return "done" in states and len(fitting) >= 2

    wait_until(midway, 60, "some tasks done and others fitting")
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    before = task_rows(cluster.workspace)
    started = runs(cluster.trace)  # a task claimed just before the kill may never have shipped
    running = [t for t, row in before.items() if row["state"] == "running"]
    done = [t for t, row in before.items() if row["state"] == "done"]
    assert running and done
    # One task's lease ran out while no dispatcher was there (as if it had been down long).
    expired = running[0]
    conn = sqlite3.connect(cluster.workspace.db_path)
    with conn:
        conn.execute("UPDATE tasks SET lease_expires = ? WHERE id = ?", [time.time() - 1, expired])
    conn.close()

    code, out, err = finish(datarun_process(cluster.workspace, "dispatch", "--json"))
    assert code == 0, err
    assert json.loads(out)["requeued"] == 1
    code, out, err = finish(datarun_process(cluster.workspace, "train", "--json"))
    assert code == 0, err
    assert "Traceback" not in err and "database" not in err
    after = task_rows(cluster.workspace)
    assert {row["state"] for row in after.values()} == {"done"}
    marks = runs(cluster.trace)
    for task_id, row in before.items():
        if task_id == expired:
            # Counted as lost once; done by whichever attempt finished first (its first one
            # may have come back late, after the re-queue: then it is taken, and only it).
            assert after[task_id]["lost"] == row["lost"] + 1
        elif row["state"] == "done" or row["attempt"] in started.get(str(task_id), {}).get("start", []):
            # Finished before the kill, or running on its host then: collected, never re-run.
            assert after[task_id]["attempt"] == row["attempt"], (task_id, row, after[task_id])
            assert marks[str(task_id)]["start"] == [row["attempt"]]
    for task_id, row in after.items():
        assert row["attempt"] in marks[str(task_id)]["fit"]
