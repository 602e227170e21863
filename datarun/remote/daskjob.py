"""One datarun task as one Dask task: the harness's entry on a Dask worker.

A Dask or Slurm host runs each datarun task as one Dask task, which calls `run_task` on
a worker. The task goes through the same runner as on any host (runner.py: a forked,
sandboxed child per task, limits, tree-wide CPU and memory, error kinds): the worker
keeps one runner of its own, started on its first task in a folder of its own
(`WORKDIR/workspaces/<workspace id>-w<worker pid>/`), which serves the worker's tasks one
slot per worker thread and stops, killing its tasks' trees, when the worker dies (its
`--parent`). A task's bundle files arrive as bytes, are placed in the runner's inbox
exactly as an SSH host's `accept` places them, and the result files go back as bytes
with their SHA-256: plain data, never an object a submission made.

Everything here is called through `client.submit` / `client.run` from the organiser's
executor (datarun/executors/dask.py); it imports nothing of datarun but the harness.
"""

import hashlib
import io
import os
import select
import shutil
import tarfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .archive import refusal
from .common import (
    HarnessError,
    Layout,
    check_key,
    claim,
    failed_result,
    make_read_only,
    write_result,
)

RESULT_TICK = 0.002  # seconds between looks for a result without inotify: a trivial task ends within ms
IN_CLOSE_WRITE, IN_MOVED_TO = 0x8, 0x80  # inotify events (linux/inotify.h)
RUNNER_IDLE = 600.0  # a worker's runner outlives a quiet spell; it ends with its worker anyway
_start_lock = threading.Lock()


def worker_space(space: str) -> str:
    """This worker's own folder name under WORKDIR/workspaces: one runner per worker."""
    return check_key(f"{space}-w{os.getpid()}", "workspace id")


def _layout(workdir: str, space: str) -> Layout:
    return Layout(workdir, worker_space(space))


def ensure_data(workdir: str, digest: str, blob: bytes | None, shared: str | None = None) -> Path:
    """The data set `digest` in WORKDIR/data (shared by the workers of this machine): unpacked
    from `blob` (a tar of the set's files) once, atomically; or a link to a copy on a
    shared file system (`shared`, a folder holding data/<digest>/)."""
    layout = Layout(workdir)
    target = layout.data_set(digest)
    if Layout.is_complete(target):
        return target
    layout.data.mkdir(parents=True, exist_ok=True)
    if shared is not None:
        source = Path(shared) / "data" / digest
        if not Layout.is_complete(source):
            raise HarnessError(f"data set {digest} is not complete in the shared folder {shared}")
        tmp = target.with_name(f".tmp-{digest}-{os.getpid()}-{threading.get_ident()}")
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(source)
        os.replace(tmp, target)
        return target
    if blob is None:
        raise HarnessError(f"data set {digest} is not on this worker and was not sent")
    tmp = target.with_name(f".tmp-{digest}-{os.getpid()}-{threading.get_ident()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    _extract(blob, tmp)
    Layout.mark_complete(tmp)
    make_read_only(tmp)
    try:
        os.replace(tmp, target)
    except OSError:  # another thread or worker put it there first
        make_writable_and_remove(tmp)
        if not Layout.is_complete(target):
            raise
    return target


def make_writable_and_remove(folder: Path) -> None:
    for root, dirs, _files in os.walk(folder):
        os.chmod(root, 0o700)
        for name in dirs:
            os.chmod(os.path.join(root, name), 0o700)
    shutil.rmtree(folder, ignore_errors=True)


def _extract(blob: bytes, folder: Path) -> None:
    """Regular files and folders only, each inside `folder` (no links, no absolute paths)."""
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        for member in tar.getmembers():
            parts = Path(member.name).parts
            if member.name.startswith("/") or ".." in parts or not (member.isfile() or member.isdir()):
                raise HarnessError(f"refused archive member {member.name!r}")
        tar.extractall(folder, filter="data")


def _place(layout: Layout, key: str, files: dict[str, bytes]) -> None:
    """The bundle's files into tasks/<key>/, then its inbox marker (the runner never sees half
    a task). A folder of that key there already is refused, as `accept` refuses it."""
    layout.make()
    target = layout.task(key)
    if target.exists() or layout.marker(key).exists():
        raise HarnessError(refusal(layout, key))
    tmp = layout.tasks / f".tmp-{key}"
    shutil.rmtree(tmp, ignore_errors=True)
    for name, content in files.items():
        parts = Path(name).parts
        if name.startswith("/") or ".." in parts or not parts:
            raise HarnessError(f"refused bundle file {name!r}")
        path = tmp.joinpath(*parts)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    os.replace(tmp, target)
    staging = layout.staging_marker(key)
    staging.touch()
    os.replace(staging, layout.marker(key))


def _ensure_runner(layout: Layout, slots: int, threads: int, python: str | None) -> None:
    from . import ops
    from .common import runner_alive, wake_runner

    with _start_lock:
        if runner_alive(layout):
            wake_runner(layout)
            return
        ops.start_runner(str(layout.root), slots, threads, idle=RUNNER_IDLE, python=python,
                         space=layout.space_id, parent=os.getpid())
    wake_runner(layout)


def _watch(folder: Path) -> int | None:
    """An inotify descriptor that turns readable when a file is renamed or written into
    `folder` (result.json is renamed into place); None where inotify is not to be had (not
    Linux, no libc symbol, out of watches): the caller then looks every RESULT_TICK."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
    except (OSError, AttributeError):
        return None
    if fd < 0:
        return None
    if libc.inotify_add_watch(fd, os.fsencode(folder), IN_MOVED_TO | IN_CLOSE_WRITE) < 0:
        os.close(fd)
        return None
    return fd


def _wait_for_result(layout: Layout, key: str, folder: Path) -> None:
    """Until the task's result.json is there: asleep until the folder changes (no looking
    every few milliseconds, which cost a worker's CPU for every task waiting there), and
    every 5 s a look whether the runner still lives (if not, the task ends harness_error)."""
    from .common import runner_alive

    result = folder / "result.json"
    fd = _watch(folder)  # before the first look: a result written in between still wakes it
    last_check = time.monotonic()
    try:
        while not result.exists():
            if fd is None:
                time.sleep(RESULT_TICK)
            elif select.select([fd], [], [], 1.0)[0]:
                try:
                    while os.read(fd, 4096):
                        pass
                except BlockingIOError:
                    pass
            if time.monotonic() - last_check > 5.0:
                last_check = time.monotonic()
                if not runner_alive(layout) and not result.exists():
                    write_result(folder, failed_result(key, "harness_error",
                                                       "the runner on the worker stopped while the task ran"))
    finally:
        if fd is not None:
            os.close(fd)


def run_task(workdir: str, space: str, key: str, files: dict[str, bytes], data: str,
             data_blob: bytes | None, shared: str | None, slots: int, threads: int,
             python: str | None = None, placed: Callable[[], Any] | None = None) -> dict:
    """Run one task through this worker's runner and return its result files:
    {"files": {name: [bytes, sha256 hex]}, "worker_pid": pid}. `placed` (the worker's
    `secede`) is called once the task is in the runner's inbox, if few enough wait there:
    only waiting for the result is left, and the worker's thread is free for the next task."""
    check_key(key)
    workdir = os.path.expanduser(workdir)
    ensure_data(workdir, data, data_blob, shared)
    layout = _layout(workdir, space)
    _place(layout, key, files)
    _ensure_runner(layout, slots, threads, python)
    if placed is not None and len(layout.inbox_keys()) <= slots:
        # At most `slots` tasks wait in the inbox beside those running, as on any host; a
        # task beyond them keeps its worker thread, so the worker takes no more for now and
        # the scheduler sees it busy (a batch queue's adaptive scaling starts workers then).
        placed()
    folder = layout.task(key)
    _wait_for_result(layout, key, folder)
    out = {}
    for path in layout.result_files(key):
        content = path.read_bytes()
        out[path.name] = [content, hashlib.sha256(content).hexdigest()]
    shutil.rmtree(folder, ignore_errors=True)
    claim(layout.marker(key))
    return {"files": out, "worker_pid": os.getpid()}


def cancel(workdir: str, space: str, keys: list[str]) -> list[str]:
    """Ask this worker's runner to kill these tasks' trees (they end `cancelled`, and their
    Dask tasks return that result); the keys found here. Quick: it runs on the worker's
    event loop, so it never waits for the runner."""
    layout = _layout(os.path.expanduser(workdir), space)
    found = []
    for key in keys:
        folder = layout.task(check_key(key))
        if not folder.is_dir() or (folder / "result.json").exists():
            continue
        (folder / "cancel").touch()
        if claim(layout.marker(key)):  # queued, never started: ended here
            write_result(folder, failed_result(key, "cancelled", "cancelled by the organiser"))
        found.append(key)
    return found


def log(workdir: str, space: str, key: str) -> dict | None:
    """The output of task `key` so far, if this worker holds it ({"log": text}; the runner
    writes it with every heartbeat while the task runs), else None."""
    folder = _layout(os.path.expanduser(workdir), space).task(check_key(key))
    if not folder.is_dir():
        return None
    try:
        return {"log": (folder / "output.log").read_text(errors="replace")}
    except FileNotFoundError:
        return {"log": ""}  # waiting in the inbox, or nothing printed yet


def info(workdir: str) -> dict:
    """The harness's `info` on this worker (host check), with the worker's process id."""
    from . import ops

    report = ops.info(os.path.expanduser(workdir))
    report["worker_pid"] = os.getpid()
    return report
