"""`cancel` kills a task's process group only while its pid is still the task's.

When no runner is alive, `cancel` kills the session whose pid status.json records. That
file is in the task's folder; the pid may have been reused since, or the task may have
written another process's pid there. The runner now records the process's start time
beside its pid, and `cancel` kills only a pid that still has that start time and leads its
process group. The attacks plant a status.json naming an unrelated process the test
started; the negative control is the same with the check off (the old behaviour): the
unrelated process dies.
"""

import json
import os
import signal
import subprocess
import time

import psutil
import pytest
from harness_helpers import DATA_IRIS, alive_named, session_members, submit, write_dataset
from test_harness_ops import SLEEPS

from datarun.remote import ops
from datarun.remote.common import Layout, process_group, process_start


@pytest.fixture
def bystander():
    """An unrelated process of the test's own, leading its own session (as a task does)."""
    process = subprocess.Popen(["sleep", "600"], start_new_session=True)
    yield process
    if process.poll() is None:
        process.kill()
    process.wait()


def plant(folder, key: str, status: dict):
    task = Layout(folder).make().task(key)
    task.mkdir(parents=True)
    (task / "task.json").write_text(json.dumps({"key": key}))
    (task / "status.json").write_text(json.dumps(
        {"state": "running", "started_at": time.time(), "heartbeat": time.time(), **status}))
    return task


def test_process_start_reads_field_22_and_tells_processes_apart(bystander):
    start = process_start(bystander.pid)
    assert start == process_start(bystander.pid) and isinstance(start, int)
    # psutil's create_time is the same field, in seconds since the epoch.
    boot = psutil.boot_time()
    ticks = os.sysconf("SC_CLK_TCK")
    assert abs(boot + start / ticks - psutil.Process(bystander.pid).create_time()) < 0.05
    assert process_start(os.getpid()) != start
    assert process_group(bystander.pid) == bystander.pid
    assert process_start(2**22 + 7) is None  # above pid_max: no such process


@pytest.mark.parametrize("forged", [
    {},                                           # no start time: an older or forged record
    {"pid_start": "yesterday"},
    {"pid_start": None},
], ids=["no-start", "text-start", "null-start"])
def test_a_status_without_a_valid_start_time_kills_nothing(tmp_path, bystander, forged):
    task = plant(tmp_path / "wd", "t1-a1", {"pid": bystander.pid, **forged})
    assert ops.cancel(tmp_path / "wd", ["t1-a1"]) == {"tasks": {"t1-a1": "cancelled"}}
    assert bystander.poll() is None  # alive
    assert json.loads((task / "result.json").read_text())["error_kind"] == "cancelled"


def test_a_reused_pid_is_never_killed(tmp_path, bystander, monkeypatch):
    # The task's process started at another time than the one now holding its pid.
    start = process_start(bystander.pid)
    plant(tmp_path / "wd", "t1-a1", {"pid": bystander.pid, "pid_start": start - 1})
    assert ops.cancel(tmp_path / "wd", ["t1-a1"]) == {"tasks": {"t1-a1": "cancelled"}}
    assert bystander.poll() is None

    # Negative control: the check off, as before; the same status kills the bystander.
    plant(tmp_path / "wd2", "t1-a1", {"pid": bystander.pid, "pid_start": start - 1})
    monkeypatch.setattr(ops, "still_the_task", lambda pid, pid_start: True)
    ops.cancel(tmp_path / "wd2", ["t1-a1"])
    assert bystander.wait(timeout=10) == -signal.SIGKILL


def test_a_pid_that_does_not_lead_its_group_is_not_killed_by_group(tmp_path):
    # The right start time, but not a group leader: killpg(pid) would hit another group.
    process = subprocess.Popen(["sleep", "600"])  # in the test's own process group
    try:
        plant(tmp_path / "wd", "t1-a1", {"pid": process.pid, "pid_start": process_start(process.pid)})
        ops.cancel(tmp_path / "wd", ["t1-a1"])
        assert process.poll() is None
    finally:
        process.kill()
        process.wait()


def test_a_task_whose_runner_died_is_killed_by_cancel(tmp_path, runners):
    folder = tmp_path / "wd"
    meta = write_dataset(folder, DATA_IRIS, "classification")
    submit(folder, "victim", SLEEPS, meta, DATA_IRIS)
    runner = ops.start_runner(folder, slots=1, threads=1, idle=30)["pid"]
    runners.append(runner)
    task = folder / "tasks" / "victim"
    deadline = time.monotonic() + 30
    # Once status.json shows the task in its train phase, its pid is the task's own process
    # (sandboxed: PID 1's sibling in its namespace, announced before the task ran).
    while (json.loads((task / "status.json").read_text()) if (task / "status.json").exists()
           else {}).get("phase") != "train":
        assert time.monotonic() < deadline, "the task did not start"
        time.sleep(0.05)
    status = json.loads((task / "status.json").read_text())
    child = status["pid"]
    assert status["pid_start"] == process_start(child)
    os.kill(runner, signal.SIGKILL)  # the runner dies; its task's session lives on
    try:
        psutil.Process(runner).wait(timeout=10)  # reaped: it was started from this process
    except psutil.NoSuchProcess:
        pass
    assert ops.poll(folder, [])["runner"]["alive"] is False
    assert ops.cancel(folder, ["victim"]) == {"tasks": {"victim": "cancelled"}}
    deadline = time.monotonic() + 10
    while session_members(child) or alive_named("dr-sleepy"):
        assert time.monotonic() < deadline, "the task's session outlived cancel"
        time.sleep(0.02)
    # Its namespace's init was killed too (it may linger, exiting, until the host's init
    # reaps the task's zombie: its command line is gone at once).
    init = status["init"]
    while init is not None and any(p.pid == init for p in map(psutil.Process, alive_named("2147483647"))):
        assert time.monotonic() < deadline, "the task's namespace outlived cancel"
        time.sleep(0.02)
