"""Several workspaces in one host working folder: each in its own folder, with its own runner.

Two workspaces (ids `wsa` and `wsb`) use one WORKDIR and one data set, with the same task
keys, as two organisers sharing a host account would. Each gets its own results; no
command given for one reaches the other's tasks; the nonce of task.json comes back in
result.json on every path that writes one.
"""

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from harness_helpers import (
    DATA_IRIS,
    LOGISTIC,
    make_archive,
    submit,
    task_files,
    wait_finished,
    write_dataset,
)

from datarun.remote import ops
from datarun.remote.common import HarnessError, Layout
from datarun.remote.sync import session

REPO = Path(__file__).resolve().parent.parent

RAISES = """
class Broken:
    def fit(self, X, y):
        raise ValueError("penguin-specific failure 7731")

def get_estimator():
    return Broken()
"""

SLEEPS = """
import time

class Sleepy:
    def fit(self, X, y):
        open("started", "w").close()
        time.sleep(60)

def get_estimator():
    return Sleepy()
"""


@pytest.fixture
def workdir(tmp_path):
    folder = tmp_path / "work"
    return folder, write_dataset(folder, DATA_IRIS, "classification")


def wait_for(predicate, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_the_layout_puts_a_workspace_in_its_own_folder_beside_the_shared_caches(tmp_path):
    shared = Layout(tmp_path / "w", "ab12")
    assert shared.root == tmp_path / "w"
    assert (shared.harness, shared.data) == (tmp_path / "w" / "harness", tmp_path / "w" / "data")
    space = tmp_path / "w" / "workspaces" / "ab12"
    assert shared.space == space
    assert (shared.tasks, shared.inbox, shared.jails) == (space / "tasks", space / "inbox", space / "jail")
    assert {shared.runner_json, shared.runner_lock, shared.runner_log, shared.wake} == {
        space / "runner.json", space / "runner.lock", space / "runner.log", space / "wake"}
    assert shared.task("t1-a1") == space / "tasks" / "t1-a1"
    alone = Layout(tmp_path / "w")  # the harness driven by hand: WORKDIR is the folder
    assert (alone.space, alone.tasks, alone.data) == (tmp_path / "w", tmp_path / "w" / "tasks", shared.data)


@pytest.mark.parametrize("space", ["a/b", "..", "", "x y"])
def test_a_bad_workspace_id_is_refused(tmp_path, space):
    with pytest.raises(HarnessError, match=rf"^bad workspace id {space!r}: use only letters, digits"):
        Layout(tmp_path, space)


def test_two_workspaces_with_the_same_keys_get_their_own_results(workdir, runners):
    folder, meta = workdir
    submit(folder, "t1-a1", RAISES, meta, DATA_IRIS, space="wsa", nonce="nonce-a")
    submit(folder, "t1-a1", LOGISTIC, meta, DATA_IRIS, space="wsb", nonce="nonce-b")
    for space in ("wsa", "wsb"):
        started = ops.start_runner(folder, slots=1, threads=1, idle=30, space=space)
        assert started["started"] is True
        runners.append(started["pid"])
    assert runners[0] != runners[1]  # one runner per workspace
    a = wait_finished(folder, ["t1-a1"], space="wsa")["t1-a1"]
    b = wait_finished(folder, ["t1-a1"], space="wsb")["t1-a1"]
    assert (a["state"], a["error_kind"], a["nonce"]) == ("failed", "fit_error", "nonce-a")
    assert "penguin-specific failure 7731" in a["error"]
    assert (b["state"], b["error"], b["nonce"]) == ("done", None, "nonce-b")
    # One data set for both, in the shared cache; nothing at WORKDIR's own tasks/.
    assert sorted(p.name for p in (folder / "data").iterdir()) == [DATA_IRIS]
    assert not (folder / "tasks").exists()
    for space, pid in zip(("wsa", "wsb"), runners, strict=True):
        assert ops.poll(folder, [], space=space)["runner"]["pid"] == pid
        assert f"--space {space}" in " ".join(psutil.Process(pid).cmdline())


def test_cleanup_cancel_and_log_of_one_workspace_never_reach_another(workdir, runners):
    folder, meta = workdir
    # Unsandboxed: the test reads the mark it leaves in its folder.
    submit(folder, "t1-a1", SLEEPS, meta, DATA_IRIS, space="wsb", nonce="nb", isolation="none")
    runners.append(ops.start_runner(folder, slots=1, threads=1, idle=30, space="wsb")["pid"])
    theirs = Layout(folder, "wsb").task("t1-a1")
    wait_for(lambda: (theirs / "started").exists(), "workspace b's task to start")
    assert ops.cancel(folder, ["t1-a1"], space="wsa") == {"tasks": {"t1-a1": "missing"}}
    assert ops.cleanup(folder, ["t1-a1"], space="wsa") == {"removed": [], "running": []}
    assert ops.clean(folder, [], force=True, space="wsa")["removed"] == []
    assert ops.poll(folder, ["t1-a1"], space="wsa")["tasks"]["t1-a1"]["state"] == "missing"
    with pytest.raises(HarnessError, match="no task t1-a1 on this host"):
        ops.log(folder, "t1-a1", space="wsa")
    assert ops.poll(folder, ["t1-a1"], space="wsb")["tasks"]["t1-a1"]["state"] == "running"
    assert ops.cancel(folder, ["t1-a1"], space="wsb") == {"tasks": {"t1-a1": "cancelled"}}


def test_the_nonce_comes_back_on_every_path_that_writes_a_result(workdir, runners):
    folder, meta = workdir
    submit(folder, "queued", LOGISTIC, meta, DATA_IRIS, space="ws", nonce="n-queued")
    submit(folder, "nodata", LOGISTIC, meta, "absent00", space="ws", nonce="n-nodata")
    submit(folder, "plain", LOGISTIC, meta, DATA_IRIS, space="ws")  # sent without one
    assert ops.cancel(folder, ["queued"], space="ws") == {"tasks": {"queued": "cancelled"}}
    runners.append(ops.start_runner(folder, slots=1, threads=1, idle=30, space="ws")["pid"])
    results = wait_finished(folder, ["queued", "nodata", "plain"], space="ws")
    assert (results["queued"]["error_kind"], results["queued"]["nonce"]) == ("cancelled", "n-queued")
    assert (results["nodata"]["error_kind"], results["nodata"]["nonce"]) == ("harness_error", "n-nodata")
    assert results["plain"]["state"] == "done" and results["plain"]["nonce"] is None


def test_usage_counts_the_other_workspaces_and_their_disk_only(workdir):
    folder, meta = workdir
    for space in ("wsa", "wsb", "wsc"):
        submit(folder, "t1-a1", LOGISTIC, meta, DATA_IRIS, space=space)
    (Layout(folder, "wsb").task("t1-a1") / "big.bin").write_bytes(b"x" * 300_000)
    mine = ops.usage(folder, space="wsa")
    assert mine["workdir"] == str(folder)
    assert mine["workspace"]["id"] == "wsa" and mine["workspace"]["tasks"] == 1
    assert mine["other_workspaces"] == 2
    assert mine["other_bytes"] >= 300_000 + 2 * mine["workspace"]["bytes"] - 4096
    assert mine["shared_bytes"] > 0
    assert set(mine) == {"workdir", "shared_bytes", "workspace", "other_workspaces", "other_bytes"}
    # Tasks an older datarun left at WORKDIR/tasks count as one more user of the folder.
    submit(folder, "t9-a1", LOGISTIC, meta, DATA_IRIS)
    assert ops.usage(folder, space="wsa")["other_workspaces"] == 3
    fresh = ops.usage(folder, space="new1")
    assert fresh["workspace"] == {"id": "new1", "bytes": 0, "tasks": 0} and fresh["other_workspaces"] == 4


def test_clean_removes_this_workspaces_leftovers_but_what_it_keeps_and_what_runs(workdir, runners):
    folder, meta = workdir
    for key in ("done-a1", "kept-a1"):
        submit(folder, key, LOGISTIC, meta, DATA_IRIS, space="ws")
    submit(folder, "t1-a1", LOGISTIC, meta, DATA_IRIS, space="other")
    runners.append(ops.start_runner(folder, slots=1, threads=1, idle=30, space="ws")["pid"])
    wait_finished(folder, ["done-a1", "kept-a1"], space="ws")
    submit(folder, "slow-a1", SLEEPS, meta, DATA_IRIS, space="ws", isolation="none")
    layout = Layout(folder, "ws")
    wait_for(lambda: (layout.task("slow-a1") / "started").exists(), "the slow task to start")
    submit(folder, "queued-a1", LOGISTIC, meta, DATA_IRIS, space="ws")  # behind it: one slot
    (layout.tasks / ".tmp-cut-a1-0000").mkdir()  # an accept cut short
    result = ops.clean(folder, ["kept-a1"], space="ws")
    assert result["removed"] == ["done-a1", "queued-a1"]
    assert (result["running"], result["kept"]) == (["slow-a1"], ["kept-a1"])
    assert result["freed"] > 0
    assert sorted(p.name for p in layout.tasks.iterdir()) == ["kept-a1", "slow-a1"]
    assert layout.inbox_keys() == []
    # --force cancels what runs, then removes it; the other workspace is never looked at.
    forced = ops.clean(folder, ["kept-a1"], force=True, space="ws")
    assert (forced["removed"], forced["running"]) == (["slow-a1"], [])
    assert sorted(p.name for p in layout.tasks.iterdir()) == ["kept-a1"]
    assert ops.poll(folder, ["t1-a1"], space="other")["tasks"]["t1-a1"]["state"] == "queued"


def test_the_command_line_takes_the_workspace_id(tmp_path, workdir):
    folder, meta = workdir
    members = {f"tasks/k1/{name}": content
               for name, content in task_files("k1", LOGISTIC, meta, DATA_IRIS).items()}
    archive = make_archive(tmp_path / "b.tar", members)

    def cli(*args):
        run = subprocess.run([sys.executable, "-m", "datarun.remote", *map(str, args)], cwd=REPO,
                             capture_output=True, text=True, timeout=60)
        return run.returncode, json.loads(run.stdout)

    assert cli("accept", folder, archive, "--space", "ws1")[1]["tasks"] == ["k1"]
    assert (folder / "workspaces" / "ws1" / "inbox" / "k1").exists()
    assert cli("poll", folder, "k1", "--space", "ws1")[1]["tasks"]["k1"]["state"] == "queued"
    assert cli("poll", folder, "k1", "--space", "ws2")[1]["tasks"]["k1"]["state"] == "missing"
    code, out = cli("usage", folder, "--space", "ws2")
    assert code == 0 and out["other_workspaces"] == 1
    code, out = cli("clean", folder, "--space", "ws1", "--keep")
    assert (code, out["removed"]) == (0, ["k1"])
    code, out = cli("poll", folder, "--space", "../x")
    assert (code, out) == (3, {"error": "bad workspace id '../x': use only letters, digits, '_', '.' and '-'"})


def test_a_session_serves_only_the_workspace_it_was_started_for(workdir):
    import io

    folder, _ = workdir
    out = io.StringIO()
    session(folder, stdin=io.StringIO('{"poll": ["k"], "space": "other"}\n{"poll": ["k"]}\n'),
            stdout=out, space="mine")
    first, second = (json.loads(line) for line in out.getvalue().splitlines())
    assert first == {"error": "HarnessError: a session serves the workspace it was started for: "
                              "`space` is not a request argument"}
    assert second["poll"]["tasks"] == {"k": {"state": "missing", "heartbeat": None}}


GATED = """
import os
import time

from sklearn.linear_model import LogisticRegression


class Gated(LogisticRegression):
    def fit(self, X, y):
        open("started", "w").close()
        while not os.path.exists({gate!r}):
            time.sleep(0.02)
        return super().fit(X, y)


def get_estimator():
    return Gated(max_iter=500)
"""


def test_the_runner_serves_on_when_a_running_tasks_folder_is_removed(tmp_path, workdir, runners):
    """A refused result's folder is cleaned up even if the attempt still runs there (the
    organiser gave it up): the runner must not die of writing into a folder that is gone."""
    folder, meta = workdir
    gate = tmp_path / "gate"
    # Unsandboxed: it waits for a gate file of the test's.
    submit(folder, "gone-a1", GATED.format(gate=str(gate)), meta, DATA_IRIS, space="ws",
           isolation="none")
    pid = ops.start_runner(folder, slots=1, threads=1, idle=30, space="ws")["pid"]
    runners.append(pid)
    layout = Layout(folder, "ws")
    wait_for(lambda: (layout.task("gone-a1") / "started").exists(), "the task to start")
    shutil.rmtree(layout.task("gone-a1"))
    gate.touch()
    wait_for(lambda: "task gone-a1: its folder was removed while it ran; no result written"
             in layout.runner_log.read_text(), "the runner to note the removed folder")
    submit(folder, "next-a1", LOGISTIC, meta, DATA_IRIS, space="ws")
    assert wait_finished(folder, ["next-a1"], space="ws")["next-a1"]["state"] == "done"
    runner = ops.poll(folder, [], space="ws")["runner"]
    assert (runner["pid"], runner["alive"]) == (pid, True)
