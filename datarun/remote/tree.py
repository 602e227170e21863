"""One running task as the runner sees it: its process tree, its measurements, its limits.

The task's child runs in its own session (sid == child pid). Every ~50 ms the runner
lists its own descendants once and hands each task the processes of its tree, found by
ancestry, by session, or because the pid was seen in the tree before (an orphan that
came back to the runner through PR_SET_CHILD_SUBREAPER). From that list a task keeps:

- peak memory: the max over polls of the summed RSS of the tree (shared pages are
  counted in every process that maps them; ru_maxrss would see only the largest one);
- live CPU time: user+sys of each live process and of the children it has reaped, plus
  what the runner reaped itself (wait4 rusage of the child and of orphans). The final
  figure is the wait4 sum, which covers every process of the tree once;
- limits: wall time, CPU time of the tree, memory of the tree. Over a limit the whole
  tree is killed (killpg, then every pid seen) and the limit is recorded.
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
    """A forked task: its pid, output, samples, limit hits and final figures."""

    def __init__(self, key: str, folder: Path, task: dict, pid: int, output_fd: int,
                 work: Path | None = None, seat: int | None = None):
        self.key = key
        self.folder = folder
        self.work = work or folder  # where the task writes: its folder, or its jail when isolated
        self.seat = seat  # isolated tasks: which task user id it holds
        self.task = task
        self.pid = pid
        # With the pid in status.json, so `cancel` never kills a process that reused the pid.
        self.pid_start = process_start(pid)
        self.output_fd = output_fd
        self.output = OutputBuffer(int(task.get("max_output") or 1024**2))
        self.started_at = time.time()
        self.started = time.perf_counter()
        self.limits = task.get("limits") or {}
        self.seen: set[int] = {pid}
        self.live: set[int] = {pid}
        self.reaped_cpu = 0.0
        self.live_cpu = 0.0
        self.max_cpu = 0.0
        self.peak_memory = 0
        self.child_status: int | None = None
        self.child_maxrss = 0
        self.wall_time: float | None = None
        self.limit_hit: tuple[str, str] | None = None
        self.cancelled = False
        self.killed_at: float | None = None
        self.exited_at: float | None = None

    # --- what the runner feeds in -------------------------------------------------

    def owns(self, pid: int, sid: int | None) -> bool:
        return sid == self.pid or pid in self.seen

    def reaped(self, pid: int, status: int, usage) -> None:
        """A process of this tree was reaped by the runner (the child or an orphan)."""
        self.reaped_cpu += _rusage_cpu(usage)
        self.live.discard(pid)
        if pid == self.pid:
            self.child_status = status
            self.child_maxrss = usage.ru_maxrss * 1024
            self.exited_at = time.perf_counter()
            self.wall_time = self.exited_at - self.started

    def sample(self, procs: list, psutil) -> None:
        """Sum RSS and CPU over the tree's live processes (psutil.Process objects)."""
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
        self.peak_memory = max(self.peak_memory, rss)
        self.live_cpu = cpu + self.reaped_cpu
        self.max_cpu = max(self.max_cpu, self.live_cpu)

    # --- limits and killing -------------------------------------------------------

    def check_limits(self) -> tuple[str, str] | None:
        if self.limit_hit or self.child_status is not None:
            return None
        wall = self.limits.get("wall_time")
        cpu = self.limits.get("cpu_time")
        memory = self.limits.get("memory")
        elapsed = time.perf_counter() - self.started
        if memory and self.peak_memory > memory:
            return ("memory_limit", f"memory limit {memory / MB:.1f} MB exceeded: "
                    f"peak {self.peak_memory / MB:.1f} MB (whole process tree)")
        if cpu and self.live_cpu > cpu:
            return ("cpu_limit", f"cpu time limit {cpu:.1f} s exceeded: used {self.live_cpu:.1f} s "
                    "(whole process tree)")
        if wall and elapsed > wall:
            return ("timeout", f"wall time limit {wall:.1f} s exceeded: ran {elapsed:.1f} s")
        return None

    def kill(self) -> None:
        """SIGKILL the task's session and every process ever seen in its tree."""
        if self.killed_at is None:
            self.killed_at = time.perf_counter()
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        for pid in list(self.live):
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    # --- the end ------------------------------------------------------------------

    @property
    def tree_gone(self) -> bool:
        return self.child_status is not None and not self.live

    def cpu_time(self) -> float:
        # The wait4 sum is exact when every process came back to the runner; the live
        # samples guard against a process that escaped the tree before being reaped.
        return max(self.reaped_cpu, self.max_cpu)

    def memory(self) -> int:
        return max(self.peak_memory, self.child_maxrss)

    def failure(self, report: dict | None, phase: str | None,
                predictions_written: bool = True) -> tuple[str, str] | None:
        """The error kind and text, or None when the task succeeded."""
        if self.limit_hit:
            return self.limit_hit
        if self.cancelled:
            return ("cancelled", "cancelled by the organiser")
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
