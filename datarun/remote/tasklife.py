"""One task's life on a host, from its folder to its result.json: reading what it asks,
forking its process (unsandboxed) or its sandbox ahead of it (a spare), handing it over,
and, once its process tree is gone, checking its predictions and writing its result.

The runner (runner.py) decides when: it serves the inbox, keeps the slots, the selector
and the spare, and calls these with what they need. What a task's process tree is, how
it is measured and when it is over its limits is tree.py; what runs in the forked process
is child.py.
"""

import fcntl
import gc
import os
import signal
import sys
import time
from pathlib import Path

from . import sandbox
from .channel import Receiver
from .common import (
    DISK_FULL,
    Layout,
    disk_full_text,
    failed_result,
    is_disk_full,
    read_json,
    write_json,
    write_result,
)
from .tree import Spare, TaskRun

PREDICTIONS_CAP = 4 * 1024**3  # bytes of one prediction file when the data set does not say
EXIT_GRACE = 2.0  # how long a finished task's leftover processes may take to exit
# Space the runner keeps aside, so a task that meets a full disk can still say so in its
# result.json at once (instead of being found lost after the host's grace period).
RESERVE_NAME = ".reserve"
RESERVE_BYTES = 256 * 1024


def log(message: str) -> None:
    now = time.time()
    stamp = f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(now))}.{int(now % 1 * 1000):03d}"
    print(f"{stamp} {message}", file=sys.stderr, flush=True)


# --- what the task asks ---------------------------------------------------------------

def read_task(layout: Layout, key: str) -> dict | None:
    """The task of inbox key KEY, ready to start; None when there is nothing to start (it
    finished already: a re-sent marker; or it was cancelled before it started: its result
    says so)."""
    from .registry import WORKFLOWS

    folder = layout.task(key)
    task = read_json(folder / "task.json")
    if task is None:
        raise RuntimeError(f"task {key} has no readable task.json")
    if (folder / "result.json").exists():
        return None  # already finished: a re-sent marker
    if (folder / "cancel").exists():
        write_result(folder, failed_result(key, "cancelled", "cancelled by the organiser"))
        return None
    if layout.is_sensitive(task.get("data")):
        from .sensitive import place_fold

        place_fold(layout.root, folder, task)  # the fold comes from the owner's store
    workflow = task.get("workflow", "estimator")
    if workflow not in WORKFLOWS:
        raise RuntimeError(f"unknown workflow {workflow!r} (this harness knows "
                           f"{', '.join(sorted(WORKFLOWS))})")
    return task


def prediction_form(task: dict, data) -> tuple[tuple[int, ...], str]:
    """(the shape of one row of predictions, the dtype kinds they may have): float64
    class probabilities or values, or what a RAMP kit's Predictions holds (ramp.py)."""
    ramp = getattr(data, "ramp", None)
    if ramp is not None:
        from .ramp import prediction_form as ramp_form

        return ramp_form(task, ramp.meta)
    width = len(task.get("classes") or [])
    return ((width,) if width else ()), "f"


def prediction_caps(task: dict, data) -> dict[str, int]:
    width = 1
    for n in prediction_form(task, data)[0]:
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


# --- starting it ----------------------------------------------------------------------

def fork_task(key: str, folder: Path, task: dict, data, launch: dict, group,
              seat: int | None, close: list[int]) -> TaskRun:
    """Fork an unsandboxed task's process (child.run_child), closing CLOSE (the runner's
    own descriptors) in it; the returned run's pipes are non-blocking."""
    from .child import run_child

    read_fd, write_fd = os.pipe()
    result_r, result_w = os.pipe()
    receiver = Receiver(folder, prediction_caps(task, data))
    # Objects the runner holds move out of the collector's sight: a task's garbage
    # collections then never touch (and copy-on-write) the runner's inherited heap.
    gc.freeze()
    sys.stdout.flush()
    sys.stderr.flush()
    close = [*close, read_fd, result_r]
    pid = os.fork()
    if pid == 0:  # the child never comes back from run_child
        signal.set_wakeup_fd(-1)
        run_child(folder, task, data, write_fd, result_w, close, launch)
    gc.unfreeze()  # the runner's own garbage stays collectable
    os.close(write_fd)
    os.close(result_w)
    os.set_blocking(read_fd, False)
    os.set_blocking(result_r, False)
    return TaskRun(key, folder, task, pid, read_fd, result_r, receiver, group, seat)


def start_unsandboxed(key: str, folder: Path, task: dict, data, cgroups,
                      close: list[int]) -> TaskRun:
    """Start an unsandboxed task (isolation "none"): its cgroup (CGROUPS, or None) with its
    limits, and its fork (fork_task)."""
    launch: dict = {"cgroup": []}
    group = None
    if cgroups is not None:
        limits = task.get("limits") or {}
        group = cgroups.make(key, limits.get("memory"), sandbox.task_processes(task))
        launch["cgroup"] = group.join_files()
    try:
        return fork_task(key, folder, task, data, launch, group, None, close)
    except BaseException:
        if group is not None:
            group.remove()
        raise


def fork_spare(the_plan: dict, data: dict, seats: bool, group, close: list[int]) -> Spare:
    """Fork a sandbox for the next sandboxed task (child.run_spare), with the data sets
    DATA (the runner's cache now), THE_PLAN (what it shows of the host) and GROUP (its
    cgroup, or None), closing CLOSE (the runner's own descriptors) in it."""
    from .child import run_spare

    output_r, output_w = os.pipe()
    result_r, result_w = os.pipe()
    control_r, control_w = os.pipe()
    try:  # room for a submission's files, so sending them never waits on the spare
        fcntl.fcntl(control_w, fcntl.F_SETPIPE_SZ, 1024**2)
    except OSError:
        pass
    gc.freeze()
    sys.stdout.flush()
    sys.stderr.flush()
    # Never another sandbox's pipes: a task holding the control pipe of the spare
    # would hand that spare a task of its own making.
    close = [*close, output_r, result_r, control_w]
    try:
        pid = os.fork()
    except BaseException:
        gc.unfreeze()
        for fd in (output_r, output_w, result_r, result_w, control_r, control_w):
            os.close(fd)
        raise
    if pid == 0:  # never returns
        signal.set_wakeup_fd(-1)
        run_spare(the_plan, data, seats, output_w, result_w, control_r,
                  close, group.join_files() if group is not None else [])
    gc.unfreeze()
    for fd in (output_w, result_w, control_r):
        os.close(fd)
    return Spare(pid, output_r, result_r, control_w, frozenset(data), group)


def hand_over(spare: Spare, key: str, folder: Path, task: dict, data, files: list,
              seat: int | None) -> TaskRun:
    """Give a sandboxed task to SPARE: its limits on the spare's cgroup, its FILES and
    specifics down the spare's pipe; the spare's pipes become the task's (non-blocking).
    A spare that cannot take it is dropped."""
    from .child import send_task

    seat_uid = sandbox.TASK_UID_BASE + seat if seat is not None else None
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
    receiver = Receiver(folder, prediction_caps(task, data))
    for fd in (spare.output_fd, spare.result_fd):
        os.set_blocking(fd, False)
    return TaskRun(key, folder, task, spare.pid, spare.output_fd, spare.result_fd, receiver,
                   spare.group, seat)


def write_status(run: TaskRun) -> None:
    """The task's status.json (its pids, its phase, a heartbeat) and its output so far."""
    try:
        write_json(run.folder / "status.json", {
            "state": "running", "pid": run.task_pid, "pid_start": run.task_pid_start,
            "init": run.init_pid, "init_start": run.init_start,
            "started_at": run.started_at, "heartbeat": time.time(), "phase": run.receiver.phase,
        })
        if run.output.total:
            (run.folder / "output.log").write_text(run.output.text())
    except FileNotFoundError:  # its folder was removed under it: see Runner._finish_done
        pass


# --- watching it ----------------------------------------------------------------------

def check(run: TaskRun) -> None:
    """After a sample: kill the task's tree when it was cancelled, went over a limit, or
    ended and left processes behind for longer than EXIT_GRACE."""
    key = run.key
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


def drain(run: TaskRun) -> None:
    """Read what the task's pipes still hold (its tree is gone), up to EOF."""
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


# --- its end --------------------------------------------------------------------------

def finish(run: TaskRun, form: tuple[tuple[int, ...], str], environment: dict,
           reserve: Path) -> None:
    """Write the result.json of a task whose tree is gone and whose pipes are drained:
    its predictions checked against FORM (prediction_form), its measures, its failure if
    any. A full disk fails it with a result saying so (RESERVE, the runner's space kept
    aside, given up for it as a last resort)."""
    receiver = run.receiver
    receiver.close()
    folder = run.folder
    predictions = {"train": "y_pred_train.npy", "test": "y_pred_test.npy"}
    written = all(name in receiver.complete for name in predictions.values())
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
        "environment": environment,
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
            reserve.unlink(missing_ok=True)  # the space kept for this moment
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


def keep_reserve(reserve: Path) -> None:
    """(Re)make the reserve when there is room for it; a full disk leaves it out."""
    try:
        if reserve.exists():
            return
        with open(reserve, "wb") as handle:
            handle.write(bytes(RESERVE_BYTES))
    except OSError:
        reserve.unlink(missing_ok=True)


def package_root() -> Path:
    """The folder the harness package is imported from (kept out of every sandbox)."""
    root = Path(__file__).resolve().parent
    for _ in (__package__ or "datarun_remote").split("."):
        root = root.parent
    return root


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
