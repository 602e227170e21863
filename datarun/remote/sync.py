"""`sync`: everything the dispatcher needs from a host in one call.

Over SSH each harness command costs a round trip and a Python start on the host, so one
dispatcher cycle is one `sync`: clean up collected tasks, accept new bundles, make sure the
runner runs when there is work, report every task's state, and pack the finished ones'
results for a single download.
"""

import os

from . import ops


def sync(workdir: str | os.PathLike, *, archive: str | None = None, cleanup: list[str] = (),
         poll: list[str] = (), pack_out: str | None = None, slots: int | None = None,
         threads: int = 1, idle: float = 60.0, start: bool = False,
         python: str | None = None) -> dict:
    """`python`: the interpreter a new runner starts on (default: this one)."""
    result: dict = {}
    if cleanup:
        result["cleanup"] = ops.cleanup(workdir, list(cleanup))
    if archive:
        result["accepted"] = ops.accept(workdir, archive)
        start = True
    state = ops.poll(workdir, list(poll))
    waiting = any(task["state"] == "queued" for task in state["tasks"].values())
    if slots and (start or waiting) and not state["runner"]["alive"]:
        result["started"] = ops.start_runner(workdir, slots, threads, idle, python=python)
        state = ops.poll(workdir, list(poll))
    result["poll"] = state
    finished = [key for key, task in state["tasks"].items() if task["state"] == "finished"]
    if pack_out:
        result["pack"] = ops.pack(workdir, pack_out, finished)
    return result
