"""The least memory limit a task may have: what an empty task measures on each host.

`host check` runs an empty task on every host it checks and records its peak memory
(`datarun.store.hosts.record_floor`). A memory limit below that figure kills every task
there, even one that does nothing, so `problem add` and `train --memory` refuse it, naming
the host, what it measured and a limit that works. A host never measured is held to the
default floor (`datarun.sizes.MIN_TASK_MEMORY`), until a check measures it. The limit is
compared with the largest floor of hosts.toml's hosts (a problem's tasks may go to any),
or of a sensitive problem's own hosts.
"""

from __future__ import annotations

import math
import time
from collections.abc import Collection
from dataclasses import dataclass

from datarun.errors import UsageError
from datarun.executors.hosts import load_hosts
from datarun.sizes import MIN_TASK_MEMORY, format_cap, format_size
from datarun.store import hosts as stored_hosts
from datarun.store.db import Database
from datarun.store.workspace import Workspace

MB = 1000**2


@dataclass(frozen=True)
class HostFloor:
    host: str
    floor: int
    measured_at: float | None  # None: never measured, the default floor
    measured_by: str | None


def host_floors(workspace: Workspace, db: Database, only: Collection[str] | None = None) -> list[HostFloor]:
    """The floor of each host of hosts.toml (of `only` those): measured, or the default one."""
    measured = stored_hosts.floors(db)
    floors = []
    for name in load_hosts(workspace.hosts_file):
        if only is not None and name not in only:
            continue
        floor = measured.get(name)
        floors.append(HostFloor(name, floor.floor, floor.measured_at, floor.measured_by) if floor
                      else HostFloor(name, MIN_TASK_MEMORY, None, None))
    return floors


def working_limit(floor: int) -> int:
    """A limit an empty task keeps clear of: half as much again, in whole megabytes."""
    return max(MB, math.ceil(floor * 1.5 / MB) * MB)


def check_memory_limit(workspace: Workspace, db: Database, limit: int, what: str = "memory",
                       hosts: Collection[str] | None = None) -> int:
    """`limit` if no host's floor is above it (of `hosts` only: a sensitive problem's, bound
    to its owner's hosts); else UsageError naming the highest one."""
    floors = host_floors(workspace, db, hosts)
    if not floors:
        if limit >= MIN_TASK_MEMORY:
            return limit
        raise UsageError(f"{what}: {format_size(limit)} is below the {format_cap(MIN_TASK_MEMORY)} assumed "
                         "for a host never measured, and hosts.toml has no host to measure; give at "
                         f"least {format_cap(MIN_TASK_MEMORY)}")
    worst = max(floors, key=lambda f: f.floor)
    if limit >= worst.floor:
        return limit
    if worst.measured_at is None:
        raise UsageError(
            f"{what}: {format_size(limit)} is below the {format_cap(worst.floor)} assumed for host "
            f"{worst.host}, whose empty task was never measured (`datarun host check {worst.host}` "
            f"measures it); give at least {format_cap(worst.floor)}")
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(worst.measured_at))
    raise UsageError(
        f"{what}: {format_size(limit)} is below what an empty task measures on host {worst.host}: "
        f"{format_size(worst.floor)} ({worst.measured_by}, {when}); give at least "
        f"{format_cap(working_limit(worst.floor))}")
