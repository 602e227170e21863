"""How a task's CPU time and memory are measured: a cgroup of its own, or /proc.

Where the runner may make cgroups (root, with the cgroup v1 memory, cpuacct and pids
controllers mounted, or cgroup v2 with memory and pids enabled), each task gets one, made
under the runner's own group before the fork and joined by the task's first process:

- memory: the group's peak charge (`memory.max_usage_in_bytes`, v2 `memory.peak`). Pages
  the task shares copy-on-write with the runner stay charged to the runner, so this is
  the task's own memory; its tmpfs files (its folder, /tmp) are charged too;
- CPU: `cpuacct.usage` (v2 `cpu.stat` usage_usec) of everything that ever ran in it;
- a process cap (`pids.max`) and a kill of the whole group.

Elsewhere ("procfs") the runner sums, over the task's processes, their private memory
(Private_Clean + Private_Dirty of /proc/PID/smaps_rollup): pages shared with the runner
are not the task's. Reading smaps_rollup costs ~2.7 ms a process for a forked runner, so
it is read every PRIVATE_EVERY samples, and in between the figure is the last private sum
plus what the resident size grew since: new pages are counted at once, never later.
"""

import os
import signal
import time

MEMORY_SLACK = 64 * 1024**2  # the kernel's hard cap sits this far above the limit
PRIVATE_EVERY = 8


def _read(path: str) -> str:
    with open(path) as handle:
        return handle.read()


def _own_groups() -> dict[str, str]:
    """controller -> this process's group path, from /proc/self/cgroup ("" key for v2)."""
    groups = {}
    try:
        for line in _read("/proc/self/cgroup").splitlines():
            _, controllers, path = line.split(":", 2)
            for name in controllers.split(",") if controllers else [""]:
                groups[name] = path
    except (OSError, ValueError):
        pass
    return groups


def _mounts() -> dict[str, str]:
    """controller -> mount point of its cgroup hierarchy ("" for the v2 hierarchy)."""
    found: dict[str, str] = {}
    try:
        for line in _read("/proc/self/mountinfo").splitlines():
            left, _, right = line.partition(" - ")
            fields, extra = left.split(), right.split()
            if len(fields) < 5 or len(extra) < 3:
                continue
            fstype, options = extra[0], extra[2].split(",")
            if fstype == "cgroup":
                for name in ("memory", "cpuacct", "pids"):
                    if name in options:
                        found.setdefault(name, fields[4])
            elif fstype == "cgroup2":
                found.setdefault("", fields[4])
    except OSError:
        pass
    return found


class Cgroups:
    """Makes one group per task; `detect()` says whether this host lets the runner."""

    def __init__(self, method: str, bases: dict[str, str]):
        self.method = method  # "cgroup-v1" or "cgroup-v2"
        self.bases = bases

    @classmethod
    def detect(cls) -> "Cgroups | None":
        # DATARUN_CGROUPS=0 measures with /proc even where a cgroup could be made (the
        # memory bench compares the two methods on one host).
        if os.geteuid() != 0 or os.environ.get("DATARUN_CGROUPS") == "0":
            return None
        own, mounts = _own_groups(), _mounts()
        if all(name in mounts and name in own for name in ("memory", "cpuacct", "pids")):
            bases = {name: os.path.join(mounts[name], own[name].lstrip("/"))
                     for name in ("memory", "cpuacct", "pids")}
            method = "cgroup-v1"
        elif "" in mounts and "" in own:
            base = os.path.join(mounts[""], own[""].lstrip("/"))
            try:
                enabled = _read(os.path.join(base, "cgroup.subtree_control")).split()
            except OSError:
                return None
            if not {"memory", "pids"} <= set(enabled):
                return None
            bases = {"": base}
            method = "cgroup-v2"
        else:
            return None
        probe = cls(method, bases)
        probe.remove_stale()
        try:
            group = probe.make(f"probe-{os.getpid()}", None, None)
        except OSError:
            return None
        group.remove()
        return probe

    def remove_stale(self) -> None:
        """Groups a runner that died left behind (named after its pid): empty ones go."""
        for base in self.bases.values():
            try:
                names = os.listdir(base)
            except OSError:
                continue
            for name in names:
                parts = name.split("-", 2)
                if len(parts) != 3 or parts[0] != "datarun" or not parts[1].isdigit():
                    continue
                try:
                    os.kill(int(parts[1]), 0)
                    continue  # its runner lives
                except ProcessLookupError:
                    pass
                except PermissionError:
                    continue
                try:
                    os.rmdir(os.path.join(base, name))
                except OSError:
                    pass

    def make(self, key: str, memory: int | None, processes: int | None) -> "TaskGroup":
        name = f"datarun-{os.getpid()}-{key}"
        paths = {}
        try:
            for controller, base in self.bases.items():
                path = os.path.join(base, name)
                os.mkdir(path)
                paths[controller] = path
            group = TaskGroup(self.method, paths)
            group.limit(memory, processes)
        except OSError:
            TaskGroup(self.method, paths).remove()
            raise
        return group


class TaskGroup:
    def __init__(self, method: str, paths: dict[str, str]):
        self.method = method
        self.paths = paths

    def _file(self, controller: str, name: str) -> str:
        return os.path.join(self.paths["" if self.method == "cgroup-v2" else controller], name)

    def limit(self, memory: int | None, processes: int | None) -> None:
        if memory:
            name = "memory.max" if self.method == "cgroup-v2" else "memory.limit_in_bytes"
            with open(self._file("memory", name), "w") as handle:
                handle.write(str(int(memory) + MEMORY_SLACK))
        if processes:
            with open(self._file("pids", "pids.max"), "w") as handle:
                handle.write(str(int(processes)))

    def reset_peak(self) -> None:
        """The peak starts again from the current charge (a spare's preparation is not its
        task's); v2 without a resettable memory.peak keeps it."""
        name = "memory.peak" if self.method == "cgroup-v2" else "memory.max_usage_in_bytes"
        try:
            with open(self._file("memory", name), "w") as handle:
                handle.write("0")
        except OSError:
            pass

    def join_files(self) -> list[str]:
        """The cgroup.procs files the task's first process writes "0" to (itself)."""
        return sorted({os.path.join(path, "cgroup.procs") for path in self.paths.values()})

    def memory(self) -> int:
        name = "memory.current" if self.method == "cgroup-v2" else "memory.usage_in_bytes"
        try:
            return int(_read(self._file("memory", name)))
        except (OSError, ValueError):
            return 0

    def peak(self) -> int:
        name = "memory.peak" if self.method == "cgroup-v2" else "memory.max_usage_in_bytes"
        try:
            return int(_read(self._file("memory", name)))
        except (OSError, ValueError):
            return self.memory()

    def cpu(self) -> float:
        try:
            if self.method == "cgroup-v2":
                for line in _read(self._file("", "cpu.stat")).splitlines():
                    if line.startswith("usage_usec "):
                        return int(line.split()[1]) / 1e6
                return 0.0
            return int(_read(self._file("cpuacct", "cpuacct.usage"))) / 1e9
        except (OSError, ValueError):
            return 0.0

    def out_of_memory(self) -> bool:
        """Whether the kernel killed in this group because it reached its hard cap."""
        name = "memory.events" if self.method == "cgroup-v2" else "memory.oom_control"
        try:
            for line in _read(self._file("memory", name)).splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill" and int(value) > 0:
                    return True
        except (OSError, ValueError):
            pass
        return False

    def pids(self) -> list[int]:
        found: set[int] = set()
        for path in self.paths.values():
            try:
                found.update(int(p) for p in _read(os.path.join(path, "cgroup.procs")).split())
            except (OSError, ValueError):
                pass
        return sorted(found)

    def kill(self) -> None:
        if self.method == "cgroup-v2":
            try:
                with open(self._file("", "cgroup.kill"), "w") as handle:
                    handle.write("1")
                return
            except OSError:
                pass
        for pid in self.pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    def remove(self) -> None:
        for path in self.paths.values():
            for _ in range(50):  # a killed process leaves its group a moment later
                try:
                    os.rmdir(path)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.002)


def private_memory(pid: int) -> int | None:
    """Private_Clean + Private_Dirty of a process in bytes; None when it is gone."""
    total = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as handle:
            for line in handle:
                if line.startswith(("Private_Clean:", "Private_Dirty:")):
                    total += int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return total
