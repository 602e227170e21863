"""What the dispatcher knows of one host between its syncs, in one place.

Each field is learnt from a sync's answer (or its failure) and read when the next job for
that host is built: which task folders to remove there, which given-up attempts to
cancel, which launches are unconfirmed, whether the host is failing or its runner has
stalled. The database holds what must survive the dispatcher (task rows, and the
leftovers file); this holds what one dispatcher run learns as it goes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from datarun.dispatch.lanes import Lane
from datarun.executors.base import Executor
from datarun.executors.hosts import Host


@dataclass
class HostState:
    host: Host
    lane: Lane
    executor: Executor | None = None  # opened on the first job for the host
    cleanup: set[str] = field(default_factory=set)  # finished task folders to remove there
    to_cancel: set[str] = field(default_factory=set)  # given-up attempts still running there
    # Launched by a sync that failed: on the host or not, its next answer tells.
    unconfirmed: set[str] = field(default_factory=set)
    failing_since: float | None = None  # the first failed sync of the current run of failures
    last_error: str | None = None
    stalled: bool = False  # its runner holds its lock but has stopped beating
    unusable: bool = False  # its last `host check` found it unfit, or it cannot sandbox here
    unusable_reason: str | None = None  # why, when it is not its last check (executors.unfit_reason)
    # Its disk filled up (a sync or a task said so): no new task in this run, said at once.
    disk_full: str | None = None

    @property
    def name(self) -> str:
        return self.host.name

    @property
    def grace(self) -> float:
        """How long the host, its runner or a task may go unheard-of before its tasks go to others."""
        return 2 * self.host.command_timeout + 5

    def takes_tasks(self) -> bool:
        """A host whose last sync failed gets no new task until a sync succeeds again: its
        tasks would wait on it (or be claimed and handed back) while others are free."""
        return not (self.unusable or self.lane.failures or self.stalled or self.disk_full)

    def wants_probe(self) -> bool:
        """A failing or stalled host is synced again after its back-off, to see it well."""
        return bool(self.lane.failures or self.stalled) and not self.unusable

    def silent_for(self, now: float) -> float | None:
        """How long the host has been silent, if past its grace: its job hangs, or its syncs fail."""
        if self.lane.busy and self.lane.started_at is not None and now - self.lane.started_at > self.grace:
            return now - self.lane.started_at
        if self.failing_since is not None and now - self.failing_since > self.grace:
            return now - self.failing_since
        return None
