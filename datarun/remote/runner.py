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
"""

import fcntl
import gc
import os
import selectors
import signal
import sys
import time
import traceback
from pathlib import Path

from . import sandbox
from .accounting import Cgroups
from .channel import Receiver
from .common import (
    DISK_FULL,
    HarnessError,
    Layout,
    claim,
    disk_full_text,
    environment,
    failed_result,
    is_disk_full,
    open_wake_fifo,
    read_json,
    release_if_idle,
    write_json,
    write_result,
)
from .tree import Spare, TaskRun

TICK = 0.05  # seconds between tree samples
# Space the runner keeps aside, so a task that meets a full disk can still say so in its
# result.json at once (instead of being found lost after the host's grace period).
RESERVE_NAME = ".reserve"
RESERVE_BYTES = 256 * 1024
HEARTBEAT = 1.0
EXIT_GRACE = 2.0  # how long a finished task's leftover processes may take to exit
DATA_CACHE_SIZE = 4
PREDICTIONS_CAP = 4 * 1024**3  # bytes of one prediction file when the data set does not say


def log(message: str) -> None:
    now = time.time()
    stamp = f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(now))}.{int(now % 1 * 1000):03d}"
    print(f"{stamp} {message}", file=sys.stderr, flush=True)


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
        self.hidden = [str(_package_root())]
        self.cgroups = Cgroups.detect()
        self.seats = sandbox.seat_uids(self.slots)  # root: each task a uid of its own
        self.environment = environment()
        self.reserve = layout.space / RESERVE_NAME
        self._keep_reserve()
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
        from .registry import WORKFLOWS

        folder = self.layout.task(key)
        task = read_json(folder / "task.json")
        if task is None:
            raise RuntimeError(f"task {key} has no readable task.json")
        if (folder / "result.json").exists():
            return  # already finished: a re-sent marker
        if (folder / "cancel").exists():
            write_result(folder, failed_result(key, "cancelled", "cancelled by the organiser"))
            return
        if self.layout.is_sensitive(task.get("data")):
            from .sensitive import place_fold

            place_fold(self.layout.root, folder, task)  # the fold comes from the owner's store
        workflow = task.get("workflow", "estimator")
        if workflow not in WORKFLOWS:
            raise RuntimeError(f"unknown workflow {workflow!r} (this harness knows "
                               f"{', '.join(sorted(WORKFLOWS))})")
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
        launch: dict = {"cgroup": []}
        group = None
        if self.cgroups is not None:
            limits = task.get("limits") or {}
            group = self.cgroups.make(key, limits.get("memory"), sandbox.task_processes(task))
            launch["cgroup"] = group.join_files()
        try:
            self._fork(key, folder, task, data, launch, group, None)
        except BaseException:
            if group is not None:
                group.remove()
            raise

    @staticmethod
    def _prediction_form(task: dict, data) -> tuple[tuple[int, ...], str]:
        """(the shape of one row of predictions, the dtype kinds they may have): float64
        class probabilities or values, or what a RAMP kit's Predictions holds (ramp.py)."""
        ramp = getattr(data, "ramp", None)
        if ramp is not None:
            from .ramp import prediction_form

            return prediction_form(task, ramp.meta)
        width = len(task.get("classes") or [])
        return ((width,) if width else ()), "f"

    def _prediction_caps(self, task: dict, data) -> dict[str, int]:
        width = 1
        for n in self._prediction_form(task, data)[0]:
            width *= n
        ramp = getattr(data, "ramp", None)
        try:
            if ramp is not None:
                rows = {"train": int(ramp.meta["n_train"]), "test": int(ramp.meta["n_test"])}
            else:
                rows = {"train": len(data.X_train), "test": len(data.X_test)}
        except (KeyError, TypeError, ValueError):
            return {"train": PREDICTIONS_CAP, "test": PREDICTIONS_CAP}
        return {split: 8 * n * width for split, n in rows.items()}

    def _fork(self, key: str, folder: Path, task: dict, data, launch: dict, group,
              seat: int | None) -> None:
        from .child import run_child

        read_fd, write_fd = os.pipe()
        result_r, result_w = os.pipe()
        receiver = Receiver(folder, self._prediction_caps(task, data))
        self.forms[key] = self._prediction_form(task, data)
        # Objects the runner holds move out of the collector's sight: a task's garbage
        # collections then never touch (and copy-on-write) the runner's inherited heap.
        gc.freeze()
        sys.stdout.flush()
        sys.stderr.flush()
        close = [self.lock_fd, read_fd, result_r, self.wake_r, self.wake_w, *self.by_fd,
                 *(self.spare.fds() if self.spare is not None else [])]
        if self.wake_fifo is not None:
            close.append(self.wake_fifo)
        try:
            close.append(self.selector.fileno())
        except (AttributeError, ValueError):
            pass
        pid = os.fork()
        if pid == 0:  # the child never comes back from run_child
            signal.set_wakeup_fd(-1)
            run_child(folder, task, data, write_fd, result_w, close, launch)
        gc.unfreeze()  # the runner's own garbage stays collectable
        os.close(write_fd)
        os.close(result_w)
        os.set_blocking(read_fd, False)
        os.set_blocking(result_r, False)
        run = TaskRun(key, folder, task, pid, read_fd, result_r, receiver, group, seat)
        self.running[key] = run
        for fd in (read_fd, result_r):
            self.by_fd[fd] = run
            self.selector.register(fd, selectors.EVENT_READ)
        self._write_status(run)
        log(f"task {key}: started as pid {pid}")

    def _make_spare(self, the_plan: dict | None = None) -> Spare:
        """Fork a sandbox for the next sandboxed task (child.run_spare), with the data sets
        the runner holds now (THE_PLAN: what it shows of the host, the runner's plan by
        default)."""
        from .child import run_spare

        the_plan = the_plan or self.plan
        assert the_plan is not None  # made by the first sandboxed task's _launch

        output_r, output_w = os.pipe()
        result_r, result_w = os.pipe()
        control_r, control_w = os.pipe()
        try:  # room for a submission's files, so sending them never waits on the spare
            fcntl.fcntl(control_w, fcntl.F_SETPIPE_SZ, 1024**2)
        except OSError:
            pass
        self.spares_made += 1
        group = None
        if self.cgroups is not None:
            group = self.cgroups.make(f"spare{self.spares_made}", None, None)
        gc.freeze()
        sys.stdout.flush()
        sys.stderr.flush()
        # Never another sandbox's pipes: a task holding the control pipe of the spare
        # would hand that spare a task of its own making.
        close = [self.lock_fd, output_r, result_r, control_w, self.wake_r, self.wake_w,
                 *self.by_fd, *(self.spare.fds() if self.spare is not None else [])]
        if self.wake_fifo is not None:
            close.append(self.wake_fifo)
        try:
            close.append(self.selector.fileno())
        except (AttributeError, ValueError):
            pass
        try:
            pid = os.fork()
        except BaseException:
            gc.unfreeze()
            for fd in (output_r, output_w, result_r, result_w, control_r, control_w):
                os.close(fd)
            if group is not None:
                group.remove()
            raise
        if pid == 0:  # never returns
            signal.set_wakeup_fd(-1)
            run_spare(the_plan, self.data, bool(self.seats), output_w, result_w, control_r,
                      close, group.join_files() if group is not None else [])
        gc.unfreeze()
        for fd in (output_w, result_w, control_r):
            os.close(fd)
        return Spare(pid, output_r, result_r, control_w, frozenset(self.data), group)

    def _drop_spare(self) -> None:
        if self.spare is not None:
            spare, self.spare = self.spare, None
            spare.drop()

    def _start_in_spare(self, key: str, folder: Path, task: dict, data, seat: int | None) -> None:
        """Hand a sandboxed task to the spare (made now if there is none holding its data
        set): its files and specifics go down the spare's pipe, and the spare's pipes
        become the task's."""
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
        seat_uid = sandbox.TASK_UID_BASE + seat if seat is not None else None
        from .child import send_task

        try:
            if spare.group is not None:
                limits = task.get("limits") or {}
                spare.group.limit(limits.get("memory"), sandbox.task_processes(task))
                spare.group.reset_peak()
            send_task(spare.control_fd, task, files, task["data"], seat_uid)
        except BaseException:
            spare.drop()
            raise
        os.close(spare.control_fd)
        spare.control_fd = -1
        receiver = Receiver(folder, self._prediction_caps(task, data))
        self.forms[key] = self._prediction_form(task, data)
        for fd in (spare.output_fd, spare.result_fd):
            os.set_blocking(fd, False)
        run = TaskRun(key, folder, task, spare.pid, spare.output_fd, spare.result_fd, receiver,
                      spare.group, seat)
        self.running[key] = run
        for fd in (spare.output_fd, spare.result_fd):
            self.by_fd[fd] = run
            self.selector.register(fd, selectors.EVENT_READ)
        self._write_status(run)
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
        psutil = self.psutil
        try:
            procs = self.me.children(recursive=True)
        except psutil.Error:
            procs = []
        parents = {}
        for proc in procs:
            try:
                parents[proc.pid] = proc.ppid()
            except psutil.Error:
                pass
        trees: dict[str, list] = {key: [] for key in self.running}
        roots = {run.pid: key for key, run in self.running.items()}
        roots.update({run.task_pid: key for key, run in self.running.items()})
        roots.update({run.init_pid: key for key, run in self.running.items() if run.init_pid})
        for proc in procs:
            key = None
            pid, hops = proc.pid, 0
            while pid in parents and hops < 64:  # walk up to a task's child
                if pid in roots:
                    key = roots[pid]
                    break
                pid, hops = parents[pid], hops + 1
            if key is None:
                owner = self._owner(proc.pid)
                key = owner.key if owner else None
            if key is not None:
                trees[key].append(proc)
        for key, run in self.running.items():
            run.sample(trees[key], psutil)
            if (run.folder / "cancel").exists() and not run.cancelled and run.child_status is None:
                run.cancelled = True
                run.kill()
                log(f"task {key}: cancelled")
            hit = run.check_limits()
            if hit:
                run.limit_hit = hit
                run.kill()
                log(f"task {key}: {hit[1]}")
            elif run.child_status is not None and run.live and run.exited_at is not None:
                # The task is over; its leftovers get a moment, then the same end.
                if time.perf_counter() - run.exited_at > EXIT_GRACE:
                    run.kill()

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
        for fd in (run.output_fd, run.result_fd):
            if fd < 0:
                continue
            try:
                while True:
                    chunk = os.read(fd, 65536)
                    if not chunk:
                        break
                    if fd == run.result_fd:
                        run.receiver.feed(chunk)
                    else:
                        run.output.add(chunk)
            except (BlockingIOError, InterruptedError, OSError):
                pass
            self._close_stream(fd, run)

    def _finish(self, run: TaskRun) -> None:
        self._drain(run)
        receiver = run.receiver
        receiver.close()
        folder = run.folder
        predictions = {"train": "y_pred_train.npy", "test": "y_pred_test.npy"}
        written = all(name in receiver.complete for name in predictions.values())
        form = self.forms.pop(run.key, ((), "f"))
        channel_error = receiver.error or (_check_predictions(folder, predictions, *form)
                                           if written else None)
        failure = run.failure(receiver.report, receiver.phase, written, channel_error)
        if receiver.disk_full and not run.limit_hit:
            failure = (DISK_FULL, receiver.disk_full)
        try:
            (folder / "output.log").write_text(run.output.text())
        except OSError as error:
            if not is_disk_full(error):
                raise
            failure = (DISK_FULL, disk_full_text(folder.parent))
        if failure is not None:
            for name in predictions.values():
                (folder / name).unlink(missing_ok=True)
        if failure is not None and failure[0] == DISK_FULL:
            (folder / "output.log").unlink(missing_ok=True)  # room for the small result.json
        report = receiver.report or {}
        result = {
            "key": run.key, "state": "failed" if failure else "done",
            "error_kind": failure[0] if failure else None,
            "error": failure[1] if failure else None,
            "train_time": _seconds(report.get("train_time")),
            "valid_time": _seconds(report.get("valid_time")),
            "test_time": _seconds(report.get("test_time")),
            "wall_time": run.wall_time, "cpu_time": run.cpu_time(),
            "peak_memory": run.memory(), "measured_by": run.measured_by,
            "isolation": "none" if run.task.get("isolation") == "none" else "sandbox",
            # When the task's process ended (not when its namespace was torn down after it).
            "started_at": run.started_at, "finished_at": run.ended_at or time.time(),
            "predictions": None if failure else predictions,
            "environment": self.environment,
        }
        try:
            write_result(folder, result)
        except OSError as error:
            if not is_disk_full(error):
                raise
            # No room even for result.json with its predictions: drop them and say why.
            for name in predictions.values():
                (folder / name).unlink(missing_ok=True)
            (folder / "output.log").unlink(missing_ok=True)
            result.update(state="failed", error_kind=DISK_FULL, error=disk_full_text(folder.parent),
                          predictions=None)
            try:
                write_result(folder, result)
            except OSError as again:
                if not is_disk_full(again):
                    raise
                self.reserve.unlink(missing_ok=True)  # the space kept for this moment
                try:
                    write_result(folder, result)
                except OSError as last:
                    if not is_disk_full(last):
                        raise
                    log(f"task {run.key}: no room for its result: {last}")
        (folder / "status.json").unlink(missing_ok=True)
        if run.group is not None:
            run.group.remove()
        log(f"task {run.key}: {result['state']}"
            + (f" ({result['error_kind']})" if failure else ""))

    # --- heartbeats and the end ---------------------------------------------------

    def _keep_reserve(self) -> None:
        """(Re)make the reserve when there is room for it; a full disk leaves it out."""
        try:
            if self.reserve.exists():
                return
            with open(self.reserve, "wb") as handle:
                handle.write(bytes(RESERVE_BYTES))
        except OSError:
            self.reserve.unlink(missing_ok=True)

    def _write_runner_json(self, state: str = "running") -> None:
        write_json(self.layout.runner_json, {
            "pid": os.getpid(), "started_at": self.started_at, "heartbeat": time.time(),
            "slots": self.slots, "threads": self.threads, "state": state,
            "running": sorted(self.running),
        })

    def _write_status(self, run: TaskRun) -> None:
        try:
            write_json(run.folder / "status.json", {
                "state": "running", "pid": run.task_pid, "pid_start": run.task_pid_start,
                "init": run.init_pid, "init_start": run.init_start,
                "started_at": run.started_at, "heartbeat": time.time(), "phase": run.receiver.phase,
            })
            if run.output.total:
                (run.folder / "output.log").write_text(run.output.text())
        except FileNotFoundError:  # its folder was removed under it: see _finish_done
            pass

    def _heartbeat(self) -> None:
        try:
            self._write_runner_json()
            if not self.reserve.exists():
                self._keep_reserve()
            for run in self.running.values():
                if run.child_status is None:
                    self._write_status(run)
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


def _seconds(value) -> float | None:
    """A phase time the task reported: a number, or nothing."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _check_predictions(folder: Path, names: dict, row: tuple[int, ...], kinds: str) -> str | None:
    """What is wrong with the prediction files the task sent, or None: .npy of rows of shape
    `row`, float64 (or, `kinds` "biuf", any number of at most 8 bytes: a RAMP kit's own
    dtype); the row counts were capped as they arrived."""
    import numpy as np

    for name in names.values():
        try:
            with open(folder / name, "rb") as handle:
                version = np.lib.format.read_magic(handle)
                read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                               else np.lib.format.read_array_header_2_0)
                shape, _, dtype = read_header(handle)
                offset = handle.tell()
            size = (folder / name).stat().st_size
        except (OSError, ValueError) as error:
            return f"{name} is not a valid .npy file: {error}"
        numbers = dtype == np.float64 if kinds == "f" else (
            dtype.kind in kinds and dtype.itemsize <= 8)
        if not numbers or tuple(shape[1:]) != row or len(shape) != 1 + len(row):
            what = "float64 predictions" if kinds == "f" else "predictions of numbers"
            width = "" if not row else f" of width {row[0]}" if len(row) == 1 else f" of row shape {row}"
            return f"{name} holds {dtype} of shape {shape}, not {what}{width or ' of width 1'}"
        if size != offset + int(np.prod(shape)) * dtype.itemsize:
            return f"{name} is {size} bytes, not what its header says"
    return None


def _package_root() -> Path:
    """The folder the harness package is imported from (kept out of every sandbox)."""
    root = Path(__file__).resolve().parent
    for _ in (__package__ or "datarun_remote").split("."):
        root = root.parent
    return root
