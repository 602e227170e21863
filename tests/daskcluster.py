"""A real Dask cluster on loopback for the tests: a `dask scheduler` and `dask worker`
processes, each its own OS process, started and stopped by PID.

Workers run without a nanny, so a SIGKILLed worker stays dead, as a lost host does. Every
listener binds 127.0.0.1 (the dashboard too: left alone it opens 0.0.0.0:8787).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent


def _env(tmp: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["DASK_TEMPORARY_DIRECTORY"] = str(tmp / "dask-tmp")
    env["DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES"] = "3"  # datarun must set it to 0 itself
    return env


class DaskCluster:
    def __init__(self, root: Path, workers: int = 2, tls: dict[str, Path] | None = None,
                 memory_limit: str = "0", scheduler_args: tuple[str, ...] = ()):
        self.root = root
        self.tls = tls
        self.scheduler_args = list(scheduler_args)
        self.memory_limit = memory_limit
        self.scheduler: subprocess.Popen | None = None
        self.workers: dict[str, subprocess.Popen] = {}
        self.address = ""
        root.mkdir(parents=True, exist_ok=True)
        self.logs = root / "logs"
        self.logs.mkdir(exist_ok=True)
        try:
            self.start_scheduler()
            for index in range(workers):
                self.start_worker(f"w{index + 1}")
            self.wait_for_workers(workers)
        except BaseException:
            self.stop()  # what started is stopped, even when the cluster never came up
            raise

    def _tls_args(self, role: str) -> list[str]:
        if not self.tls:
            return []
        return ["--tls-ca-file", str(self.tls["ca"]), "--tls-cert", str(self.tls[f"{role}_cert"]),
                "--tls-key", str(self.tls[f"{role}_key"])]

    def start_scheduler(self, port: int = 0) -> None:
        sched_file = self.root / "scheduler.json"
        sched_file.unlink(missing_ok=True)
        command = [str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(port),
                   "--dashboard-address", "127.0.0.1:0", "--scheduler-file", str(sched_file),
                   *self.scheduler_args]
        if self.tls:
            command += ["--protocol", "tls", *self._tls_args("scheduler")]
        with open(self.logs / "scheduler.log", "ab") as log:
            self.scheduler = subprocess.Popen(command, stdout=log, stderr=log, env=_env(self.root))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                self.address = json.loads(sched_file.read_text())["address"]
                return
            except (OSError, ValueError, KeyError):
                pass
            if self.scheduler.poll() is not None:
                raise RuntimeError(f"dask scheduler exited: {(self.logs / 'scheduler.log').read_text()[-2000:]}")
            time.sleep(0.05)
        raise RuntimeError("dask scheduler did not start within 60 s")

    def start_worker(self, name: str, python: Path | None = None) -> subprocess.Popen:
        """A worker `name`; `python`: the interpreter of another environment to start it on."""
        start = [str(BIN / "dask"), "worker"] if python is None else [str(python), "-m", "distributed.cli.dask_worker"]
        command = [*start, self.address, "--nworkers", "1", "--nthreads", "1",
                   "--host", "127.0.0.1", "--dashboard-address", "127.0.0.1:0", "--no-nanny",
                   "--name", name, "--local-directory", str(self.root / name),
                   "--memory-limit", self.memory_limit, *self._tls_args("worker")]
        with open(self.logs / f"{name}.log", "ab") as log:
            process = subprocess.Popen(command, stdout=log, stderr=log, env=_env(self.root))
        self.workers[name] = process
        return process

    def client(self):
        from distributed import Client
        from distributed.security import Security

        security = None
        if self.tls:
            security = Security(tls_ca_file=str(self.tls["ca"]), tls_client_cert=str(self.tls["client_cert"]),
                                tls_client_key=str(self.tls["client_key"]), require_encryption=True)
        return Client(self.address, security=security, timeout=30, set_as_default=False)

    def wait_for_workers(self, count: int) -> None:
        if count < 1:
            return
        with self.client() as client:
            client.wait_for_workers(count, timeout=90)

    def kill_worker(self, name: str) -> None:
        process = self.workers[name]
        process.send_signal(signal.SIGKILL)
        process.wait(10)

    def stop(self) -> None:
        for process in self.workers.values():
            if process.poll() is None:
                process.terminate()
        for process in self.workers.values():
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        if self.scheduler is not None and self.scheduler.poll() is None:
            self.scheduler.terminate()
            try:
                self.scheduler.wait(15)
            except subprocess.TimeoutExpired:
                self.scheduler.kill()
                self.scheduler.wait(5)


def hosts_toml(name: str, address: str, workdir: Path, slots: int = 2, extra: str = "") -> str:
    """A dask host whose workers keep the harness and data under `workdir` (not ~)."""
    return (f'[hosts.{name}]\nexecutor = "dask"\nscheduler = "{address}"\nslots = {slots}\n'
            f'workdir = "{workdir}"\nconnect_timeout = "5s"\n{extra}')
