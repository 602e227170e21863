"""The executor interface: the seam between the dispatcher and a host.

The dispatcher builds task bundles as folders (see docs/PROTOCOL.md), hands them to an
executor, polls, and fetches result folders back. It never knows whether the host is
this machine or a server over SSH. An executor acts for one workspace: every path it
uses on the host is the workspace's own folder there (`datarun.remote.common.Layout`).
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol


@dataclass
class TaskPoll:
    state: str  # queued | running | finished | missing
    heartbeat: float | None = None


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


def poll_report(report: dict) -> PollReport:
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
    host: object  # datarun.executors.hosts.Host

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

    def info(self) -> dict:
        """The harness `info` report of the host."""

    def usage(self) -> dict:
        """The harness `usage` report: how the host's workdir is shared among workspaces."""

    def clean(self, keep: list[str], force: bool = False) -> dict:
        """The harness `clean`: remove this workspace's task folders on the host but `keep`."""

    def close(self) -> None: ...
