"""Where queued tasks go: how many tasks each host holds, and which seat each task takes.

Plain functions over task rows and the host registry, so placement is tested as data
(tests/test_scheduling.py) without a dispatcher or a host. The order queued tasks start
in is the query `datarun.store.tasks.next_queued`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from datarun.executors.hosts import Host
from datarun.store.tasks import Task

Plan = dict[str, list[tuple[Task, int, dict[str, Any]]]]  # host -> [(task, seat, limits)]


def seats(host: Host) -> int:
    """Tasks a host may hold: its slots, and as many again waiting in its inbox, so its
    runner starts the next task the moment a slot frees rather than a round trip later.
    (One waiting task per host measured no better on bench/makespan and worse on
    bench/overhead.) A host with a memory cap holds only what it runs: the cap counts
    every task held."""
    return host.slots if host.memory else 2 * host.slots


@dataclass
class FreeSeats:
    """The seats hosts have free, and the memory their held tasks take from their caps."""

    seats: dict[str, list[int]] = field(default_factory=dict)  # host -> free seat numbers
    memory: dict[str, int] = field(default_factory=dict)  # host -> bytes held (limits' memory)

    @property
    def count(self) -> int:
        return sum(len(free) for free in self.seats.values())


def free_seats(hosts: Mapping[str, Host], running: Iterable[Task], takers: Iterable[str]) -> FreeSeats:
    """The free seats of the `takers` among `hosts`, given the tasks running anywhere."""
    busy: dict[str | None, set[int | None]] = {}
    memory: dict[str, int] = {}
    for task in running:
        busy.setdefault(task.host, set()).add(task.slot)
        if task.host is not None:
            memory[task.host] = memory.get(task.host, 0) + ((task.limits or {}).get("memory") or 0)
    return FreeSeats(
        seats={name: [seat for seat in range(seats(hosts[name])) if seat not in busy.get(name, set())]
               for name in takers},
        memory=memory)


def assign(queued: Iterable[Task], free: FreeSeats, hosts: Mapping[str, Host],
           limits_of: Callable[[Task], dict[str, Any]]) -> Plan:
    """Spread tasks over hosts' free seats, most free seats first, within each host's memory
    cap. `free` is left as it was."""
    left = {name: list(free_list) for name, free_list in free.seats.items()}
    memory = dict(free.memory)
    plan: Plan = {}
    for task in queued:
        limits = limits_of(task)
        need = limits.get("memory") or 0
        for name in sorted((h for h in left if left[h]), key=lambda h: (-len(left[h]), h)):
            cap = hosts[name].memory
            if cap and memory.get(name, 0) + need > cap:
                continue
            memory[name] = memory.get(name, 0) + need
            plan.setdefault(name, []).append((task, left[name].pop(0), limits))
            break
    return plan
