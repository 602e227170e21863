"""The harness commands: safe unpacking, one runner per folder, idle exit, cancel, the JSON CLI."""

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import psutil
import pytest
from harness_helpers import (
    DATA_IRIS,
    LOGISTIC,
    alive_named,
    make_archive,
    stop_runner,
    submit,
    task_files,
    wait_finished,
    write_dataset,
)

import datarun.remote
from datarun.remote import HARNESS_VERSION, ops
from datarun.remote.common import HarnessError

REPO = Path(__file__).resolve().parent.parent

SLEEPS = """
import ctypes, time

class Sleepy:
    def fit(self, X, y):
        ctypes.CDLL(None).prctl(15, b"dr-sleepy", 0, 0, 0)  # its name, seen from the host
        time.sleep(60)

def get_estimator():
    return Sleepy()
"""

SEGFAULTS = """
import os, signal

class Crash:
    def fit(self, X, y):
        print("about to crash")
        os.kill(os.getpid(), signal.SIGSEGV)

def get_estimator():
    return Crash()
"""

EXITS = """
import os

class Quits:
    def fit(self, X, y):
        os._exit(7)

def get_estimator():
    return Quits()
"""


def cli(*args, cwd=None, python=sys.executable, flags=()) -> tuple[int, dict]:
    run = subprocess.run([python, *flags, "-m", "datarun.remote" if cwd is None else "datarun_remote",
                          *map(str, args)], capture_output=True, text=True, cwd=cwd or REPO,
                         timeout=60)
    return run.returncode, json.loads(run.stdout)


@pytest.fixture
def workdir(tmp_path):
    folder = tmp_path / "work"
    return folder, write_dataset(folder, DATA_IRIS, "classification")


def _task_members(key, meta, code=LOGISTIC):
    return {f"tasks/{key}/{name}": content
            for name, content in task_files(key, code, meta, DATA_IRIS).items()}


def _special_archive(path, name, kind):
    with tarfile.open(path, "w") as tar:
        info = tarfile.TarInfo(name)
        info.type = kind
        if kind in (tarfile.SYMTYPE, tarfile.LNKTYPE):
            info.linkname = "/etc/passwd"
        tar.addfile(info)
    return path


# --- accept -------------------------------------------------------------------------


def test_accept_unpacks_tasks_and_data_and_queues_the_tasks(tmp_path, workdir):
    folder, meta = workdir
    other = tmp_path / "other"
    write_dataset(other, "fresh01", "classification")
    members = _task_members("t1-a1", meta)
    for path in (other / "data" / "fresh01").iterdir():
        if path.name != ".complete":
            members[f"data/fresh01/{path.name}"] = path.read_bytes()
    archive = make_archive(tmp_path / "bundle.tar", members)
    assert ops.accept(folder, archive) == {"tasks": ["t1-a1"], "data": ["fresh01"], "skipped": [],
                                           "refused": {}}
    assert not archive.exists()
    assert (folder / "data" / "fresh01" / ".complete").exists()
    assert (folder / "inbox" / "t1-a1").exists()
    assert (folder / "tasks" / "t1-a1" / "submission" / "estimator.py").is_file()
    assert ops.poll(folder, ["t1-a1"])["tasks"]["t1-a1"]["state"] == "queued"


@pytest.mark.parametrize("state", ["finished", "running", "queued", "left over"])
def test_a_bundle_whose_folder_exists_is_refused_never_merged(tmp_path, workdir, state):
    folder, meta = workdir
    submit(folder, "t1-a1", LOGISTIC, meta, DATA_IRIS)
    task = folder / "tasks" / "t1-a1"
    if state != "queued":
        (folder / "inbox" / "t1-a1").unlink()
    if state == "finished":
        (task / "result.json").write_text('{"stale": true}')
    elif state == "running":
        (task / "status.json").write_text("{}")
    before = sorted(str(p.relative_to(task)) for p in task.rglob("*"))
    members = _task_members("t1-a1", meta, code="# newer code\n")
    members["tasks/t1-a1/submission/extra.py"] = b"x = 1\n"
    members["tasks/t2-a1/task.json"] = members["tasks/t1-a1/task.json"]
    archive = make_archive(tmp_path / "again.tar", members)
    result = ops.accept(folder, archive)
    assert result["tasks"] == ["t2-a1"]  # the rest of the archive is taken
    assert result["refused"] == {"t1-a1": (
        f"task folder t1-a1 already exists on the host ({state}): a bundle is never merged "
        "into an older one; send the task again under a new key")}
    # Nothing of the new bundle reached the old folder, and it was not queued again.
    assert sorted(str(p.relative_to(task)) for p in task.rglob("*")) == before
    assert (task / "submission" / "estimator.py").read_text() != "# newer code\n"
    assert (folder / "inbox" / "t1-a1").exists() == (state == "queued")
    assert not list((folder / "tasks").glob(".tmp-*"))


@pytest.mark.parametrize("name, kind, message", [
    ("/etc/cron.d/evil", tarfile.REGTYPE, "unsafe archive: absolute path '/etc/cron.d/evil'"),
    ("tasks/k/../../../evil", tarfile.REGTYPE, "climbs out with '..'"),
    ("tasks/k/link", tarfile.SYMTYPE, "unsafe archive: 'tasks/k/link' is a link"),
    ("tasks/k/hard", tarfile.LNKTYPE, "unsafe archive: 'tasks/k/hard' is a link"),
    ("tasks/k/dev", tarfile.CHRTYPE, "'tasks/k/dev' is not a plain file or folder"),
    ("tasks/k/fifo", tarfile.FIFOTYPE, "'tasks/k/fifo' is not a plain file or folder"),
    ("elsewhere/file", tarfile.REGTYPE, "only tasks/<key>/ and data/<hash>/"),
    ("tasks/b@d/task.json", tarfile.REGTYPE, "bad name 'b@d'"),
    ("tasks/k", tarfile.REGTYPE, "a file where a folder belongs"),
    ("tasks/k/estimator.py", tarfile.REGTYPE, "task k in the archive has no task.json"),
])
def test_unsafe_archives_are_refused_before_anything_is_written(tmp_path, workdir, name, kind, message):
    folder, meta = workdir
    archive = _special_archive(tmp_path / "evil.tar", name, kind)
    with pytest.raises(HarnessError) as raised:
        ops.accept(folder, archive)
    assert message in str(raised.value)
    assert list((folder / "tasks").iterdir()) == []
    assert list((folder / "inbox").iterdir()) == []
    assert not (tmp_path / "evil").exists()


def test_an_unsafe_member_next_to_good_ones_refuses_the_whole_archive(tmp_path, workdir):
    folder, meta = workdir
    members = _task_members("good", meta)
    members["tasks/good/../../escape.txt"] = b"x"
    archive = make_archive(tmp_path / "mixed.tar", members)
    code, out = cli("accept", folder, archive)
    assert code == 3 and "climbs out" in out["error"]
    assert not (folder / "tasks" / "good").exists()
    assert not (tmp_path / "escape.txt").exists()


def test_accept_refuses_what_is_not_an_archive(tmp_path, workdir):
    folder, _ = workdir
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"not a tar at all" * 100)
    with pytest.raises(HarnessError, match="cannot read archive"):
        ops.accept(folder, junk)
    with pytest.raises(HarnessError, match="no archive at"):
        ops.accept(folder, tmp_path / "absent.tar")


def test_task_keys_are_checked(workdir):
    folder, _ = workdir
    with pytest.raises(HarnessError, match=r"bad task key '\.\./x'"):
        ops.poll(folder, ["../x"])
    code, out = cli("log", folder, "a/b")
    assert code == 3 and out["error"].startswith("bad task key 'a/b'")


# --- the runner -----------------------------------------------------------------------


def test_only_one_runner_serves_a_folder(workdir, runners):
    folder, meta = workdir
    first = ops.start_runner(folder, slots=1, threads=1, idle=30)
    runners.append(first["pid"])
    assert first["started"] is True
    again = ops.start_runner(folder, slots=1, threads=1, idle=30)
    assert again == {"pid": first["pid"], "started": False}
    # Even a runner started by hand steps aside.
    code, out = cli("serve", folder, "--slots", "1", "--threads", "1")
    assert code == 0 and out["served"] is False
    submit(folder, "t1", LOGISTIC, meta, DATA_IRIS)
    assert wait_finished(folder, ["t1"])["t1"]["state"] == "done"
    assert ops.poll(folder, [])["runner"]["pid"] == first["pid"]


def test_the_runner_exits_when_idle_and_starts_again_for_new_work(workdir, runners):
    folder, meta = workdir
    first = ops.start_runner(folder, slots=1, threads=1, idle=0.5)
    runners.append(first["pid"])
    psutil.Process(first["pid"]).wait(timeout=20)
    report = ops.poll(folder, [])
    assert report["runner"]["alive"] is False
    assert json.loads((folder / "runner.json").read_text())["state"] == "exited"
    submit(folder, "later", LOGISTIC, meta, DATA_IRIS)
    second = ops.start_runner(folder, slots=1, threads=1, idle=0.5)
    runners.append(second["pid"])
    assert second["started"] is True and second["pid"] != first["pid"]
    assert wait_finished(folder, ["later"])["later"]["state"] == "done"


def test_poll_reports_heartbeats_of_a_running_task(workdir, runners):
    folder, meta = workdir
    submit(folder, "slow", SLEEPS, meta, DATA_IRIS, limits={"wall_time": 30.0})
    runners.append(ops.start_runner(folder, slots=1, threads=1, idle=30)["pid"])
    deadline = time.monotonic() + 20
    while ops.poll(folder, ["slow"])["tasks"]["slow"]["state"] != "running":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(1.2)
    report = ops.poll(folder, ["slow", "nope"])
    assert report["runner"]["alive"] is True
    assert report["now"] - report["runner"]["heartbeat"] < 3
    assert report["now"] - report["tasks"]["slow"]["heartbeat"] < 3
    assert report["tasks"]["nope"] == {"state": "missing", "heartbeat": None}
    status = json.loads((folder / "tasks" / "slow" / "status.json").read_text())
    assert status["state"] == "running" and status["phase"] == "train"
    assert ops.cancel(folder, ["slow"]) == {"tasks": {"slow": "cancelled"}}


def test_cancel_kills_a_running_task_and_drops_a_queued_one(workdir, runners):
    folder, meta = workdir
    submit(folder, "running", SLEEPS, meta, DATA_IRIS)
    submit(folder, "queued", LOGISTIC, meta, DATA_IRIS)
    runners.append(ops.start_runner(folder, slots=1, threads=1, idle=30)["pid"])
    deadline = time.monotonic() + 20
    while not alive_named("dr-sleepy"):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    states = ops.cancel(folder, ["running", "queued", "absent"])["tasks"]
    assert states == {"running": "cancelled", "queued": "cancelled", "absent": "missing"}
    results = wait_finished(folder, ["running", "queued"])
    for result in results.values():
        assert result["state"] == "failed" and result["error_kind"] == "cancelled"
    assert alive_named("dr-sleepy") == []
    assert ops.cancel(folder, ["running"]) == {"tasks": {"running": "finished"}}


def test_a_stopped_runner_records_its_running_task_as_a_harness_error(workdir, runners):
    folder, meta = workdir
    submit(folder, "victim", SLEEPS, meta, DATA_IRIS)
    pid = ops.start_runner(folder, slots=1, threads=1, idle=30)["pid"]
    runners.append(pid)
    deadline = time.monotonic() + 20
    while not alive_named("dr-sleepy"):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    stop_runner(pid)
    result = json.loads((folder / "tasks" / "victim" / "result.json").read_text())
    assert result["error_kind"] == "harness_error"
    assert result["error"] == "the runner was stopped while the task ran"


@pytest.mark.parametrize("code, kind, message", [
    (SEGFAULTS, "fit_error", "the task process was killed by SIGSEGV during train"),
    (EXITS, "fit_error", "the task process exited with code 7 during train"),
])
def test_a_task_process_that_dies_is_reported_with_its_phase(workdir, runners, code, kind, message):
    folder, meta = workdir
    submit(folder, "dies", code, meta, DATA_IRIS)
    runners.append(ops.start_runner(folder, slots=1, threads=1, idle=30)["pid"])
    result = wait_finished(folder, ["dies"])["dies"]
    assert result["error_kind"] == kind
    assert result["error"].startswith(message)
    if code is SEGFAULTS:
        assert "about to crash" in result["error"]


def test_a_task_that_cannot_start_is_a_harness_error(workdir, runners):
    folder, meta = workdir
    submit(folder, "nodata", LOGISTIC, meta, "absent00")
    task = json.loads((folder / "tasks" / "nodata" / "task.json").read_text())
    submit(folder, "oddflow", LOGISTIC, meta, DATA_IRIS)
    odd = folder / "tasks" / "oddflow" / "task.json"
    odd.write_text(json.dumps({**task, "key": "oddflow", "data": DATA_IRIS, "workflow": "magic"}))
    (folder / "inbox" / "ghost").touch()  # a marker without its bundle
    runners.append(ops.start_runner(folder, slots=1, threads=1, idle=30)["pid"])
    results = wait_finished(folder, ["nodata", "oddflow"])
    assert not (folder / "inbox" / "ghost").exists()
    assert "task ghost has no readable task.json" in (folder / "runner.log").read_text()
    assert results["nodata"]["error_kind"] == "harness_error"
    assert "data set absent00 is not on this host (or not complete)" in results["nodata"]["error"]
    assert "unknown workflow 'magic' (this harness knows estimator, ramp)" in results["oddflow"]["error"]


def test_start_refuses_zero_slots(workdir):
    folder, _ = workdir
    with pytest.raises(HarnessError, match="slots and threads must be at least 1, got 0 and 1"):
        ops.start_runner(folder, slots=0, threads=1)


# --- the command line and shipping ------------------------------------------------------


def test_the_cli_prints_json_for_info_and_poll(workdir):
    folder, _ = workdir
    code, info = cli("info", folder)
    assert code == 0
    assert info["harness"] == HARNESS_VERSION and info["missing"] == []
    assert info["cpus"] >= 1 and info["memory"] > 0 and info["disk_free"] > 0
    assert info["sklearn"] and info["numpy"] and info["python"].startswith("3.")
    code, report = cli("poll", folder, "a1", "b2")
    assert code == 0
    assert report["tasks"] == {"a1": {"state": "missing", "heartbeat": None},
                               "b2": {"state": "missing", "heartbeat": None}}
    assert report["runner"]["alive"] is False


def test_the_cli_answers_errors_in_json_with_exit_code_3(workdir):
    folder, _ = workdir
    code, out = cli("log", folder, "nosuch")
    assert (code, out) == (3, {"error": "no task nosuch on this host"})
    code, out = cli("start", folder, "--slots", "two", "--threads", "1")
    assert code == 3 and out["error"].startswith("bad arguments:")


def _ship(tmp_path) -> Path:
    """The harness as a host gets it: WORKDIR/harness/<hash>/datarun_remote/."""
    shipped = tmp_path / "harness" / "h1"
    shutil.copytree(Path(datarun.remote.__file__).parent, shipped / "datarun_remote",
                    ignore=shutil.ignore_patterns("__pycache__"))
    return shipped


def test_info_works_on_a_python_without_the_scientific_libraries(tmp_path, workdir):
    folder, _ = workdir
    # -S hides site-packages: no numpy, pandas, scikit-learn or psutil to be found.
    code, info = cli("info", folder, cwd=_ship(tmp_path), flags=("-S", "-E"))
    assert code == 0
    assert info["numpy"] is None and info["sklearn"] is None and info["psutil"] is None
    assert sorted(info["missing"]) == ["numpy", "pandas", "psutil", "sklearn"]
    assert info["harness"] == HARNESS_VERSION


def test_the_shipped_package_runs_a_task_on_its_own(tmp_path, workdir, runners):
    folder, meta = workdir
    shipped = _ship(tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    archive = make_archive(tmp_path / "b.tar", _task_members("solo", meta))
    for args in (("accept", folder, archive), ("start", folder, "--slots", "1", "--threads", "1")):
        run = subprocess.run([sys.executable, "-m", "datarun_remote", *map(str, args)], cwd=shipped,
                             capture_output=True, text=True, env=env, timeout=60)
        assert run.returncode == 0, run.stdout + run.stderr
    runners.append(json.loads(run.stdout)["pid"])
    result = wait_finished(folder, ["solo"])["solo"]
    assert result["state"] == "done", result["error"]
    cmdline = " ".join(psutil.Process(runners[-1]).cmdline())
    assert "datarun_remote serve" in cmdline


def test_pack_through_the_cli_writes_a_readable_tar(tmp_path, workdir, runners):
    folder, meta = workdir
    submit(folder, "p1", LOGISTIC, meta, DATA_IRIS)
    runners.append(ops.start_runner(folder, slots=1, threads=1, idle=30)["pid"])
    wait_finished(folder, ["p1"])
    code, out = cli("pack", folder, tmp_path / "out" / "r.tar", "p1")
    assert code == 0 and out["packed"] == ["p1"]
    with tarfile.open(tmp_path / "out" / "r.tar") as tar:
        result = json.load(io.TextIOWrapper(tar.extractfile("p1/result.json")))
    assert result["state"] == "done"
    code, out = cli("cleanup", folder, "p1")
    assert (code, out) == (0, {"removed": ["p1"], "running": []})
