"""The runner finds its tasks' processes by reading down from itself (processes.descendants):
the same processes, with the same parents, as psutil's scan of every process on the host,
including a grandchild, a child started from another thread, and one that was orphaned
back to the reading process (a child subreaper, as the runner is)."""

import subprocess
import sys
import time

import psutil

from datarun.remote.processes import _scanned, descendants

PR_SET_CHILD_SUBREAPER = 36
SCRIPT = r"""
import os, subprocess, sys, time
# a grandchild that stays, and one orphaned: its parent exits at once
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
if os.fork() == 0:
    if os.fork() == 0:
        time.sleep(30)
    os._exit(0)
print("ready", flush=True)
time.sleep(30)
"""


def _tree_of(root: int, finder) -> dict[int, int]:
    procs, parents = finder(root, psutil)
    assert {proc.pid for proc in procs} == set(parents)
    return parents


def test_descendants_finds_what_a_scan_of_every_process_finds():
    reaper = subprocess.Popen(
        [sys.executable, "-c", f"""
import ctypes, os, subprocess, sys, threading, time
ctypes.CDLL(None).prctl({PR_SET_CHILD_SUBREAPER}, 1, 0, 0, 0)
child = subprocess.Popen([sys.executable, "-c", {SCRIPT!r}], stdout=subprocess.PIPE)
child.stdout.readline()
kept = []
threading.Thread(target=lambda: kept.append(subprocess.Popen(["sleep", "30"]))).start()
time.sleep(0.5)
print("ready", flush=True)
time.sleep(30)
"""], stdout=subprocess.PIPE)
    try:
        assert reaper.stdout.readline().strip() == b"ready"
        walked = _tree_of(reaper.pid, descendants)
        scanned = _tree_of(reaper.pid, _scanned)
        assert walked == scanned
        # the script, its grandchildren (one adopted by the reaper; the zombie of the parent
        # that left it, never reaped), the sleep started from another thread
        assert len(walked) == 5
        assert sum(1 for parent in walked.values() if parent == reaper.pid) == 3
    finally:
        for proc in psutil.Process(reaper.pid).children(recursive=True):
            proc.kill()
        reaper.kill()
        reaper.wait()


def test_descendants_of_a_process_without_children_is_empty():
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        time.sleep(0.05)
        procs, parents = descendants(sleeper.pid, psutil)
        assert procs == [] and parents == {}
    finally:
        sleeper.kill()
        sleeper.wait()
