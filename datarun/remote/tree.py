"""One running task as the runner sees it: its process tree, its measurements, its limits.

The task's child runs in its own session (sid == child pid). Every ~50 ms the runner
lists its own descendants once and hands each task the processes of its tree, found by
ancestry, by session, or because the pid was seen in the tree before (an orphan that
came back to the runner through PR_SET_CHILD_SUBREAPER). From that list a task keeps:

- peak memory: the task's own memory, the max over polls of its cgroup's charge or of
  the summed private memory of its processes (accounting.py): pages it shares with the
  runner's imports are not its own;
- live CPU time: user+sys of each live process and of the children it has reaped, plus
  what the runner reaped itself (wait4 rusage of the child and of orphans). The final
  figure is the wait4 sum, which covers every process of the tree once;
- limits: wall time, CPU time of the tree, memory of the tree. Over a limit the whole
  tree is killed (killpg, every pid seen, the cgroup) and the limit is recorded.
"""

import os
import signal
import time
from pathlib import Path

from .common import process_start, tail_text

MB = 1000**2
SKIPPED_NOTE = "\n[... {skipped} bytes of output skipped ...]\n"


class OutputBuffer:
    """The head and the tail of a stream, together at most `cap` bytes."""

    def __init__(self, cap: int):
        self.half = max(1, int(cap) // 2)
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0

    def add(self, chunk: bytes) -> None:
        self.total += len(chunk)
        room = self.half - len(self.head)
        if room > 0:
            self.head += chunk[:room]
            chunk = chunk[room:]
        if chunk:
            self.tail += chunk
            if len(self.tail) > 2 * self.half:  # trim in batches, not on every read
                del self.tail[: len(self.tail) - self.half]

    def text(self) -> str:
        tail = self.tail[-self.half:] if len(self.tail) > self.half else self.tail
        skipped = self.total - len(self.head) - len(tail)
        middle = SKIPPED_NOTE.format(skipped=skipped) if skipped > 0 else ""
        return (bytes(self.head).decode("utf-8", "replace") + middle
                + bytes(tail).decode("utf-8", "replace"))


def _rusage_cpu(usage) -> float:
    return usage.ru_utime + usage.ru_stime


class TaskRun:
    """A forked task: its pid, output, results, samples, limit hits and final figures.

    `group` is the task's cgroup (accounting.py) when the runner could make one; without
    it memory is the private memory of the task's processes ("procfs").
    """

    def __init__(self, key: str, folder: Path, task: dict, pid: int, output_fd: int,
                 result_fd: int = -1, receiver=None, group=None, seat: int | None = None):
        self.key = key
        self.folder = folder
        self.seat = seat  # root runner, sandboxed: which task uid it holds
        self.task = task
        self.pid = pid
        # With the pid in status.json, so `cancel` never kills a process that reused the pid.
        self.pid_start = process_start(pid)
        self._task_start: int | None = None
        self._init_start: int | None = None
        self.output_fd = output_fd
        self.result_fd = result_fd
        self.receiver = receiver
        self.group = group
        self.measured_by = group.method if group is not None else "procfs"
        self.output = OutputBuffer(int(task.get("max_output") or 1024**2))
        self.started_at = time.time()
        self.started = time.perf_counter()
        self.limits = task.get("limits") or {}
        self.seen: set[int] = {pid}
        self.live: set[int] = {pid}
        self.reaped_cpu = 0.0
        self.live_cpu = 0.0
        self.max_cpu = 0.0
        self.peak_memory = 0  # the largest measured figure
        self.memory_now = 0  # the figure the memory limit is checked against
        self._private: dict[int, int] = {}  # pid -> private bytes at the last full reading
        self._rss_then = 0
        self._samples = 0
        self.child_status: int | None = None
        self.init_reaped = False
        self.ended_at: float | None = None  # the host's clock when the task's process ended
        self.wall_time: float | None = None
        self.limit_hit: tuple[str, str] | None = None
        self.cancelled = False
        self.killed_at: float | None = None
        self.exited_at: float | None = None

    # --- what the runner feeds in -------------------------------------------------

    @property
    def task_pid(self) -> int:
        """The task's own process: the child itself, or (sandboxed) PID 1 of its namespace,
        which the child forked, announced and left to the runner."""
        announced = self.receiver.task_pid if self.receiver is not None else None
        return announced or self.pid

    @property
    def init_pid(self) -> int | None:
        return self.receiver.init_pid if self.receiver is not None else None

    @property
    def task_pid_start(self) -> int | None:
        """The task process's start time (for `cancel`'s check that a pid is still it)."""
        if self.task_pid == self.pid:
            return self.pid_start
        if self._task_start is None:
            self._task_start = process_start(self.task_pid)
        return self._task_start

    @property
    def init_start(self) -> int | None:
        if self.init_pid is not None and self._init_start is None:
            self._init_start = process_start(self.init_pid)
        return self._init_start

    def owns(self, pid: int, sid: int | None) -> bool:
        task = self.task_pid
        return sid in (self.pid, task) or pid in self.seen or pid in (task, self.init_pid)

    def reaped(self, pid: int, status: int, usage) -> None:
        """A process of this tree was reaped by the runner (the child, the task, an orphan)."""
        self.reaped_cpu += _rusage_cpu(usage)
        self.live.discard(pid)
        if pid == self.init_pid:
            self.init_reaped = True
        if pid == self.task_pid:
            self._end_namespace()
            self.child_status = status
            self.ended_at = time.time()
            self.exited_at = time.perf_counter()
            self.wall_time = self.exited_at - self.started

    def sample(self, procs: list, psutil) -> None:
        """CPU and memory over the tree's live processes (psutil.Process objects)."""
        rss = 0
        cpu = 0.0
        live = set()
        for proc in procs:
            try:
                with proc.oneshot():
                    if proc.status() == psutil.STATUS_ZOMBIE:
                        continue  # its rusage arrives when it is reaped
                    rss += proc.memory_info().rss
                    times = proc.cpu_times()
                    cpu += times.user + times.system + times.children_user + times.children_system
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            live.add(proc.pid)
        self.seen |= live
        self.live = live
        self.live_cpu = cpu + self.reaped_cpu
        if self.group is not None:
            self.live_cpu = max(self.live_cpu, self.group.cpu())
            self.memory_now = self.group.memory()
            self.peak_memory = max(self.peak_memory, self.memory_now)
        else:
            self._sample_private(live, rss)
        self.max_cpu = max(self.max_cpu, self.live_cpu)

    def _sample_private(self, live: set[int], rss: int) -> None:
        """The sum of the processes' private memory, read in full every PRIVATE_EVERY
        samples or when a process appears; in between, plus any growth of their RSS."""
        from .accounting import PRIVATE_EVERY, private_memory

        self._samples += 1
        if live - set(self._private) or self._samples % PRIVATE_EVERY == 1:
            private = {}
            for pid in live:
                value = private_memory(pid)
                if value is not None:
                    private[pid] = value
            self._private = private
            self._rss_then = rss
            measured = sum(private.values())
            self.peak_memory = max(self.peak_memory, measured)
            self.memory_now = measured
        else:
            self.memory_now = sum(self._private.values()) + max(0, rss - self._rss_then)

    def _end_namespace(self) -> None:
        """The task ended: its init goes, and with it every process left in its namespace."""
        if self.init_pid is not None and not self.init_reaped:
            try:
                os.kill(self.init_pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    # --- limits and killing -------------------------------------------------------

    def check_limits(self) -> tuple[str, str] | None:
        if self.limit_hit or self.child_status is not None:
            return None
        wall = self.limits.get("wall_time")
        cpu = self.limits.get("cpu_time")
        memory = self.limits.get("memory")
        elapsed = time.perf_counter() - self.started
        if memory and self.memory_now > memory:
            self.peak_memory = max(self.peak_memory, self.memory_now)
            return ("memory_limit", f"memory limit {memory / MB:.1f} MB exceeded: "
                    f"peak {self.peak_memory / MB:.1f} MB (the task's own memory, all its processes)")
        if cpu and self.live_cpu > cpu:
            return ("cpu_limit", f"cpu time limit {cpu:.1f} s exceeded: used {self.live_cpu:.1f} s "
                    "(whole process tree)")
        if wall and elapsed > wall:
            return ("timeout", f"wall time limit {wall:.1f} s exceeded: ran {elapsed:.1f} s")
        return None

    def kill(self) -> None:
        """SIGKILL the task's session, every process ever seen in its tree, its cgroup."""
        if self.killed_at is None:
            self.killed_at = time.perf_counter()
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        for pid in [p for p in {*self.live, self.task_pid, self.init_pid} if p is not None]:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if self.group is not None:
            self.group.kill()

    # --- the end ------------------------------------------------------------------

    @property
    def tree_gone(self) -> bool:
        # A sandboxed task's init is reaped last: its rusage holds the orphans' CPU time.
        init_done = self.init_pid is None or self.init_reaped
        return self.child_status is not None and not self.live and init_done

    def cpu_time(self) -> float:
        # The wait4 sum covers every process the task started (its init reaped the
        # orphans); the live samples guard against one that escaped before being reaped.
        figure = max(self.reaped_cpu, self.max_cpu)
        if self.group is not None:
            figure = max(figure, self.group.cpu())
        return figure

    def memory(self) -> int:
        if self.group is not None:
            return max(self.peak_memory, self.group.peak())
        return self.peak_memory

    def failure(self, report: dict | None, phase: str | None,
                predictions_written: bool = True, channel_error: str | None = None
                ) -> tuple[str, str] | None:
        """The error kind and text, or None when the task succeeded."""
        if self.limit_hit:
            return self.limit_hit
        if self.cancelled:
            return ("cancelled", "cancelled by the organiser")
        limit = self.limits.get("memory")
        if self.group is not None and limit and self.group.out_of_memory():
            return ("memory_limit", f"memory limit {limit / MB:.1f} MB exceeded: "
                    f"peak {self.memory() / MB:.1f} MB (the task's own memory; the kernel stopped it)")
        if channel_error:
            return ("bad_predictions", channel_error)
        status = self.child_status
        if report and report.get("error_kind"):
            return (report["error_kind"], report.get("error") or "")
        if status is not None and os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0:
            if report is None:
                return ("harness_error", "the task ended without its report")
            if not predictions_written:
                return ("harness_error", "the task ended without writing its predictions")
            return None
        if status is not None and os.WIFSIGNALED(status):
            name = signal.Signals(os.WTERMSIG(status)).name
            why = f"the task process was killed by {name} during {phase or 'start-up'}"
        else:
            code = os.WEXITSTATUS(status) if status is not None else None
            why = f"the task process exited with code {code} during {phase or 'start-up'}"
        output_tail = tail_text(self.output.text(), 2048)
        text = why + ("\n" + output_tail if output_tail.strip() else "")
        kind = {"import": "import_error", "train": "fit_error", "valid": "predict_error",
                "test": "predict_error"}.get(phase or "", "harness_error")
        return (kind, tail_text(text))


class Spare:
    """A sandbox made ahead of its task (child.run_spare): its first process A, the pipes
    its task will use, the data sets it holds (the runner's cache when it was forked).

    Made while a slot runs or waits, so the two forks and the mounts of a sandbox are off
    the next task's path. `status`: A's exit status if the runner reaped it before the
    spare was taken (then the spare is broken: it is never taken).
    """

    def __init__(self, pid: int, output_fd: int, result_fd: int, control_fd: int,
                 hashes: frozenset, group=None):
        self.pid = pid
        self.output_fd = output_fd
        self.result_fd = result_fd
        self.control_fd = control_fd
        self.hashes = hashes
        self.group = group
        self.status: int | None = None

    def fds(self) -> list[int]:
        return [fd for fd in (self.output_fd, self.result_fd, self.control_fd) if fd >= 0]

    def usable(self, data_hash: str) -> bool:
        # A waits for the task (sandbox.prepare): if it ended already, the spare is broken.
        return data_hash in self.hashes and self.status is None

    def drop(self) -> None:
        """Unused: closing its pipe with no task in it makes A kill the namespace's init,
        and C with it (sandbox.prepare)."""
        for fd in self.fds():
            os.close(fd)
        self.output_fd = self.result_fd = self.control_fd = -1
        if self.group is not None:
            self.group.kill()
            self.group.remove()
