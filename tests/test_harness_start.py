"""Starting the runner: the wake FIFO that tells it tasks arrived, and two starts racing
for one folder."""

import os
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
    stop_runner,
    submit,
    task_files,
    wait_finished,
    write_dataset,
)

from datarun.remote import ops

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def workdir(tmp_path):
    folder = tmp_path / "work"
    return folder, write_dataset(folder, DATA_IRIS, "classification")


def test_the_wake_fifo_carries_a_byte_to_the_runner_and_nothing_without_one(tmp_path):
    from datarun.remote.common import Layout, open_wake_fifo, wake_runner

    layout = Layout(tmp_path / "work").make()
    wake_runner(layout)  # no FIFO yet: nothing to do, no error
    assert not layout.wake.exists()
    layout.wake.write_text("stale")  # a regular file in the way is replaced by the FIFO
    fd = open_wake_fifo(layout)
    try:
        wake_runner(layout)
        assert os.read(fd, 16) == b"\0"
    finally:
        os.close(fd)
    wake_runner(layout)  # a FIFO nobody reads: the open fails and the write is skipped


def test_a_runner_serves_without_its_wake_fifo(workdir, runners):
    folder, meta = workdir
    (folder / "wake").mkdir()  # in the way, and not removable as a file
    started = ops.start_runner(folder, slots=1, threads=1, idle=30)
    runners.append(started["pid"])
    submit(folder, "t1", LOGISTIC, meta, DATA_IRIS)
    assert wait_finished(folder, ["t1"])["t1"]["state"] == "done"
    assert "no wake FIFO" in (folder / "runner.log").read_text()


def test_the_runner_listens_on_the_wake_fifo_that_sync_writes(workdir, runners):
    folder, meta = workdir
    started = ops.start_runner(folder, slots=1, threads=1, idle=30)
    runners.append(started["pid"])
    submit(folder, "t1", LOGISTIC, meta, DATA_IRIS)
    wait_finished(folder, ["t1"])
    # Opening a FIFO for writing without blocking fails (ENXIO) unless someone reads it:
    # the idle runner does, so sync's byte reaches it and it starts new tasks at once.
    assert (folder / "wake").is_fifo()
    fd = os.open(folder / "wake", os.O_WRONLY | os.O_NONBLOCK)
    os.close(fd)
    members = {f"tasks/t2/{name}": content
               for name, content in task_files("t2", LOGISTIC, meta, DATA_IRIS).items()}
    archive = make_archive(folder.parent / "t2.tar", members)
    from datarun.remote.sync import sync

    answer = sync(folder, archive=str(archive), poll=["t2"], slots=1, wait=30)
    assert answer["poll"]["tasks"]["t2"]["state"] == "finished"
    assert ops.poll(folder, [])["runner"]["pid"] == started["pid"]
    stop_runner(started["pid"])
    with pytest.raises(OSError):  # no reader any more: wake_runner skips the write
        os.open(folder / "wake", os.O_WRONLY | os.O_NONBLOCK)


def test_a_start_that_loses_the_folder_says_so_at_once(workdir, runners):
    folder, _ = workdir
    loser = subprocess.Popen([sys.executable, "-c", (
        "import sys; from datarun.remote import ops; "
        f"print(ops.start_runner({str(folder)!r}, slots=1, threads=1, idle=30))")],
        cwd=REPO, stdout=subprocess.PIPE, text=True)
    time.sleep(0.03)
    begun = time.monotonic()
    mine = ops.start_runner(folder, slots=1, threads=1, idle=30)
    took = time.monotonic() - begun
    theirs = eval(loser.communicate(timeout=60)[0])  # a dict printed by the other start
    runners.extend({mine["pid"], theirs["pid"]})
    assert mine["pid"] == theirs["pid"]  # one runner serves, whoever started it
    assert [mine["started"], theirs["started"]].count(True) == 1
    assert took < 0.9  # not the loser's lock retries (20 x 50 ms)
    # The losing start stopped its own runner: once the winner ends, none takes over.
    serving = [p for p in psutil.process_iter(["cmdline"])
               if "serve" in (p.info["cmdline"] or []) and str(folder) in (p.info["cmdline"] or [])]
    runners.extend(p.pid for p in serving)
    assert [p.pid for p in serving] == [mine["pid"]]
