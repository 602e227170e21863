"""The executor interface: the seam between the dispatcher and a host.

The dispatcher builds task bundles as folders (see docs/PROTOCOL.md), hands them to an
executor, polls, and fetches result folders back. It never knows whether the host is
this machine or a server over SSH. An executor acts for one workspace: every path it
uses on the host is the workspace's own folder there (`datarun.remote.common.Layout`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from datarun.executors.hosts import Host

NVIDIA_QUERY = ["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"]


@dataclass
class TaskPoll:
    state: str  # queued | running | finished | missing | lost
    heartbeat: float | None = None
    reason: str | None = None  # lost: why (a Dask worker or scheduler died under the task)


@dataclass
class PollReport:
    runner_alive: bool
    now: float  # the host's clock
    runner_heartbeat: float | None = None
    tasks: dict[str, TaskPoll] = field(default_factory=dict)


@dataclass
class SyncResult:
    """What one `sync` with a host brought back."""

    poll: PollReport
    fetched: list[str]  # keys whose result folders are now in dest/<key>/
    # Bundles the host would not take, with its reason: their folder was there already.
    refused: dict[str, str] = field(default_factory=dict)
    # Tasks the host can run at once, when it says so itself (a Dask host without `slots`
    # in hosts.toml: its workers' threads in all).
    slots: int | None = None


def poll_report(report: dict[str, Any]) -> PollReport:
    """The harness's `poll` JSON as a PollReport."""
    runner = report.get("runner") or {}
    tasks = {
        str(key): TaskPoll(state=str(value.get("state", "missing")), heartbeat=value.get("heartbeat"))
        for key, value in (report.get("tasks") or {}).items()
        if isinstance(value, dict)
    }
    return PollReport(
        runner_alive=bool(runner.get("alive")),
        now=float(report.get("now") or 0.0),
        runner_heartbeat=runner.get("heartbeat"),
        tasks=tasks,
    )


class Executor(Protocol):
    """What the dispatcher, the operator controls and `host check` may ask of a host.

    Every method raises datarun's own errors (`HostError` for the host's faults), never
    the harness's or the transport's: each executor wraps them at this boundary.
    """

    host: Host
    # Whether the last `sync` got as far as sending its bundles: after a failed sync,
    # bundles that may have arrived are left for the next answer to confirm.
    bundles_sent: bool

    def connect(self) -> str | None:
        """Reach the host (connect, authenticate, check its key); the host key's type and
        fingerprint ("ssh-ed25519 SHA256:..."), or None for a host reached without SSH."""

    def prepare(self, data: dict[str, Path]) -> None:
        """Make sure the harness and these data sets ({data hash: local folder}) are on the host."""

    def launch(self, bundles: list[Path]) -> dict[str, str]:
        """Ship task bundles (folders named by task key) and make sure the runner runs; return
        the bundles the host refused ({key: reason}: their folder was there already)."""

    def poll(self, keys: list[str]) -> PollReport: ...

    def sync(self, bundles: list[Path], cleanup: list[str], poll: list[str], dest: Path,
             wait: float = 0.0) -> SyncResult:
        """One cycle in one round trip: remove `cleanup` task folders, ship and start `bundles`,
        report the state of `poll` tasks, and fetch the finished ones' results into dest/<key>/.
        With `wait`, the host answers as soon as a polled task finishes, or after `wait` s."""

    def fetch(self, keys: list[str], dest: Path) -> list[str]:
        """Copy finished tasks' result files into dest/<key>/; return the keys fetched."""

    def cleanup(self, keys: list[str]) -> None: ...

    def cancel(self, keys: list[str]) -> None: ...

    def log(self, key: str) -> str: ...

    def info(self) -> dict[str, Any]:
        """The harness `info` report of the host."""

    def setup_environment(self, requirements: list[str]) -> dict[str, Any]:
        """Make (or reuse) a virtual environment with these requirements on the host:
        {"python", "versions", ...} (`datarun host setup`)."""
        ...

    def memory_floor(self) -> dict[str, Any] | None:
        """Run an empty task there (the harness `floor`): {"floor": its peak memory in bytes,
        "measured_by", "isolation"}, or None where no empty task can be run on its own."""

    def usage(self) -> dict[str, Any]:
        """The harness `usage` report: how the host's workdir is shared among workspaces."""

    def gpu_names(self) -> list[str]:
        """The names of the host's GPUs, as `nvidia-smi` lists them (none without it)."""

    def clean(self, keep: list[str], force: bool = False) -> dict[str, Any]:
        """The harness `clean`: remove this workspace's task folders on the host but `keep`."""

    def sensitive(self, request: dict[str, Any]) -> dict[str, Any]:
        """The harness `sensitive` request: a sensitive problem's check, bagged scores or blends,
        computed on the host that holds its data (`datarun.remote.sensitive.request`)."""

    def close(self) -> None: ...


def gpu_lines(output: str) -> list[str]:
    """The GPU names in the output of `NVIDIA_QUERY`."""
    return [line.strip() for line in output.splitlines() if line.strip()]
