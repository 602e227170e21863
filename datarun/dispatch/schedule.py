"""Where queued tasks go: how many tasks each host holds, which seat and which GPUs each
task takes, and which tasks fit no host at all (and why).

Plain functions over task rows and the host registry, so placement is tested as data
(tests/test_scheduling.py, tests/test_resources.py) without a dispatcher or a host. The
order queued tasks start in is the query `datarun.store.taskqueries.next_queued`.

A task goes only to a host that offers what its problem needs (`[resources]`: tags,
GPUs, memory, threads) and whose memory cap holds the task's memory limit. A GPU task
takes devices no other task of that host holds (recorded in its limits as `devices`,
and given to it as `CUDA_VISIBLE_DEVICES`); CPU tasks take none, so they fill a GPU
host's other seats. A task no host can ever take — for a requirement, for its memory
limit, or because every host that would fit is unusable (it cannot sandbox, its last
check failed) — is `Unfit`: one line naming its tasks and, per host, what it lacks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from datarun.executors.hosts import Host
from datarun.problems.resources import Needs
from datarun.sizes import format_size
from datarun.store import hosts as stored_hosts
from datarun.store.db import Database
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
    devices: dict[str, set[int]] = field(default_factory=dict)  # host -> GPU indices held

    @property
    def count(self) -> int:
        return sum(len(free) for free in self.seats.values())


def free_seats(hosts: Mapping[str, Host], running: Iterable[Task], takers: Iterable[str]) -> FreeSeats:
    """The free seats of the `takers` among `hosts`, given the tasks running anywhere."""
    busy: dict[str | None, set[int | None]] = {}
    memory: dict[str, int] = {}
    devices: dict[str, set[int]] = {}
    for task in running:
        busy.setdefault(task.host, set()).add(task.slot)
        if task.host is not None:
            memory[task.host] = memory.get(task.host, 0) + ((task.limits or {}).get("memory") or 0)
            held = (task.limits or {}).get("devices")
            if held:
                devices.setdefault(task.host, set()).update(held)
    return FreeSeats(
        seats={name: [seat for seat in range(seats(hosts[name])) if seat not in busy.get(name, set())]
               for name in takers},
        memory=memory, devices=devices)


def why_not(host: Host, needs: Needs, limits: Mapping[str, Any]) -> str | None:
    """What `host` lacks for a task with these needs and limits, or None if it fits."""
    missing = [tag for tag in needs.tags if tag not in host.tags]
    if missing:
        return f"no tag {', '.join(missing)}" + (f" (has {', '.join(host.tags)})" if host.tags else "")
    if host.gpus < needs.gpus:
        return f"{host.gpus} GPU{'s' if host.gpus != 1 else ''}, {needs.gpus} needed"
    if needs.threads and host.threads < needs.threads:
        return f"{host.threads} threads per slot, {needs.threads} needed"
    if needs.memory and host.memory is not None and host.memory < needs.memory:
        return f"memory {format_size(host.memory)}, {format_size(needs.memory)} needed"
    limit = limits.get("memory")
    if limit and host.memory is not None and host.memory < limit:
        return f"memory cap {format_size(host.memory)} under the task's limit {format_size(limit)}"
    return None


@dataclass(frozen=True)
class Unfit:
    """Queued tasks of one problem that no host can take, and why, host by host."""

    problem: str
    tasks: tuple[int, ...]
    needs: str  # what they need, in words
    reasons: tuple[tuple[str, str], ...]  # (host, what it lacks or why it takes no task)

    @property
    def line(self) -> str:
        ids = ", ".join(map(str, self.tasks[:8])) + (f" and {len(self.tasks) - 8} more" if len(self.tasks) > 8 else "")
        what = f"task{'s' if len(self.tasks) > 1 else ''} {ids} of {self.problem}"
        if not self.reasons:
            return f"{what} fit no host: hosts.toml has no host"
        hosts = "; ".join(f"{name}: {reason}" for name, reason in self.reasons)
        return f"{what} (needs {self.needs}) fit no host: {hosts}"

    def to_dict(self) -> dict[str, Any]:
        return {"problem": self.problem, "tasks": list(self.tasks), "needs": self.needs,
                "hosts": dict(self.reasons), "reason": self.line}


def unfit(queued: Iterable[Task], hosts: Mapping[str, Host], blocked: Mapping[str, str],
          limits_of: Callable[[Task], dict[str, Any]], needs_of: Callable[[Task], Needs],
          refuse: Refuse = lambda host, task: None) -> list[Unfit]:
    """The queued tasks no host can take, one `Unfit` per problem and kind of task.

    `blocked`: the hosts that take no task whatever it needs, with the reason (cannot
    sandbox, failed its last check). A host merely failing its syncs for now is not
    blocked: its tasks wait for it to come back."""
    groups: dict[tuple[str, Needs, int], list[Task]] = {}
    for task in queued:
        limits = limits_of(task)
        groups.setdefault((task.problem, needs_of(task), limits.get("memory") or 0), []).append(task)
    found = []
    for (problem, needs, memory), members in groups.items():
        ids = [task.id for task in members]
        reasons = []
        for name in sorted(hosts):
            reason = (blocked.get(name) or why_not(hosts[name], needs, {"memory": memory})
                      or refuse(name, members[0]))
            if reason is None:
                break
            reasons.append((name, reason))
        else:
            what = needs.describe()
            if memory:
                what = f"{what}; memory limit {format_size(memory)}" if needs != Needs() else f"memory limit {format_size(memory)}"
            found.append(Unfit(problem, tuple(sorted(ids)), what, tuple(reasons)))
    return sorted(found, key=lambda u: (u.problem, u.tasks))


Refuse = Callable[[str, Task], "str | None"]  # (host, task) -> why that host may not run it


def assign(queued: Iterable[Task], free: FreeSeats, hosts: Mapping[str, Host],
           limits_of: Callable[[Task], dict[str, Any]],
           needs_of: Callable[[Task], Needs] = lambda task: Needs(),
           refuse: Refuse = lambda host, task: None) -> Plan:
    """Spread tasks over the free seats of hosts that offer what they need, most free seats
    first, within each host's memory cap; a GPU task takes free devices of its host (its
    limits' `devices`), a task that finds none waits. `free` is left as it was."""
    left = {name: list(free_list) for name, free_list in free.seats.items()}
    memory = dict(free.memory)
    held = {name: set(indices) for name, indices in free.devices.items()}
    plan: Plan = {}
    for task in queued:
        if not any(left.values()):
            break
        limits = limits_of(task)
        needs = needs_of(task)
        need = limits.get("memory") or 0
        for name in sorted((h for h in left if left[h]), key=lambda h: (-len(left[h]), h)):
            host = hosts[name]
            if why_not(host, needs, limits) is not None or refuse(name, task) is not None:
                continue
            cap = host.memory
            if cap and memory.get(name, 0) + need > cap:
                continue
            devices = [index for index in range(host.gpus) if index not in held.get(name, set())][:needs.gpus]
            if len(devices) < needs.gpus:
                continue
            held.setdefault(name, set()).update(devices)
            memory[name] = memory.get(name, 0) + need
            plan.setdefault(name, []).append((task, left[name].pop(0), {**limits, "devices": devices}))
            break
    return plan


def blocked_hosts(db: Database, hosts: Mapping[str, Host], reasons: Mapping[str, str]) -> dict[str, str]:
    """Hosts that take no task whatever it needs, with why: `reasons` known here (a local
    host that cannot sandbox), else a failed last `host check`."""
    checks = stored_hosts.last_checks(db)
    blocked = {}
    for name in hosts:
        check = checks.get(name)
        if name in reasons:
            blocked[name] = reasons[name].removeprefix(f"host {name} ")
        elif check is not None and not check.ok:
            problems = check.report.get("problems")
            first = str(problems[0]) if isinstance(problems, list) and problems else "see `datarun host check`"
            blocked[name] = f"its last check failed: {first}"
    return blocked
