"""`sync`: everything the dispatcher needs from a host in one call.

Over SSH each harness command costs a round trip and a Python start on the host, so one
dispatcher cycle is one `sync`: clean up collected tasks, accept new bundles, make sure the
runner runs when there is work, report every task's state, and pack the finished ones'
results for a single download.
"""

import json
import os
import sys
import time
from collections.abc import Sequence

from . import ops
from .common import Layout, wake_runner

WAIT_TICK = 0.02  # seconds between looks at the task folders while a sync waits


def sync(workdir: str | os.PathLike, *, archive: str | None = None, cleanup: Sequence[str] = (),
         poll: Sequence[str] = (), pack_out: str | None = None, slots: int | None = None,
         threads: int = 1, idle: float = 60.0, start: bool = False,
         python: str | None = None, wait: float = 0.0, space: str | None = None) -> dict:
    """`python`: the interpreter a new runner starts on (default: this one). `wait`: when no
    polled task is finished yet, keep looking for up to this many seconds and answer as
    soon as one finishes or the runner dies, so the dispatcher hears of a freed slot at
    once instead of at its next poll. `space`: the workspace whose tasks these are
    (common.Layout); nothing here reaches another workspace's."""
    result: dict = {}
    if cleanup:
        result["cleanup"] = ops.cleanup(workdir, list(cleanup), space=space)
    if archive:
        result["accepted"] = ops.accept(workdir, archive, space=space)
        start = True
    state = ops.poll(workdir, list(poll), space=space)
    waiting = any(task["state"] == "queued" for task in state["tasks"].values())
    if slots and (start or waiting) and not state["runner"]["alive"]:
        result["started"] = ops.start_runner(workdir, slots, threads, idle, python=python, space=space)
        state = ops.poll(workdir, list(poll), space=space)
    elif start:
        wake_runner(Layout(workdir, space))
    deadline = time.monotonic() + wait
    while (wait and time.monotonic() < deadline and state["runner"]["alive"]
           and not any(task["state"] in ("finished", "missing") for task in state["tasks"].values())):
        time.sleep(WAIT_TICK)
        state = ops.poll(workdir, list(poll), space=space)
    result["poll"] = state
    finished = [key for key, task in state["tasks"].items() if task["state"] == "finished"]
    if pack_out:
        # Its size and digest travel with the answer: the organiser reads that many bytes
        # and refuses a download cut short, damaged, or grown on the way.
        result["pack"] = ops.pack(workdir, pack_out, finished, space=space)
    return result


def session(workdir: str | os.PathLike, stdin=None, stdout=None, space: str | None = None) -> dict:
    """Serve `sync` requests, one JSON object a line, until the input ends.

    Over SSH this keeps one harness process per dispatcher connection, so a cycle costs a
    line each way instead of a new Python on the host. Each request is the keyword
    arguments of `sync`; each answer is its result, or {"error": "..."}.
    """
    stdin = stdin or sys.stdin
    stdout = stdout or sys.stdout
    served = 0
    for line in stdin:
        if not line.strip():
            continue
        try:
            request = json.loads(line)
            if not isinstance(request, dict):
                raise ops.HarnessError("a session request is a JSON object of sync's arguments")
            if "space" in request:
                raise ops.HarnessError("a session serves the workspace it was started for: "
                                       "`space` is not a request argument")
            answer = sync(workdir, space=space, **request)
        except (ops.HarnessError, OSError, TypeError, ValueError) as error:
            answer = {"error": f"{type(error).__name__}: {error}"}
        stdout.write(json.dumps(answer, default=str) + "\n")
        stdout.flush()
        served += 1
    return {"served": served}
