"""The harness's `sync --wait` and `session`: one process serving many syncs, answers as tasks finish."""

import io
import json
import subprocess
import sys
import time

from datarun.remote.sync import session, sync


def test_sync_waits_for_a_finish_but_no_longer(tmp_path):
    workdir = tmp_path / "wd"
    (workdir / "tasks" / "t1-a1").mkdir(parents=True)
    (workdir / "tasks" / "t1-a1" / "status.json").write_text(json.dumps({"heartbeat": time.time()}))
    started = time.monotonic()
    # No runner is alive: there is nothing to wait for, so the answer comes at once.
    answer = sync(workdir, poll=["t1-a1"], wait=5.0)
    assert time.monotonic() - started < 1.0
    assert answer["poll"]["tasks"]["t1-a1"]["state"] == "running"


def test_a_session_answers_each_line_and_reports_errors_in_band(tmp_path):
    workdir = tmp_path / "wd"
    requests = "\n".join([json.dumps({"poll": ["t1-a1"]}), "[1, 2]", json.dumps({"bogus": 1}),
                          json.dumps({"poll": []})]) + "\n"
    out = io.StringIO()
    assert session(workdir, io.StringIO(requests), out) == {"served": 4}
    answers = [json.loads(line) for line in out.getvalue().splitlines()]
    assert answers[0]["poll"]["tasks"] == {"t1-a1": {"state": "missing", "heartbeat": None}}
    assert answers[1] == {"error": "HarnessError: a session request is a JSON object of sync's arguments"}
    assert answers[2]["error"].startswith("TypeError: ") and "bogus" in answers[2]["error"]
    assert answers[3]["poll"]["tasks"] == {}


def test_the_session_command_serves_a_pipe(tmp_path):
    process = subprocess.Popen([sys.executable, "-m", "datarun.remote", "session", str(tmp_path / "wd")],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        for _ in range(3):
            process.stdin.write(json.dumps({"poll": ["t9-a1"]}) + "\n")
            process.stdin.flush()
            answer = json.loads(process.stdout.readline())
            assert answer["poll"]["tasks"]["t9-a1"]["state"] == "missing"
        process.stdin.close()
        assert json.loads(process.stdout.read()) == {"served": 3}
    finally:
        process.wait(10)


def test_sync_answers_as_soon_as_a_polled_task_finishes(tmp_path):
    import fcntl
    import threading

    workdir = tmp_path / "wd"
    task = workdir / "tasks" / "t1-a1"
    task.mkdir(parents=True)
    (task / "status.json").write_text(json.dumps({"heartbeat": time.time()}))
    with open(workdir / "runner.lock", "w") as lock:  # stands for a live runner
        fcntl.flock(lock, fcntl.LOCK_EX)
        threading.Timer(0.3, lambda: (task / "result.json").write_text("{}")).start()
        started = time.monotonic()
        answer = sync(workdir, poll=["t1-a1"], wait=5.0)
        waited = time.monotonic() - started
        assert answer["poll"]["tasks"]["t1-a1"]["state"] == "finished"
        assert 0.25 < waited < 2.0
        started = time.monotonic()
        (task / "result.json").unlink()
        assert sync(workdir, poll=["t1-a1"], wait=0.3)["poll"]["tasks"]["t1-a1"]["state"] == "running"
        assert time.monotonic() - started >= 0.3


def test_cancel_does_not_wait_on_a_frozen_runner(tmp_path):
    """A runner that holds its lock but no longer beats cannot kill trees: cancel does it at once."""
    import fcntl

    from datarun.remote import ops
    from datarun.remote.common import process_start

    workdir = tmp_path / "wd"
    task = workdir / "tasks" / "t1-a1"
    task.mkdir(parents=True)
    sleeper = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        (task / "status.json").write_text(json.dumps({  # as the runner records its task
            "pid": sleeper.pid, "pid_start": process_start(sleeper.pid), "heartbeat": time.time()}))
        (workdir / "runner.json").write_text(json.dumps({"pid": 1, "heartbeat": time.time() - 30}))
        with open(workdir / "runner.lock", "w") as lock:  # held: the runner is alive but frozen
            fcntl.flock(lock, fcntl.LOCK_EX)
            started = time.monotonic()
            assert ops.cancel(workdir, ["t1-a1"]) == {"tasks": {"t1-a1": "cancelled"}}
            assert time.monotonic() - started < ops.CANCEL_WAIT / 2
        assert sleeper.wait(5) == -9
        assert json.loads((task / "result.json").read_text())["error_kind"] == "cancelled"
    finally:
        sleeper.kill()
        sleeper.wait()
