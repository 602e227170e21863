"""Executors: how tasks reach a host. One interface (`base.Executor`); transports: local, ssh,
and Dask (a scheduler, or a batch queue through dask-jobqueue)."""

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
    if host.executor == "dask":
        from datarun.executors.dask import DaskExecutor

        return DaskExecutor(workspace, host)
    if host.executor in ("slurm", "pbs", "sge", "lsf"):
        from datarun.executors.jobqueue import JobQueueExecutor

        return JobQueueExecutor(workspace, host)
    from datarun.executors.ssh import SSHExecutor

    return SSHExecutor(workspace, host)


def unfit_reason(host: Host) -> str | None:
    """Why a host can take no task, when that is known here without asking the host: a local
    host that cannot sandbox. (An SSH host's is found by `host check`, or fails its tasks.)"""
    if host.executor == "local":
        from datarun.executors.local import sandbox_problem

        return sandbox_problem(host)
    return None


__all__ = ["Executor", "PollReport", "TaskPoll", "open_executor", "unfit_reason"]
