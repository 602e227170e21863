"""Batch queues (Slurm, PBS, SGE, LSF) as Dask hosts, through dask-jobqueue.

Worker jobs are started when tasks wait and ended when none are left (adaptive), with the
scheduler inside the dispatcher's own process; everything else is the Dask executor's.
What dask-jobqueue would only log in the background for ever (no `sbatch`, a partition
Slurm refuses) is checked first and said in one line.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

from datarun.errors import HostError
from datarun.executors.dask import DaskExecutor
from datarun.executors.daskconnect import (
    JOBQUEUE_CLASSES,
    SUBMIT_COMMANDS,
    import_distributed,
    one_line,
)


def import_jobqueue():
    """dask_jobqueue, imported without the SIGINT handler it installs on import (a
    `sys.exit()` that would replace datarun's own Ctrl-C handling, and that fails outright
    off the main thread: hosts are checked and synced on threads of their own)."""
    import signal
    import sys

    if "dask_jobqueue" in sys.modules:
        return sys.modules["dask_jobqueue"]
    original = signal.signal
    signal.signal = lambda *_args, **_kwargs: None  # type: ignore[assignment]
    try:
        import dask_jobqueue
    finally:
        signal.signal = original
    return dask_jobqueue


class JobQueueExecutor(DaskExecutor):
    """A batch queue (Slurm, PBS, SGE, LSF) through dask-jobqueue: worker jobs started when
    tasks are queued and ended when none are left; the scheduler runs in this process."""

    @property
    def address(self) -> str:
        return f"{self.host.executor} queue {self.host.queue or '(default)'}"

    def preflight(self) -> None:
        """What dask-jobqueue would only log, in the background, for ever: said here in one line."""
        host = self.host
        command = SUBMIT_COMMANDS[host.executor]
        if shutil.which(command) is None:
            raise HostError(f"host {host.name}: `{command}` is not on PATH on this machine: install the "
                            f"{host.executor} client commands here, or fix PATH")
        if host.executor == "slurm":
            test = ["sbatch", "--test-only", "--wrap", "true"]
            if host.queue:
                test[2:2] = ["-p", host.queue]
            if host.account:
                test[2:2] = ["-A", host.account]
            try:
                done = subprocess.run(test, capture_output=True, text=True, timeout=host.connect_timeout + 5)
            except subprocess.TimeoutExpired:
                raise HostError(f"host {host.name}: `sbatch --test-only` did not answer within "
                                f"{host.connect_timeout + 5:.0f}s: is slurmctld running?") from None
            if done.returncode != 0:
                lines = [line for line in done.stderr.splitlines() if line.strip()]
                raise HostError(f"host {host.name}: Slurm refuses its jobs: "
                                f"{lines[-1].strip() if lines else 'sbatch --test-only failed'}; "
                                "check queue and account in hosts.toml")

    def _start_cluster(self):
        distributed = import_distributed()
        try:
            import dask

            dask_jobqueue = import_jobqueue()
        except ImportError:
            raise HostError("Slurm/PBS/SGE/LSF hosts need dask-jobqueue on the organiser's machine: "
                            "pip install 'datarun[cluster]'") from None
        host = self.host
        self.preflight()
        # The scheduler runs here: Dask's own re-runs after a worker death are off from the start.
        dask.config.set({"distributed.scheduler.allowed-failures": 0})
        options: dict[str, Any] = {
            "cores": host.cores or host.threads, "processes": 1,
            "memory": f"{(host.memory or 2 * 1024**3) // (host.max_jobs or 1) // 1024**2}MiB",
            "walltime": host.walltime or "01:00:00", "job_name": "datarun-worker",
            "python": host.python if host.python not in ("python3", "") else __import__("sys").executable,
            "nanny": False, "death_timeout": 60,
            "scheduler_options": {"dashboard_address": "127.0.0.1:0" if host.interface == "lo" else ":0"},
            "job_extra_directives": list(host.job_extra),
        }
        if host.queue:
            options["queue"] = host.queue
        if host.account:
            options["account"] = host.account
        if host.interface:
            options["interface"] = host.interface
        # Workers' scratch beside the harness, not /tmp/dask-scratch-space (shared by everyone).
        options["local_directory"] = str(Path(host.workdir).expanduser() / "dask-scratch")
        if host.log_directory:
            options["log_directory"] = str(Path(host.log_directory).expanduser())
        security = self.security()
        if security is not None:
            options["security"] = security
            options["protocol"] = "tls://"
        cls = getattr(dask_jobqueue, JOBQUEUE_CLASSES[host.executor])
        try:
            self.cluster = cls(**options)
            self.adaptive = False
            return distributed.Client(self.cluster, set_as_default=False, timeout=host.connect_timeout)
        except HostError:
            raise
        except Exception as error:
            raise HostError(f"host {host.name}: could not start the {host.executor} cluster: "
                            f"{one_line(error)}") from None

    def _check_versions(self) -> None:
        pass  # the scheduler is this process's own

    def _submit(self, bundles: list[Path]) -> dict[str, Any]:
        if bundles and self.cluster is not None and not getattr(self, "adaptive", False):
            # Worker jobs start when tasks wait and end when none are left: an idle
            # challenge holds no allocation. (target_duration 1 s: every waiting task asks
            # for a worker at once, not one worker per 5 s of estimated work.)
            self.cluster.adapt(minimum=0, maximum=self.host.max_jobs or 1, wait_count=1,
                               interval="500ms", target_duration="1s")
            self.adaptive = True
        return super()._submit(bundles)

    def worker_reports(self) -> dict[str, Any]:
        """`host check` starts one worker job (none run while the queue is idle) and asks it."""
        client = self._client()
        if not client.scheduler_info(n_workers=-1).get("workers") and not getattr(self, "adaptive", False):
            self.cluster.scale(1)
            # As long as any command may take: a queue that starts no job in that time is
            # full, drained or refusing, which the organiser must hear of rather than wait on.
            timeout = self.host.command_timeout
            try:
                client.wait_for_workers(1, timeout=timeout)
            except Exception:
                logs = (f"the job logs in {self.host.log_directory}" if self.host.log_directory
                        else "the jobs' output files")
                raise HostError(f"host {self.host.name}: no worker job of the {self.host.executor} queue "
                                f"{self.host.queue or '(default)'} started within {timeout:.0f}s: see squeue, "
                                f"and {logs}") from None
        return super().worker_reports()
