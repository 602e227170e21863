"""A sync job: one round trip with a host, and what its answer will be read against.

The dispatcher builds a job on its own thread (claims, bundles, what to poll, clean and
cancel), a host's lane runs it on the lane's thread (`run`: the only part that talks to
the host), and the collector reads the answer against it back on the dispatcher's thread.
The job is plain data besides `run`, so nothing of the database crosses threads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from datarun.errors import DatarunError
from datarun.executors.base import Executor, SyncResult
from datarun.store.tasks import Task


@dataclass
class SyncJob:
    host: str
    scratch: Path  # this job's own folder in the workspace's scratch: bundles, results
    claimed: list[Task] = field(default_factory=list)  # launched by this sync (running, claimed)
    polled: dict[str, Task] = field(default_factory=dict)  # key -> the attempt asked about
    cleanup: set[str] = field(default_factory=set)  # finished task folders to remove there
    leftovers: list[str] = field(default_factory=list)  # attempts given up on, asked about too
    cancel: list[str] = field(default_factory=list)  # of those, the ones still running there
    bundles: list[Path] = field(default_factory=list)
    data: dict[str, Path] = field(default_factory=dict)  # data sets the bundles need there
    wait: float = 0.0  # with nothing to ship: how long the host may wait for a task to end
    # Set on the lane's thread once the sync itself is under way: from then on, a failure
    # may have left the bundles on the host.
    in_sync: bool = False

    @property
    def results(self) -> Path:
        return self.scratch / "results"

    def run(self, executor: Executor) -> SyncResult:
        """Talk to the host (on the lane's thread): data first, then cancels, then the sync."""
        if self.data:
            executor.prepare(self.data)
        if self.cancel:
            # Attempts given up on that still run there: free their slots first. A cancel
            # that fails is asked again after the next answer; the sync still runs.
            try:
                executor.cancel(self.cancel)
            except DatarunError:
                pass
        self.in_sync = True
        return executor.sync(self.bundles, sorted(self.cleanup), [*self.polled, *self.leftovers],
                             self.results, wait=self.wait)
