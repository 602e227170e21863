"""The task's side of a fork: from the runner's copy of the data to predictions on disk.

The runner forks once per task, so the child starts with numpy, pandas, scikit-learn and
the data set already in memory (copy-on-write) and pays no import cost. The child puts
itself in its own session, so the runner can kill its whole tree with one killpg, caps its
address space as a backstop (the runner's tree watchdog is the real memory limit), sends
its output into the runner's pipe, and reports phase times and any error in a small file.
It never returns into the runner's loop: it always ends in os._exit.
"""

import json
import os
import resource
import signal
import sys
import traceback
from pathlib import Path

from .common import tail_text
from .workflows import WORKFLOWS, PhaseClock, TaskFailure

CHILD_REPORT = ".child.json"
PHASE_FILE = ".phase"
# Room above the memory limit before RLIMIT_AS turns allocations into MemoryError.
ADDRESS_SPACE_SLACK = 512 * 1024**2


class DataSet:
    """A prepared data set (docs/PROTOCOL.md), loaded once by the runner per data hash."""

    def __init__(self, folder: Path):
        import numpy as np
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
        self.y_train = np.load(folder / "y_train.npy", allow_pickle=False)
        if len(self.y_train) != len(self.X_train):
            raise ValueError(f"data set {folder.name}: {len(self.X_train)} rows in X_train but "
                             f"{len(self.y_train)} in y_train")

    @staticmethod
    def _table(folder: Path, name: str, pd):
        if (folder / f"{name}.parquet").exists():
            return pd.read_parquet(folder / f"{name}.parquet")
        return pd.read_csv(folder / f"{name}.csv")


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


def _save(folder: Path, predictions: dict) -> None:
    import numpy as np

    for split, pred in predictions.items():
        np.save(folder / f"y_pred_{split}.npy", np.ascontiguousarray(pred, dtype=np.float64),
                allow_pickle=False)


def _report(folder: Path, clock: PhaseClock, kind: str | None, error: str | None) -> None:
    report = {
        "train_time": clock.times.get("train"), "valid_time": clock.times.get("valid"),
        "test_time": clock.times.get("test"), "error_kind": kind, "error": error,
    }
    tmp = folder / (CHILD_REPORT + ".tmp")
    tmp.write_text(json.dumps(report))
    os.replace(tmp, folder / CHILD_REPORT)


def run_child(folder: Path, task: dict, data: DataSet, output_fd: int, close_fds: list[int],
              jail: dict | None = None) -> None:
    """Run one task in this freshly forked process; never returns.

    `jail` ({"path", "workdir", "uid"}) runs it isolated (see isolation.py): the task then
    works in its jail, seen as /tmp, and everything it writes lands there.
    """
    code = 1
    try:
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
        if jail is not None:
            from .isolation import enter, task_disk, task_processes

            enter(Path(jail["path"]), Path(jail["workdir"]), int(jail["uid"]),
                  task_processes(task), task_disk(task))
            folder = Path("/tmp")
        else:
            os.chdir(folder)
            _limit_file_size(task)
        _memory_backstop(task.get("limits", {}).get("memory"))
        # The runner sized the pools before forking (same thread count): 12 ms saved a task.
        if os.environ.get("OMP_NUM_THREADS") != str(int(task.get("threads") or 1)):
            _limit_thread_pools(int(task.get("threads") or 1))
        clock = PhaseClock(folder / PHASE_FILE)
        kind = error = None
        try:
            workflow = WORKFLOWS[task.get("workflow", "estimator")]
            predictions = workflow(task, data, folder, clock)
            clock.run("save", lambda: _save(folder, predictions))
            code = 0
        except TaskFailure as failure:
            kind, error = failure.kind, failure.text
        except MemoryError:
            kind, error = "memory_limit", tail_text(traceback.format_exc())
        except BaseException:
            kind, error = "harness_error", tail_text(traceback.format_exc())
        _stop_worker_pools()
        _report(folder, clock, kind, error)
    except BaseException:
        try:
            sys.stderr.write(traceback.format_exc())
        except BaseException:
            pass
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except BaseException:
                pass
        os._exit(code)
