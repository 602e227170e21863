"""The task's side of a fork: from the runner's copy of the data to predictions on disk.

The runner forks once per task, so the child starts with numpy, pandas, scikit-learn and
the data set already in memory (copy-on-write) and pays no import cost. The child puts
itself in its own session, so the runner can kill its whole tree with one killpg, caps its
address space as a backstop (the runner's tree watchdog is the real memory limit), sends
its output into the runner's pipe, and sends phase notes, its report and its predictions
over a second pipe (channel.py): the runner writes every result file itself. Sandboxed
(sandbox.py), the labels it must not see are scrubbed from its memory first. It never
returns into the runner's loop: it always ends in os._exit.
"""

import json
import os
import resource
import signal
import sys
import traceback
from pathlib import Path

from . import channel
from .common import tail_text
from .registry import WORKFLOWS
from .workflows import PhaseClock, TaskFailure

# Room above the memory limit before RLIMIT_AS turns allocations into MemoryError.
ADDRESS_SPACE_SLACK = 512 * 1024**2


class DataSet:
    """A prepared data set (docs/PROTOCOL.md), loaded once by the runner per data hash."""

    def __init__(self, folder: Path):
        import pandas as pd

        self.folder = folder
        with open(folder / "meta.json") as handle:
            self.meta = json.load(handle)
        if self.meta.get("format") == "ramp":  # a RAMP kit's data set: see ramp.py
            from .ramp import load_ramp_data

            self.ramp = load_ramp_data(folder, self.meta)
            return
        self.X_train = self._table(folder, "X_train", pd)
        self.X_test = self._table(folder, "X_test", pd)
        self.y_train = _read_labels(folder / "y_train.npy")
        if len(self.y_train) != len(self.X_train):
            raise ValueError(f"data set {folder.name}: {len(self.X_train)} rows in X_train but "
                             f"{len(self.y_train)} in y_train")

    def _table(self, folder: Path, name: str, pd):
        if (folder / f"{name}.parquet").exists():
            return pd.read_parquet(folder / f"{name}.parquet")
        if (folder / f"{name}.npy").exists():
            return _binary_table(folder / f"{name}.npy", self.meta.get("columns"), pd)
        return pd.read_csv(folder / f"{name}.csv")


def _binary_table(path: Path, columns, pd):
    """A feature table stored as one 2-D numeric .npy (no pickle): read, not parsed."""
    import numpy as np

    array = np.load(path, allow_pickle=False)
    if array.ndim != 2 or array.dtype.kind not in "iuf":
        raise ValueError(f"data set file {path.name} is not a 2-D numeric array")
    if not isinstance(columns, list) or len(columns) != array.shape[1]:
        raise ValueError(f"data set file {path.name}: meta.json names {len(columns or [])} columns, "
                         f"the array has {array.shape[1]}")
    return pd.DataFrame(array, columns=[str(c) for c in columns], copy=False)


def _memory_backstop(limit: int | None) -> None:
    if not limit:
        return
    try:
        with open("/proc/self/statm") as handle:
            pages = int(handle.read().split()[0])
        current = pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        current = 0
    cap = current + 2 * int(limit) + ADDRESS_SPACE_SLACK
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))


def _limit_file_size(task: dict) -> None:
    """No single file past the disk cap (Python ignores SIGXFSZ: the write fails with EFBIG)."""
    disk = (task.get("limits") or {}).get("disk")
    if disk:
        resource.setrlimit(resource.RLIMIT_FSIZE, (int(disk), int(disk)))


def _limit_thread_pools(threads: int) -> None:
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return
    threadpool_limits(limits=threads)


def _stop_worker_pools() -> None:
    """Let joblib's reusable loky workers exit now, inside the task's tree, not later as orphans."""
    module = sys.modules.get("joblib.externals.loky.reusable_executor")
    executor = getattr(module, "_executor", None) if module else None
    if executor is not None:
        try:
            executor.shutdown(wait=True)
        except Exception:
            pass


def _read_labels(path: Path):
    """y_train.npy read straight into its array: no buffered copy of the labels is left
    behind in freed memory for a task to find (see scrub_labels)."""
    import numpy as np

    with open(path, "rb", buffering=0) as handle:
        return np.lib.format.read_array(handle, allow_pickle=False)


class TaskData:
    """What one task's workflow is handed: features, the labels of its fit rows, its fold."""

    def __init__(self, data: "DataSet", train_idx):
        self.train_idx = train_idx
        self.ramp = getattr(data, "ramp", None)
        if self.ramp is None:
            self.X_train, self.X_test = data.X_train, data.X_test
            self.y_fit = data.y_train[train_idx]  # a copy: fancy indexing


def _blank(values) -> None:
    """Overwrite an array's contents in place (in this process's copy-on-write pages)."""
    import numpy as np

    if not isinstance(values, np.ndarray) or not values.size:
        return
    if values.dtype.kind == "O":
        values[...] = None
    elif values.flags.c_contiguous:
        values.reshape(-1).view(np.uint8)[:] = 0
    else:
        values[...] = np.zeros((), dtype=values.dtype)


def _blank_labels(y) -> None:
    import numpy as np

    if isinstance(y, np.ndarray):
        _blank(y)
    elif isinstance(y, list):
        y[:] = [None] * len(y)
    elif hasattr(y, "to_numpy"):  # a pandas Series or DataFrame: its blocks, in place
        for block in getattr(getattr(y, "_mgr", None), "arrays", []) or []:
            _blank(block)


def _visible_ramp_labels(y, train_idx):
    """A copy of a RAMP kit's y_train holding only the labels of the fit rows."""
    import numpy as np

    if isinstance(y, np.ndarray):
        visible = np.empty_like(y) if y.dtype.kind == "O" else np.zeros_like(y)
        visible[train_idx] = y[train_idx]
        return visible
    if isinstance(y, list):
        keep = set(int(i) for i in train_idx)
        return [value if i in keep else None for i, value in enumerate(y)]
    if hasattr(y, "iloc"):
        visible = y.copy()
        mask = np.ones(len(y), dtype=bool)
        mask[train_idx] = False
        visible.iloc[mask] = None
        return visible
    return y


def scrub_labels(task_data: TaskData, data: "DataSet", cache: dict) -> None:
    """Before any submission code runs: the labels this task must not see are gone from
    its memory. It keeps a copy of its fit rows' labels (TaskData); the full y arrays of
    its data set and of every other data set the runner holds are overwritten in place
    (the child inherited them through fork, so `del` would leave their bytes to be found),
    and the other data sets are dropped."""
    if task_data.ramp is not None:
        original = task_data.ramp.y_train
        task_data.ramp.y_train = _visible_ramp_labels(original, task_data.train_idx)
        _blank_labels(original)
    else:
        _blank_labels(data.y_train)
    for other in list(cache.values()):
        if other is data:
            continue
        ramp = getattr(other, "ramp", None)
        _blank_labels(ramp.y_train if ramp is not None else getattr(other, "y_train", None))
    cache.clear()


def _send_phase(fd: int):
    def note(phase: str) -> None:
        channel.send(fd, b"P", phase.encode()[: channel.PHASE_CAP])
    return note


def _report(fd: int, clock: PhaseClock, kind: str | None, error: str | None) -> None:
    report = {
        "train_time": clock.times.get("train"), "valid_time": clock.times.get("valid"),
        "test_time": clock.times.get("test"), "error_kind": kind, "error": error,
    }
    channel.send(fd, b"R", json.dumps(report).encode()[: channel.REPORT_CAP])


def _join_cgroup(files: list[str]) -> None:
    for path in files:
        with open(path, "w") as handle:
            handle.write("0")


def _detach(output_fd: int, close_fds: list[int]) -> None:
    """A fresh fork of the runner becomes a task's first process: its own session, none
    of the runner's descriptors, default signals, its output into the runner's pipe."""
    os.setsid()
    for fd in close_fds:
        try:
            os.close(fd)
        except OSError:
            pass
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)
    os.dup2(output_fd, 1)
    os.dup2(output_fd, 2)
    os.close(output_fd)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    for stream in (sys.stdout, sys.stderr):  # a line printed is a line kept, crash or not
        reconfigure = getattr(stream, "reconfigure", None)  # a TextIOWrapper's, not every stream's
        try:
            if reconfigure is not None:
                reconfigure(line_buffering=True)
        except ValueError:
            pass


def _end(code: int) -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:
            pass
    os._exit(code)


def run_child(folder: Path, task: dict, data: DataSet, output_fd: int, result_fd: int,
              close_fds: list[int], launch: dict) -> None:
    """Run one unsandboxed task (isolation "none") in this freshly forked process; never
    returns. Sandboxed tasks start in a spare instead (`run_spare`).

    `launch`: {"cgroup": cgroup.procs files to join}.
    """
    code = 1
    try:
        _detach(output_fd, close_fds)
        _join_cgroup(launch.get("cgroup") or [])
        import numpy as np

        train_idx = np.load(folder / "train_idx.npy", allow_pickle=False)
        task_data = TaskData(data, train_idx)
        os.chdir(folder)
        _limit_file_size(task)
        from .sandbox import device_environment

        os.environ.update(device_environment(_devices(task)))
        code = _run_task(folder, task, task_data, result_fd)
    except BaseException:
        try:
            sys.stderr.write(traceback.format_exc())
        except BaseException:
            pass
    finally:
        _end(code)


def run_spare(the_plan: dict, cache: dict, seats: bool, output_fd: int, result_fd: int,
              control_fd: int, close_fds: list[int], cgroup: list[str]) -> None:
    """A sandbox made ahead of its task, in this freshly forked process (A); never returns.

    A joins the task's cgroup and prepares the sandbox (sandbox.prepare: namespaces, init,
    the root's skeleton, the fork of C); C then waits on CONTROL_FD for its task, sent by
    the runner (`send_task`): the task, the files of its folder, its data set's hash, its
    seat uid. C finds the data set in the copy of the runner's cache it was forked with,
    scrubs the labels it must not see, enters the sandbox for good and runs the task,
    which sees its folder as /task. EOF on CONTROL_FD with no task (the runner dropped the
    spare, or died): A kills the namespace's init, and C dies with it, having run nothing.
    """
    code = 1
    try:
        _detach(output_fd, close_fds)
        _join_cgroup(cgroup)
        from . import sandbox

        sandbox.prepare(the_plan, seats,
                        lambda pid, init: channel.send(result_fd, b"C", f"{pid} {init}".encode()),
                        control_fd)
        message = _read_task(control_fd)
        os.close(control_fd)
        if message is None:
            _end(0)
        task, files, data_hash, seat_uid = message
        data = cache.get(data_hash)
        if data is None:
            raise RuntimeError(f"data set {data_hash} is not in the spare's copy of the cache")
        import io

        import numpy as np

        train_idx = np.load(io.BytesIO(dict(files)["train_idx.npy"]), allow_pickle=False)
        task_data = TaskData(data, train_idx)
        scrub_labels(task_data, data, cache)
        del data, cache
        sandbox.enter_task(the_plan, files, sandbox.task_disk(task), sandbox.task_processes(task),
                           sandbox.task_environment(int(task.get("threads") or 1), _devices(task)),
                           seat_uid)
        code = _run_task(Path(sandbox.TASK_DIR), task, task_data, result_fd)
    except BaseException:
        try:
            sys.stderr.write(traceback.format_exc())
        except BaseException:
            pass
    finally:
        _end(code)


def _devices(task: dict) -> list[int]:
    return list((task.get("limits") or {}).get("devices") or [])


def send_task(control_fd: int, task: dict, files: list, data_hash: str, seat_uid: int | None) -> None:
    """The runner's side of `run_spare`: the task's specifics, then EOF. Pickled: it goes
    from the runner to its own child before any submission code runs, never the other way."""
    import pickle

    payload = pickle.dumps((task, files, data_hash, seat_uid), protocol=pickle.HIGHEST_PROTOCOL)
    channel.send(control_fd, b"S", payload)


def _read_task(fd: int):
    import pickle

    chunks = []
    while True:
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            break
        chunks.append(chunk)
    message = b"".join(chunks)
    if len(message) < channel.HEADER.size:
        return None
    kind, length = channel.HEADER.unpack_from(message)
    payload = message[channel.HEADER.size:]
    if kind != b"S" or len(payload) != length:
        return None
    return pickle.loads(payload)


def _run_task(folder: Path, task: dict, task_data: TaskData, result_fd: int) -> int:
    """The task itself, in its folder: the workflow, its predictions and report sent to
    the runner. The exit code: 0 when predictions were sent."""
    code = 1
    _memory_backstop(task.get("limits", {}).get("memory"))
    # The runner sized the pools before forking (same thread count): 12 ms saved a task.
    if os.environ.get("OMP_NUM_THREADS") != str(int(task.get("threads") or 1)):
        _limit_thread_pools(int(task.get("threads") or 1))
    clock = PhaseClock(_send_phase(result_fd))
    kind = error = None
    try:
        workflow = WORKFLOWS[task.get("workflow", "estimator")]
        predictions = workflow(task, task_data, folder, clock)
        clock.run("save", lambda: _save(result_fd, predictions))
        code = 0
    except TaskFailure as failure:
        kind, error = failure.kind, failure.text
    except MemoryError:
        kind, error = "memory_limit", tail_text(traceback.format_exc())
    except BaseException:
        kind, error = "harness_error", tail_text(traceback.format_exc())
    _stop_worker_pools()
    _report(result_fd, clock, kind, error)
    return code


def _save(fd: int, predictions: dict) -> None:
    for split, pred in predictions.items():
        channel.send_array(fd, b"T" if split == "train" else b"E", pred)
