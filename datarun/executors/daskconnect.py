"""Reaching a Dask host: its scheduler's client (or a batch queue's cluster), checked.

The start-up side of the Dask and batch-queue executors (dask.py has the tasks): the
client of a `dask` host's scheduler with its TLS files checked first; the versions on
both sides; Dask's own re-runs after a worker death turned off on the scheduler
(`allowed-failures = 0`: datarun counts host losses itself); each worker asked whether
it has what every task needs. Each of these says what is wrong in one line (a HostError)
and leaves the host without tasks. Also the harness as workers receive it, what `host
check` and `status` ask of the workers, and what a batch queue's `squeue` shows.
"""

from __future__ import annotations

import io
import re
import shutil
import ssl
import subprocess
import tarfile
import threading
import time
from functools import cache
from pathlib import Path
from typing import Any

from datarun.errors import HostError
from datarun.executors.hosts import Host
from datarun.remote.common import Layout

MAX_RESULT_FILE = 4 * 1024**3
# What every task imports on a worker ({module: the package to install}).
WORKER_PACKAGES = {"numpy": "numpy", "pandas": "pandas", "sklearn": "scikit-learn", "psutil": "psutil"}
THREADS_EVERY = 10.0  # seconds between asks of the workers' threads (hosts without `slots`)
CLUSTER_EXECUTORS = ("dask", "slurm", "pbs", "sge", "lsf")
JOBQUEUE_CLASSES = {"slurm": "SLURMCluster", "pbs": "PBSCluster", "sge": "SGECluster", "lsf": "LSFCluster"}
SUBMIT_COMMANDS = {"slurm": "sbatch", "pbs": "qsub", "sge": "qsub", "lsf": "bsub"}


def import_distributed():
    try:
        import distributed
    except ImportError:
        raise HostError("Dask hosts need the `distributed` package on the organiser's machine: "
                        "pip install 'datarun[cluster]'") from None
    return distributed


@cache
def harness_archive() -> tuple[list[str], bytes]:
    """The harness as a tar of `datarun_remote/...`, and where a worker keeps it: its folder in
    the workdir (by its tree hash, as on SSH hosts) and the file that marks it whole."""
    from datarun.executors.ssh import HARNESS_PACKAGE, staged_harness

    digest, stage = staged_harness()
    place = [Layout("/").harness_copy(digest).relative_to("/").as_posix(), Layout.COMPLETE]
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.add(stage, arcname=HARNESS_PACKAGE)
    return place, buffer.getvalue()


def folder_archive(folder: Path) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for path in sorted(folder.rglob("*")):
            if path.is_file() and not path.is_symlink():
                tar.add(path, arcname=path.relative_to(folder).as_posix())
    return buffer.getvalue()


def bundle_files(folder: Path) -> dict[str, bytes]:
    return {path.relative_to(folder).as_posix(): path.read_bytes()
            for path in sorted(folder.rglob("*")) if path.is_file() and not path.is_symlink()}


def _ssl_reason(error: ssl.SSLError) -> str:
    """OpenSSL's reason, without the place in CPython's source it was raised at."""
    text = " ".join(str(error.args[-1] if error.args else error).split())
    return re.sub(r"\s*\(_ssl\.c:\d+\)$", "", text)


def one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


@cache
def worker_code():
    """daskboot, sent to the workers by value: they need not have datarun installed."""
    import cloudpickle  # type: ignore[import-untyped]

    from datarun.executors import daskboot

    cloudpickle.register_pickle_by_value(daskboot)
    return daskboot


class DaskConnection:
    """A Dask host's client: reaching its scheduler (or starting a batch queue's), checking
    it and its workers, and letting go of it. `DaskExecutor` adds the tasks."""

    def __init__(self, workspace, host: Host):
        self.host = host
        self.space = workspace.id if workspace is not None else "none"
        self.bundles_sent = False
        self.client: Any = None
        self.cluster: Any = None
        self.futures: dict[str, Any] = {}  # task key -> its future
        self.nonces: dict[str, str | None] = {}
        self.cancelled: set[str] = set()
        self.data_futures: dict[str, Any] = {}
        self.harness_future: Any = None
        # Set (on Dask's callback thread) whenever one of our futures ends: a sync with
        # nothing to ship sleeps on it instead of asking the scheduler again and again.
        self.done = threading.Event()
        self.unpublish_later: list[str] = []  # names of lost tasks, removed with the next round
        self.publish_later: dict[str, Any] = {}  # names whose publication failed, tried again
        # Rounds' publishing and unpublishing, not waited for: (its future, what it published),
        # read by a later round, or by `close`.
        self.names_in_flight: list[tuple[Any, dict[str, Any]]] = []
        self.threads: int | None = None  # the workers' threads in all, as last asked
        self.threads_asked = 0.0
        self.worker_threads: dict[str, int] = {}  # worker address -> its threads, as last asked
        self.placed: dict[str, str] = {}  # task key -> the worker it was sent to
        shared = host.data or ""
        self.shared = shared.removeprefix("shared:") if shared.startswith("shared:") else None

    # --- reaching the cluster -------------------------------------------------------

    @property
    def address(self) -> str:
        return self.host.scheduler or "(no scheduler)"

    def security(self):
        host = self.host
        if not (host.tls_ca or host.tls_cert or host.tls_key):
            return None
        from distributed.security import Security

        missing = [name for name in ("tls_ca", "tls_cert", "tls_key") if not getattr(host, name)]
        if missing:
            raise HostError(f"host {host.name}: TLS needs tls_ca, tls_cert and tls_key in hosts.toml "
                            f"(missing: {', '.join(missing)})")
        paths = {name: Path(getattr(host, name)).expanduser() for name in ("tls_ca", "tls_cert", "tls_key")}
        for name, path in paths.items():
            if not path.is_file():
                raise HostError(f"host {host.name}: {name} {path} is not a file")
            try:
                path.open("rb").close()
            except OSError as error:
                raise HostError(f"host {host.name}: {name} {path} cannot be read: {error.strerror}") from None
        # Said here, in one line, rather than as a failed handshake with the scheduler.
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        try:
            context.load_verify_locations(cafile=str(paths["tls_ca"]))
        except ssl.SSLError as error:
            raise HostError(f"host {host.name}: tls_ca {paths['tls_ca']} is not a PEM CA certificate: "
                            f"{_ssl_reason(error)}") from None
        try:
            context.load_cert_chain(str(paths["tls_cert"]), str(paths["tls_key"]))
        except ssl.SSLError as error:
            raise HostError(f"host {host.name}: tls_cert {paths['tls_cert']} and tls_key {paths['tls_key']} "
                            f"are not a PEM certificate and its private key: {_ssl_reason(error)}") from None
        return Security(tls_ca_file=str(Path(host.tls_ca).expanduser()),
                        tls_client_cert=str(Path(host.tls_cert).expanduser()),
                        tls_client_key=str(Path(host.tls_key).expanduser()), require_encryption=True)

    def connect(self) -> str | None:
        self._client()
        return None

    def _start_cluster(self):
        """The client of this host's scheduler (a `dask` host)."""
        distributed = import_distributed()
        host = self.host
        if not host.scheduler:
            raise HostError(f"host {host.name}: a dask host needs scheduler = \"tcp://HOST:PORT\" in hosts.toml")
        if host.scheduler.startswith("tls://") and not host.tls_cert:
            raise HostError(f"host {host.name}: scheduler {host.scheduler} speaks TLS: give tls_ca, "
                            "tls_cert and tls_key in hosts.toml")
        try:
            return distributed.Client(host.scheduler, security=self.security(),
                                      timeout=host.connect_timeout, set_as_default=False)
        except HostError:
            raise
        except Exception as error:  # OSError, TimeoutError, CommClosedError, TypeError (TLS) ...
            raise HostError(f"host {host.name}: cannot reach the Dask scheduler at {host.scheduler}: "
                            f"{one_line(error)}") from None

    def _client(self):
        if self.client is not None and self.client.status == "running":
            return self.client
        if self.client is not None:
            # The scheduler went away: every future it held is lost (reported by the next poll).
            self._drop_client()
        self.client = self._start_cluster()
        self._check_versions()
        try:
            self.client.run_on_scheduler(worker_code().set_allowed_failures, 0,
                                         callback_timeout=self.host.command_timeout)
        except Exception as error:
            self._drop_client()
            raise HostError(f"host {self.host.name}: the Dask scheduler at {self.address} refused a "
                            f"setting datarun needs (allowed-failures = 0): {one_line(error)}") from None
        self._check_workers()
        try:
            self.note_workers(self.client.nthreads())
        except Exception:
            pass  # tasks then go where the scheduler puts them, until the next ask
        return self.client

    def on_workers(self, function: Any, *args: Any, client: Any = None) -> dict[str, Any]:
        """`function(*args)` on every worker ({address: answer}), within the host's command
        timeout: a worker that is stopped or hung answers nothing, and Dask would wait for it
        for ever (raises TimeoutError)."""
        client = client if client is not None else self.client
        try:
            return client.run(function, *args, callback_timeout=self.host.command_timeout)
        except TimeoutError:
            raise TimeoutError(f"not every worker answered within {self.host.command_timeout:g} s "
                               "(command_timeout): a worker stopped or hung?") from None

    def note_workers(self, threads: Any) -> None:
        """The workers' threads as the scheduler gave them ({address: threads})."""
        if not isinstance(threads, dict):
            return
        self.threads_asked = time.monotonic()
        self.worker_threads = {address: n for address, n in threads.items()
                               if isinstance(address, str) and isinstance(n, int) and n > 0}
        self.threads = sum(self.worker_threads.values()) or None

    def _check_workers(self) -> None:
        """Each worker there now has what every task needs, or the host takes no task: one
        line naming the worker and what to install or fix. (Workers that join later, a batch
        queue's, are the same job script's: `host check` asks them.)"""
        try:
            found = self.on_workers(worker_code().preflight, WORKER_PACKAGES, self.shared)
        except Exception as error:
            self._drop_client()
            raise HostError(f"host {self.host.name}: could not ask the Dask workers of {self.address} "
                            f"what they have: {one_line(error)}") from None
        for address, problems in sorted(found.items()):
            if problems:
                self._drop_client()
                raise HostError(f"host {self.host.name}: the Dask worker {address}: {'; '.join(problems)}")

    def _check_versions(self) -> None:
        distributed = import_distributed()
        try:
            # The scheduler's own versions: Client.get_versions also asks every worker, and
            # waits for ever on one that is stopped.
            versions = self.client.sync(self.client.scheduler.versions, packages=[],
                                        callback_timeout=self.host.command_timeout)
            theirs = (versions or {}).get("packages", {}).get("distributed")
        except Exception as error:
            self._drop_client()
            raise HostError(f"host {self.host.name}: the Dask scheduler at {self.address} did not say "
                            f"its version: {one_line(error)}") from None
        if theirs != distributed.__version__:
            self._drop_client()
            raise HostError(f"host {self.host.name}: the Dask scheduler at {self.address} runs "
                            f"distributed {theirs}, this machine {distributed.__version__}: install the "
                            "same version on both")

    def _drop_client(self) -> None:
        client, self.client = self.client, None
        lost = {key: future for key, future in self.futures.items()}
        self.harness_future = None
        self.data_futures = {}
        self.publish_later = {}  # futures of that scheduler: nothing to publish on the next
        self.names_in_flight = []
        self.worker_threads = {}
        if client is not None:
            try:
                client.close(timeout=2)
            except Exception:
                pass
        # The futures of a lost client are kept so the next poll reports their tasks lost.
        self.futures = lost

    def worker_reports(self) -> dict[str, Any]:
        """`info` from every worker ({address: report}), and the scheduler's view of them."""
        client = self._client()
        digest, blob = harness_archive()
        return self.on_workers(worker_code().call, blob, digest, self.host.workdir, "info", client=client)

    def info(self) -> dict[str, Any]:
        reports = self.worker_reports()
        broken = {address: report for address, report in reports.items() if "error" in report}
        if not reports:
            raise HostError(f"host {self.host.name}: the Dask scheduler at {self.address} has no workers")
        usable = [report for report in reports.values() if "error" not in report]
        first = dict(usable[0]) if usable else {}
        first["workers"] = {address: broken[address] if address in broken else _worker_summary(report)
                            for address, report in sorted(reports.items())}
        first["cpus"] = sum(report.get("usable_cpus") or 0 for report in reports.values())
        first["memory"] = sum(report.get("memory") or 0 for report in reports.values())
        return first

    def status(self) -> dict[str, Any]:
        """The workers and what the scheduler holds, for `datarun status`."""
        client = self._client()
        info = client.scheduler_info(n_workers=-1)
        workers = info.get("workers") or {}
        processing = client.processing()
        return {
            "scheduler": info.get("address"),
            "workers": [{"address": address, "name": str(worker.get("name")),
                         "threads": worker.get("nthreads"), "memory_limit": worker.get("memory_limit"),
                         "tasks": len(processing.get(address, ()))}
                        for address, worker in sorted(workers.items())],
            "tasks_on_scheduler": sum(len(v) for v in processing.values()),
        }

    def _settle_names(self, timeout: float | None = None) -> None:
        """How earlier rounds' publishing went (waiting up to `timeout` for each, None: not at
        all): what failed is published again with the next round."""
        still = []
        for job, published in self.names_in_flight:
            if timeout is None and not job.done():
                still.append((job, published))  # on its way: looked at again next time
                continue
            try:
                outcomes = job.result(timeout=timeout)
            except Exception as error:
                outcomes = [error]
            if published and isinstance(outcomes[0], BaseException):
                self.publish_later.update(published)
        self.names_in_flight = still

    def close(self) -> None:
        try:
            # A dispatcher that exits leaves its tasks running: their names must be on the
            # scheduler before this client goes (the next dispatcher finds them by those).
            self._settle_names(timeout=5.0)
            if self.publish_later and self.client is not None:
                self.client.publish_dataset(**self.publish_later, override=True)
        except Exception:
            pass
        client, self.client = self.client, None
        if client is not None:
            try:
                client.close(timeout=5)
            except Exception:
                pass
        cluster, self.cluster = self.cluster, None
        if cluster is not None:
            try:
                cluster.close(timeout=10)
            except Exception:
                pass


def _worker_summary(report: dict[str, Any]) -> dict[str, Any]:
    return {key: report.get(key) for key in ("hostname", "python", "usable_cpus", "memory", "gpus",
                                              "numpy", "sklearn", "harness", "missing", "worker_pid")} | {
        "sandbox": (report.get("sandbox") or {}).get("ok")}


def cluster_status(workspace, host: Host) -> dict[str, Any]:
    """What `datarun status` shows of a Dask or batch-queue host: its workers (or worker jobs)
    and the tasks they hold. Asked live; a host that does not answer gives {"error": ...}."""
    if host.executor in JOBQUEUE_CLASSES:
        return queue_jobs(host)
    executor = DaskConnection(workspace, host)
    try:
        return executor.status()
    except HostError as error:
        return {"error": str(error)}
    finally:
        executor.close()


def queue_jobs(host: Host) -> dict[str, Any]:
    """The worker jobs in the queue (Slurm's squeue; the scheduler lives in the dispatcher)."""
    if host.executor != "slurm" or shutil.which("squeue") is None:
        return {"jobs": None}
    try:
        done = subprocess.run(["squeue", "-h", "-n", "datarun-worker", "-o", "%i %T %M"],
                              capture_output=True, text=True, timeout=host.connect_timeout + 5)
    except subprocess.TimeoutExpired:
        return {"error": f"host {host.name}: squeue did not answer within {host.connect_timeout + 5:.0f}s: "
                         "check that slurmctld runs and that SLURM_CONF names its slurm.conf"}
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        return {"error": f"host {host.name}: squeue failed: {lines[-1].strip() if lines else done.returncode}: "
                         "check that slurmctld runs and that SLURM_CONF names its slurm.conf"}
    jobs = []
    for line in done.stdout.splitlines():
        parts = line.split()
        if len(parts) == 3:
            jobs.append({"job": parts[0], "state": parts[1], "time": parts[2]})
    return {"jobs": jobs}
