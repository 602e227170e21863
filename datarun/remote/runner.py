"""The runner: one long-lived process per WORKDIR that runs queued tasks under limits.

It holds WORKDIR/runner.lock for its whole life (one runner per folder), imports the heavy
libraries once, caches data sets per hash, and then loops on one thread: pick up
`inbox/<key>` markers, fork a child per task (at most `slots` at a time), read the
children's output, sample their process trees every ~50 ms, enforce limits, reap, write
heartbeats and, per task, result.json. It exits after `idle` seconds with nothing to do.

Forking (not spawning) is the point: a task starts with numpy, scikit-learn and its data
already in memory. The runner is a child subreaper (see startup.py): processes orphaned
inside a task's tree come back to it, so their CPU time is still counted and they can
still be killed. How a process becomes a runner (lock, imports, warm-up) is startup.py.

A sandboxed task does not fork: it is handed to a sandbox the runner made ahead, while the
previous task ran (a spare: child.run_spare, sandbox.prepare), so the forks and mounts of
a sandbox are off its path.

This module serves the inbox: the loop, the slots, the spare kept ready, heartbeats and the
end. One task's life (reading it, forking it or handing it to the spare, writing its
result) is tasklife.py; finding each task's processes is processes.py; its process tree,
measures and limits are tree.py.
"""

import fcntl
import os
import selectors
import signal
import time
import traceback
from pathlib import Path

from . import processes, sandbox, tasklife
from .accounting import Cgroups
from .common import (
    HarnessError,
    Layout,
    claim,
    environment,
    failed_result,
    is_disk_full,
    open_wake_fifo,
    release_if_idle,
    write_json,
    write_result,
)
from .tasklife import log
from .tree import Spare, TaskRun

TICK = 0.05  # seconds between tree samples
HEARTBEAT = 1.0
DATA_CACHE_SIZE = 4


class Runner:
    def __init__(self, layout: Layout, slots: int, threads: int, idle: float, lock_fd: int,
                 parent: int | None = None):
        import psutil

        from .child import DataSet

        self.psutil = psutil
        self.DataSet = DataSet
        self.layout = layout
        self.slots = max(1, int(slots))
        self.threads = max(1, int(threads))
        self.idle = float(idle)
        self.lock_fd = lock_fd
        # A runner that serves a process (a Dask worker, see daskjob.py) ends with it: when
        # that process dies, the runner is re-parented, stops, and kills its tasks' trees.
        self.parent = parent
        self.me = psutil.Process()
        self.started_at = time.time()
        self.running: dict[str, TaskRun] = {}
        self.forms: dict[str, tuple] = {}  # per task: the shape of a prediction row, its dtypes
        self.by_fd: dict[int, TaskRun] = {}
        self.data: dict[str, object] = {}
        self.stopping = False
        self.plan: dict | None = None  # what of the host sandboxed tasks see: made once
        self.spare: Spare | None = None  # the next sandboxed task's sandbox, made ahead
        self.want_spare = False
        self.spares_made = 0
        self.hidden = [str(tasklife.package_root())]
        self.cgroups = Cgroups.detect()
        self.seats = sandbox.seat_uids(self.slots)  # root: each task a uid of its own
        self.environment = environment()
        self.reserve = layout.space / tasklife.RESERVE_NAME
        tasklife.keep_reserve(self.reserve)
        self.selector = selectors.DefaultSelector()
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        self.selector.register(self.wake_r, selectors.EVENT_READ)
        signal.set_wakeup_fd(self.wake_w)
        self.wake_fifo = open_wake_fifo(layout)  # written when tasks arrive: see wake_runner
        if self.wake_fifo is None:
            log(f"no wake FIFO at {layout.wake}: new tasks are looked for every tick")
        else:
            self.selector.register(self.wake_fifo, selectors.EVENT_READ)
        signal.signal(signal.SIGCHLD, lambda *_: None)  # wakes the selector when a child ends
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)

    def _stop(self, *_) -> None:
        self.stopping = True

    # --- the loop -----------------------------------------------------------------

    def serve(self) -> None:
        idle_since = time.perf_counter()
        next_sample = next_beat = 0.0
        while True:
            now = time.perf_counter()
            if self.stopping:
                self._shutdown()
                return
            self._start_queued()
            if now >= next_sample:
                self._reap()
                self._sample()
                if self._finish_done():
                    self._start_queued()  # a slot just freed: fill it now, not a tick later
                next_sample = now + TICK
            if now >= next_beat:
                if self.parent is not None and os.getppid() != self.parent:
                    log(f"the process {self.parent} this runner served is gone: stopping")
                    self.stopping = True
                    continue
                self._heartbeat()
                next_beat = now + HEARTBEAT
            if self.running:
                idle_since = now
            elif now - idle_since > self.idle and not self.layout.inbox_keys():
                if self._release_if_idle():
                    return
                idle_since = time.perf_counter()
            if self._wait(max(0.0, min(next_sample, next_beat) - time.perf_counter())):
                next_sample = 0.0  # a child ended: reap it and finish its task now

    def _wait(self, timeout: float) -> bool:
        """Wait for output or a signal; True when a signal (SIGCHLD) arrived."""
        signalled = False
        for key, _ in self.selector.select(timeout):
            if key.fd == self.wake_fifo:  # new tasks: the loop starts them on its way round
                try:
                    while os.read(self.wake_fifo, 4096):
                        pass
                except (BlockingIOError, InterruptedError):
                    pass
            elif key.fd == self.wake_r:
                signalled = True
                try:
                    while os.read(self.wake_r, 4096):
                        pass
                except (BlockingIOError, InterruptedError):
                    pass
            else:
                self._read_output(key.fd)
        return signalled

    def _release_if_idle(self) -> bool:
        # Marked exited while still holding the lock: a runner starting right after the
        # release writes its own runner.json, which this one must not overwrite.
        self._drop_spare()
        self._write_runner_json(state="exited")
        if release_if_idle(self.layout, self.lock_fd):
            return True
        log("a task arrived while going idle: staying")
        self._write_runner_json()
        return False

    # --- starting tasks -----------------------------------------------------------

    def _start_queued(self) -> None:
        try:
            self._start_inbox()
        finally:
            if self.want_spare and self.spare is None and not self.stopping:
                self.want_spare = False
                try:
                    self.spare = self._make_spare()
                except Exception:
                    log(f"could not prepare a sandbox ahead\n{traceback.format_exc()}")

    def _start_inbox(self) -> None:
        if len(self.running) >= self.slots:
            return
        for key in self.layout.inbox_keys():
            if len(self.running) >= self.slots:
                return
            if key in self.running or not claim(self.layout.marker(key)):
                continue
            try:
                self._launch(key)
            except (sandbox.SandboxError, HarnessError) as error:
                log(f"task {key}: {error}")
                write_result(self.layout.task(key), failed_result(key, "harness_error", str(error)))
            except Exception:
                log(f"task {key}: could not start\n{traceback.format_exc()}")
                folder = self.layout.task(key)
                if folder.is_dir() and not (folder / "result.json").exists():
                    write_result(folder, failed_result(
                        key, "harness_error", "the runner could not start the task:\n"
                        + traceback.format_exc()))

    def _dataset(self, data_hash: str):
        if data_hash not in self.data:
            folder = self.layout.data / data_hash
            if not Layout.is_complete(folder):
                raise RuntimeError(f"data set {data_hash} is not on this host (or not complete)")
            while len(self.data) >= DATA_CACHE_SIZE:
                self.data.pop(next(iter(self.data)))
            self.data[data_hash] = self.DataSet(folder)
        return self.data[data_hash]

    def _launch(self, key: str) -> None:
        folder = self.layout.task(key)
        task = tasklife.read_task(self.layout, key)
        if task is None:
            return
        isolation = sandbox.mode(task)
        data = self._dataset(task["data"])
        if isolation == "sandbox":
            if self.plan is None:
                answer = sandbox.probe()  # once per runner: a few milliseconds
                if not answer["ok"]:
                    raise sandbox.SandboxError(f"this host cannot sandbox tasks: {answer['reason']}")
                self.plan = sandbox.plan(self.hidden, [str(self.layout.root)])
            seat = None
            if self.seats:
                taken = {run.seat for run in self.running.values()}
                seat = min(set(range(len(self.running) + 1)) - taken)
            self._start_in_spare(key, folder, task, data, seat)
            return
        run = tasklife.start_unsandboxed(key, folder, task, data, self.cgroups, self._inherited())
        self._track(run, tasklife.prediction_form(task, data))
        log(f"task {key}: started as pid {run.pid}")

    def _inherited(self) -> list[int]:
        """The runner's own descriptors, which no task or sandbox may keep open."""
        close = [self.lock_fd, self.wake_r, self.wake_w, *self.by_fd,
                 *(self.spare.fds() if self.spare is not None else [])]
        if self.wake_fifo is not None:
            close.append(self.wake_fifo)
        try:
            close.append(self.selector.fileno())
        except (AttributeError, ValueError):
            pass
        return close

    def _track(self, run: TaskRun, form: tuple[tuple[int, ...], str]) -> None:
        """Watch a started task: its slot, its pipes in the selector, its status.json."""
        self.forms[run.key] = form
        self.running[run.key] = run
        for fd in (run.output_fd, run.result_fd):
            self.by_fd[fd] = run
            self.selector.register(fd, selectors.EVENT_READ)
        tasklife.write_status(run)

    def _make_spare(self, the_plan: dict | None = None) -> Spare:
        """Fork a sandbox for the next sandboxed task (tasklife.fork_spare) with the data
        sets the runner holds now (THE_PLAN: what it shows of the host, the runner's plan by
        default)."""
        the_plan = the_plan or self.plan
        assert the_plan is not None  # made by the first sandboxed task's _launch
        self.spares_made += 1
        group = None
        if self.cgroups is not None:
            group = self.cgroups.make(f"spare{self.spares_made}", None, None)
        try:
            return tasklife.fork_spare(the_plan, self.data, bool(self.seats), group, self._inherited())
        except BaseException:
            if group is not None:
                group.remove()
            raise

    def _drop_spare(self) -> None:
        if self.spare is not None:
            spare, self.spare = self.spare, None
            spare.drop()

    def _start_in_spare(self, key: str, folder: Path, task: dict, data, seat: int | None) -> None:
        """Hand a sandboxed task to the spare (made now if there is none holding its data
        set): tasklife.hand_over."""
        files = sandbox.snapshot(str(folder))  # read before anything else can fail
        devices = list((task.get("limits") or {}).get("devices") or [])
        spare: Spare | None = None
        if devices:  # its GPUs' device files in its /dev: a sandbox of its own, made now
            assert self.plan is not None
            spare = self._make_spare(dict(self.plan, devices=self.plan["devices"]
                                          + sandbox.gpu_device_files(devices)))
        else:
            spare, self.spare = self.spare, None
            if spare is not None and not spare.usable(task["data"]):
                spare.drop()
                spare = None
            if spare is None:
                spare = self._make_spare()
        self.want_spare = True
        run = tasklife.hand_over(spare, key, folder, task, data, files, seat)
        self._track(run, tasklife.prediction_form(task, data))
        log(f"task {key}: started in a sandbox made ahead (pid {spare.pid})")

    # --- watching -----------------------------------------------------------------

    def _read_output(self, fd: int) -> None:
        run = self.by_fd.get(fd)
        try:
            chunk = os.read(fd, 65536)
        except (BlockingIOError, InterruptedError):
            return
        if not chunk:  # every writer closed its end
            self._close_stream(fd, run)
            return
        if run is None:
            return
        if fd == run.result_fd:
            run.receiver.feed(chunk)
        else:
            run.output.add(chunk)

    def _close_stream(self, fd: int, run: TaskRun | None) -> None:
        self.selector.unregister(fd)
        self.by_fd.pop(fd, None)
        os.close(fd)
        if run is not None:
            if fd == run.output_fd:
                run.output_fd = -1
            elif fd == run.result_fd:
                run.result_fd = -1

    def _owner(self, pid: int) -> TaskRun | None:
        try:
            sid = os.getsid(pid)
        except OSError:
            sid = None
        for run in self.running.values():
            if run.owns(pid, sid):
                return run
        return None

    def _pump_results(self) -> None:
        """Read what the result pipes hold now: a sandboxed task's pid arrives there before
        the process that announced it can be reaped."""
        for run in list(self.running.values()):
            if run.result_fd >= 0:
                self._read_output(run.result_fd)

    def _reap(self) -> None:
        self._pump_results()
        while True:
            try:
                info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                return
            if info is None:
                return
            owner = self._owner(info.si_pid)  # asked while the zombie still has its session
            try:
                pid, status, usage = os.wait4(info.si_pid, 0)
            except ChildProcessError:
                continue
            if owner is not None:
                owner.reaped(pid, status, usage)
            elif self.spare is not None and pid == self.spare.pid:
                self.spare.status = status

    def _sample(self) -> None:
        if not self.running:
            return
        procs, parents = processes.descendants(self.me.pid, self.psutil)
        trees = processes.sort_processes(procs, parents, self.running, self._owner)
        for key, run in self.running.items():
            run.sample(trees[key], self.psutil)
            tasklife.check(run)

    # --- finishing ----------------------------------------------------------------

    def _finish_done(self) -> bool:
        finished = False
        for key, run in list(self.running.items()):
            if run.tree_gone:
                try:
                    self._finish(run)
                except FileNotFoundError:
                    # Its folder was removed while it ran (a result found there before the
                    # runner wrote one was refused, and the folder cleaned up): the runner
                    # serves on, with nothing left to record the task in.
                    log(f"task {key}: its folder was removed while it ran; no result written")
                del self.running[key]
                finished = True
        return finished

    def _drain(self, run: TaskRun) -> None:
        tasklife.drain(run)
        for fd in (run.output_fd, run.result_fd):
            if fd >= 0:
                self._close_stream(fd, run)

    def _finish(self, run: TaskRun) -> None:
        self._drain(run)
        tasklife.finish(run, self.forms.pop(run.key, ((), "f")), self.environment, self.reserve)

    # --- heartbeats and the end ---------------------------------------------------

    def _write_runner_json(self, state: str = "running") -> None:
        write_json(self.layout.runner_json, {
            "pid": os.getpid(), "started_at": self.started_at, "heartbeat": time.time(),
            "slots": self.slots, "threads": self.threads, "state": state,
            "running": sorted(self.running),
        })

    def _heartbeat(self) -> None:
        try:
            self._write_runner_json()
            if not self.reserve.exists():
                tasklife.keep_reserve(self.reserve)
            for run in self.running.values():
                if run.child_status is None:
                    tasklife.write_status(run)
        except OSError as error:
            # A full disk stops no runner: its tasks end with a result saying so.
            if not is_disk_full(error):
                raise
            log(f"heartbeat not written: {error}")

    def _shutdown(self) -> None:
        """Stopped by a signal: kill every task's tree and record why, then let go."""
        deadline = time.perf_counter() + 5.0
        self._drop_spare()
        for run in self.running.values():
            run.limit_hit = ("harness_error", "the runner was stopped while the task ran")
            run.kill()
        while self.running and time.perf_counter() < deadline:
            self._reap()
            self._sample()
            for run in self.running.values():
                run.kill()
            self._finish_done()
            time.sleep(0.02)
        self._write_runner_json(state="exited")
        fcntl.flock(self.lock_fd, fcntl.LOCK_UN)
        log("runner stopped")
