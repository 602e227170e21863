"""What a Dask worker is sent to run: unpack the harness once per content hash, then call it.

The functions here travel to the workers by value (cloudpickle, registered in
executors/daskconnect.py), so a worker needs neither datarun nor the harness installed: the
harness arrives as a tar (a Dask future, copied to each worker once), is unpacked into
WORKDIR/harness/<hash>/ on the worker's disk, and imported from there as
`datarun_remote`, the same package an SSH host runs. Only the standard library is used
here, and `distributed` (present on any Dask worker) for the worker's thread count.
"""

from __future__ import annotations

from typing import Any


def call(harness: bytes, place: list[str], workdir: str, entry: str, *args: Any, **options: Any) -> Any:
    """Run `datarun_remote.daskjob.<entry>(workdir, *args)` from the harness unpacked at
    WORKDIR/place[0] on this worker (place[1]: the file marking it whole). What the harness raises comes back as {"error": "Kind: message"}: plain data,
    since an exception of the harness's classes could not be unpickled by the organiser."""
    try:
        return _call(harness, place, workdir, entry, *args, **options)
    except Exception as error:
        return {"error": f"{type(error).__name__}: {error}"}


def _call(harness: bytes, place: list[str], workdir: str, entry: str, *args: Any, **options: Any) -> Any:
    import importlib
    import io
    import os
    import shutil
    import sys
    import tarfile
    import threading

    folder, complete = place
    root = os.path.join(os.path.expanduser(workdir), folder)
    if not os.path.exists(os.path.join(root, complete)):
        os.makedirs(os.path.dirname(root), mode=0o700, exist_ok=True)
        tmp = f"{root}.tmp-{os.getpid()}-{threading.get_ident()}"
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
        with tarfile.open(fileobj=io.BytesIO(harness)) as tar:
            tar.extractall(tmp, filter="data")
        open(os.path.join(tmp, complete), "w").close()
        try:
            os.replace(tmp, root)
        except OSError:  # another thread or worker unpacked it first
            shutil.rmtree(tmp, ignore_errors=True)
    if root not in sys.path:
        sys.path.insert(0, root)
    module = importlib.import_module("datarun_remote.daskjob")
    return getattr(module, entry)(workdir, *args, **options)


def run_task(harness: bytes, place: list[str], workdir: str, *args: Any) -> Any:
    """One datarun task on this worker: its runner gets a slot per worker thread.

    Once the task is in the runner's inbox, this Dask task leaves the worker's thread pool
    (`secede`) and only waits for the result: the worker takes its next task at once, whose
    bundle joins the inbox, so the runner starts it the moment a slot frees, as a host's
    runner does with the tasks waiting in its inbox, rather than after this task's result
    has gone through the worker and the next task has come through it."""
    leave: Any = None
    try:
        from distributed import get_worker, secede

        slots = int(get_worker().state.nthreads)
        leave = secede
    except Exception:
        slots = 1
    space, key, files, data, data_blob, shared, threads, python = args
    return call(harness, place, workdir, "run_task", space, key, files, data, data_blob, shared,
                slots, threads, python, placed=leave)


def preflight(packages: dict[str, str], shared: str | None) -> list[str]:
    """Run on each worker when datarun connects: what this worker lacks of what every task
    needs (`packages`: {module: the package to install}; the shared data folder), each with
    what to fix."""
    import importlib.util
    import os
    import sys

    lacks = [package for module, package in packages.items() if importlib.util.find_spec(module) is None]
    problems = []
    if lacks:
        problems.append(f"its Python {sys.executable} lacks {', '.join(lacks)}: install "
                        f"{'it' if len(lacks) == 1 else 'them'} in the workers' environment")
    if shared is not None and not os.path.isdir(shared):
        problems.append(f"the shared data folder {shared} is not there: fix data = \"shared:...\" in "
                        "hosts.toml, or make the folder reachable from every worker")
    return problems


def set_allowed_failures(value: int, dask_scheduler: Any = None) -> int:
    """Run on the scheduler: no quiet re-run of a task after its worker died; the old value."""
    before = dask_scheduler.allowed_failures
    dask_scheduler.allowed_failures = value
    return before


def identity(value: Any) -> Any:
    """A Dask task holding `value` (the harness, a data set) on the cluster."""
    return value
