"""Executors: how tasks reach a host. One interface (`base.Executor`), two transports (local, ssh)."""

from __future__ import annotations

from datarun.executors.base import Executor, PollReport, TaskPoll
from datarun.executors.hosts import Host
from datarun.store.workspace import Workspace


def open_executor(workspace: Workspace, host: Host) -> Executor:
    """The executor for one host of the workspace's registry. Each transport is imported only
    when a host needs it (paramiko alone costs a tenth of a second)."""
    if host.executor == "local":
        from datarun.executors.local import LocalExecutor

        return LocalExecutor(workspace, host)
    from datarun.executors.ssh import SSHExecutor

    return SSHExecutor(workspace, host)


__all__ = ["Executor", "PollReport", "TaskPoll", "open_executor"]
