"""Executors: how tasks reach a host. One interface, two transports (local, ssh)."""

from datarun.executors.base import Executor, PollReport, TaskPoll


def open_executor(workspace, host) -> Executor:
    if host.executor == "local":
        from datarun.executors.local import LocalExecutor

        return LocalExecutor(workspace, host)
    from datarun.executors.ssh import SSHExecutor

    return SSHExecutor(workspace, host)


__all__ = ["Executor", "PollReport", "TaskPoll", "open_executor"]
