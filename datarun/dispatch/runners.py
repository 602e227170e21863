"""The local hosts' runners outside training: started ahead of it, stopped after the demo."""

from __future__ import annotations

import os

from datarun.errors import DatarunError
from datarun.executors.hosts import load_hosts
from datarun.executors.local import LocalExecutor
from datarun.store.workspace import Workspace

WARM_SWITCH = "DATARUN_WARM_RUNNER"  # "0" leaves the runner to start with training


def warm_runners(workspace: Workspace) -> list[str]:
    """Start the local hosts' runners ahead of training; the names of those started.

    A runner pays its imports (numpy, pandas, scikit-learn: about a second) once, when it
    starts. `datarun submit` calls this so that second passes while the organiser types
    the next command, not at the start of `datarun train`. Only the embedded local host is
    warmed (an SSH host's runner would cost a connection at submit time). Best effort: a
    runner that cannot start here is reported by the dispatcher that needs it. An idle
    runner exits after a minute.
    """
    if os.environ.get(WARM_SWITCH, "1") == "0":
        return []
    try:
        hosts = load_hosts(workspace.hosts_file)
    except DatarunError:
        return []
    started = []
    for host in hosts.values():
        if host.executor != "local":
            continue
        try:
            if LocalExecutor(workspace, host).warm():
                started.append(host.name)
        except DatarunError:
            continue
    return started


def stop_runners(workspace: Workspace) -> list[str]:
    """Stop the local hosts' runners (by the PID each recorded); the names of those stopped."""
    stopped = []
    for host in load_hosts(workspace.hosts_file).values():
        if host.executor == "local" and LocalExecutor(workspace, host).stop_runner():
            stopped.append(host.name)
    return stopped
