"""A real single-node Slurm for the tests: munged, slurmctld and slurmd started by hand as
root, everything (config, keys, state, logs, sockets) under one temporary folder, on
127.0.0.1 and free ports; stopped by the PIDs they wrote.

Debian's slurm-wlm 22.05 daemons with `proctrack/linuxproc` (no cgroup left behind).
Every Slurm command needs SLURM_CONF pointing at this folder's slurm.conf: without it,
sbatch looks for a controller through DNS.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

DAEMONS = ("slurmctld", "slurmd", "munged", "mungekey", "sbatch", "squeue")


def missing_reason() -> str | None:
    """Why a single-node Slurm cannot be started here, or None."""
    if os.geteuid() != 0:
        return "a single-node Slurm needs root to run slurmd and munged (CI runs as root)"
    missing = [name for name in DAEMONS if shutil.which(name) is None
               and not Path(f"/usr/sbin/{name}").exists()]
    if missing:
        return f"Slurm is not installed ({', '.join(missing)} missing): run scripts/setup-test-env.sh"
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _node() -> tuple[str, str]:
    """This machine's short name and its CPU layout, as slurmd sees them."""
    name = socket.gethostname().split(".")[0]
    layout = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, check=True).stdout.split("\n")[0]
    fields = dict(part.split("=", 1) for part in layout.split() if "=" in part)
    memory = max(1024, int(fields.get("RealMemory", "2048")) - 512)
    cpu = " ".join(f"{key}={fields[key]}" for key in ("CPUs", "Boards", "SocketsPerBoard", "CoresPerSocket",
                                                       "ThreadsPerCore") if key in fields)
    return name, f"{cpu} RealMemory={memory}"


class SlurmNode:
    def __init__(self, root: Path, partition: str = "debug"):
        self.root = root
        self.partition = partition
        name, layout = _node()
        self.node = name
        for folder in ("munge", "munge-run", "state", "spool", "log", "jobs"):
            (root / folder).mkdir(parents=True, exist_ok=True)
        os.chmod(root / "munge", 0o700)
        self.conf = root / "slurm.conf"
        self.conf.write_text(f"""ClusterName=datarun
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={root}/munge-run/munge.socket.2
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
MpiDefault=none
MailProg=/bin/true
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=512
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
ReturnToService=2
InactiveLimit=0
KillWait=5
MinJobAge=30
NodeName={name} NodeAddr=127.0.0.1 {layout} State=UNKNOWN
PartitionName={partition} Nodes={name} Default=YES MaxTime=INFINITE State=UP
""")
        self.env = dict(os.environ, SLURM_CONF=str(self.conf))
        key = root / "munge" / "munge.key"
        if not key.exists():
            subprocess.run(["mungekey", "--create", f"--keyfile={key}", "--bits=1024"], check=True,
                           capture_output=True)
        subprocess.run(["munged", f"--socket={root}/munge-run/munge.socket.2", f"--key-file={key}",
                        f"--pid-file={root}/munge-run/munged.pid", f"--log-file={root}/munge/munged.log",
                        f"--seed-file={root}/munge/munged.seed"], check=True, env=self.env)
        subprocess.run(["slurmctld"], check=True, env=self.env)
        subprocess.run(["slurmd"], check=True, env=self.env)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            state = subprocess.run(["sinfo", "-h", "-n", name, "-o", "%T"], capture_output=True, text=True,
                                   env=self.env).stdout.strip()
            if state == "idle":
                return
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"the Slurm node did not become idle: {(root / 'log' / 'slurmctld.log').read_text()[-2000:]}")

    def jobs(self) -> list[str]:
        """Names of the jobs in squeue."""
        out = subprocess.run(["squeue", "-h", "-o", "%j"], capture_output=True, text=True, env=self.env).stdout
        return [line.strip() for line in out.splitlines() if line.strip()]

    def job_processes(self) -> list:
        """The processes of this node's jobs (their environment names its slurm.conf): a job
        step's processes are daemonised by slurmstepd, so they are no children of slurmd."""
        import psutil

        found = []
        for process in psutil.process_iter():
            try:
                if process.environ().get("SLURM_CONF") == str(self.conf):
                    found.append(process)
            except (psutil.Error, OSError):
                continue
        return found

    def stop(self) -> None:
        ids = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True, env=self.env).stdout.split()
        if ids:
            subprocess.run(["scancel", "--full", *ids], capture_output=True, env=self.env)
            deadline = time.monotonic() + 20  # slurmd kills the jobs' processes: let it finish
            while self.jobs() and time.monotonic() < deadline:
                time.sleep(0.1)
        for pid_file in (self.root / "slurmd.pid", self.root / "slurmctld.pid", self.root / "munge-run" / "munged.pid"):
            try:
                pid = int(pid_file.read_text().strip())
            except (OSError, ValueError):
                continue
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.05)
            else:
                os.kill(pid, signal.SIGKILL)
        # What a job left behind once the daemons are gone (a worker whose step was not reaped).
        import psutil

        for process in self.job_processes():
            try:
                process.kill()
            except psutil.Error:
                pass
