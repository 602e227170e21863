"""The harness commands of docs/PROTOCOL.md as plain functions.

The organiser's local executor calls these in-process; `python -m datarun_remote` (or
`python -m datarun.remote`) calls the same functions and prints their dict as JSON. They
are quick, never import numpy or scikit-learn (`info` must answer on a host that lacks
them), and leave the real work to the detached runner.
"""

import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from . import HARNESS_VERSION
from .archive import pack as _pack
from .archive import unpack
from .common import (
    KEY_PATTERN,
    HarnessError,
    Layout,
    check_key,
    claim,
    failed_result,
    library_versions,
    process_group,
    process_start,
    read_json,
    runner_alive,
    write_result,
)

START_TIMEOUT = 15.0
FLOOR_SUFFIX = "-floor"  # the folder of a workspace's empty task: WORKDIR/workspaces/<id>-floor
CANCEL_WAIT = 5.0
RUNNER_AWAKE = 3.0  # seconds since the runner's last heartbeat (it beats every second)


def _memory_total() -> int | None:
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return None


def _gpus() -> int:
    try:
        return sum(1 for name in os.listdir("/dev") if name.startswith("nvidia") and name[6:].isdigit())
    except OSError:
        return 0


def info(workdir: str | os.PathLike, space: str | None = None) -> dict:
    """What this host offers: Python, cores, memory, disk, GPUs, library versions, and
    whether its tasks can be sandboxed."""
    root = Layout(workdir, space).root
    existing = root
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    versions = library_versions()
    usable_cpus: int | None
    try:
        usable_cpus = len(os.sched_getaffinity(0))
    except AttributeError:
        usable_cpus = os.cpu_count()
    required = ("numpy", "pandas", "sklearn", "psutil")
    from .accounting import Cgroups
    from .sandbox import probe

    cgroups = Cgroups.detect()
    return {
        "python": platform.python_version(), "executable": sys.executable,
        "platform": platform.platform(), "hostname": socket.gethostname(),
        "cpus": os.cpu_count(), "usable_cpus": usable_cpus, "memory": _memory_total(),
        "disk_free": shutil.disk_usage(existing).free, "gpus": _gpus(),
        **{name: versions[name] for name in ("numpy", "pandas", "sklearn", "psutil", "rampwf")},
        "joblib": versions["joblib"], "threadpoolctl": versions["threadpoolctl"],
        "missing": [name for name in required if versions[name] is None],
        "harness": HARNESS_VERSION, "workdir": str(root),
        # Whether tasks can run sandboxed here (a sandboxed child is tried for real), and
        # how their memory and CPU time are measured.
        "sandbox": probe(), "user_namespaces": _max_user_namespaces(),
        "measured_by": cgroups.method if cgroups is not None else "procfs",
    }


def _max_user_namespaces() -> int | None:
    try:
        with open("/proc/sys/user/max_user_namespaces") as handle:
            return int(handle.read())
    except (OSError, ValueError):
        return None


def accept(workdir: str | os.PathLike, archive: str | os.PathLike, space: str | None = None) -> dict:
    """Unpack a bundle archive safely, mark its tasks runnable, delete the archive.

    A task whose folder exists already is refused (listed in `refused` with the reason),
    never merged into the older folder: each attempt is sent once, under a key of its own."""
    layout = Layout(workdir, space).make()
    archive = Path(archive)
    if not archive.is_file():
        raise HarnessError(f"no archive at {archive}")
    result = unpack(layout, archive)
    archive.unlink()
    return result


def _package_root() -> tuple[str, Path]:
    """This package's import name and the folder to run `python -m` from."""
    name = __package__ or "datarun_remote"
    root = Path(__file__).resolve().parent
    for _ in name.split("."):
        root = root.parent
    return name, root


# What the runner keeps of the environment that started it: the shell that ran `train`
# may hold tokens and agent sockets, and every task inherits the runner's memory.
RUNNER_ENVIRONMENT = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "LC_CTYPE", "TZ",
                      "PYTHONPATH", "PYTHONHASHSEED", "VIRTUAL_ENV", "DATARUN_CGROUPS")


def runner_environment(source) -> dict[str, str]:
    return {name: source[name] for name in RUNNER_ENVIRONMENT if name in source}


def start_runner(workdir: str | os.PathLike, slots: int, threads: int, idle: float = 60.0,
                 python: str | None = None, space: str | None = None, parent: int | None = None) -> dict:
    """Start the workspace's runner detached unless one is alive; wait until it holds the folder.

    `python` runs it on another interpreter than this one. Its environment is
    RUNNER_ENVIRONMENT of this one, and nothing else. With `parent` (this process's pid),
    the runner stops, killing its tasks, once this process is gone."""
    if int(slots) < 1 or int(threads) < 1:
        raise HarnessError(f"slots and threads must be at least 1, got {slots} and {threads}")
    layout = Layout(workdir, space).make()
    if runner_alive(layout):
        current = read_json(layout.runner_json) or {}
        return {"pid": current.get("pid"), "started": False}
    checked = time.time()
    package, root = _package_root()
    # Imported here, not at the top: every other command starts faster without it.
    from .startup import thread_environment

    env = runner_environment(os.environ)
    env.update(thread_environment(threads))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(root), env.get("PYTHONPATH")) if p)
    command = [python or sys.executable, "-m", package, "serve", str(layout.root), "--slots",
               str(int(slots)), "--threads", str(int(threads)), "--idle", str(float(idle))]
    if layout.space_id is not None:
        command += ["--space", layout.space_id]
    if parent is not None:
        command += ["--parent", str(int(parent))]
    with open(layout.runner_log, "ab") as log_file:
        process = subprocess.Popen(
            command, cwd=root, env=env, stdin=subprocess.DEVNULL, stdout=log_file,
            stderr=log_file, start_new_session=True, close_fds=True)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        current = read_json(layout.runner_json) or {}
        if current.get("pid") == process.pid and current.get("state") != "exited":
            return {"pid": process.pid, "started": True}
        if _serving_elsewhere(layout, current, process.pid, since=checked - 1.0):
            # Another start won the folder: say so now, not after our runner's lock
            # retries, and stop ours, or it would take the folder over once the winner ends.
            process.terminate()
            process.wait(5)
            return {"pid": current["pid"], "started": False}
        if process.poll() is not None:
            if runner_alive(layout):  # another start won the folder: that one serves
                return {"pid": (read_json(layout.runner_json) or {}).get("pid"), "started": False}
            raise HarnessError(f"the runner exited at start with code {process.returncode}; "
                               f"see {layout.runner_log}")
        time.sleep(0.01)
    raise HarnessError(f"the runner did not start within {START_TIMEOUT:.0f} s; see {layout.runner_log}")


def _serving_elsewhere(layout: Layout, current: dict, ours: int, since: float) -> bool:
    """Whether runner.json names another live runner, started since `since` (not a stale
    record whose pid was reused), and the folder's lock is held."""
    pid = current.get("pid")
    if not isinstance(pid, int) or pid == ours or current.get("state") == "exited":
        return False
    if not isinstance(current.get("started_at"), int | float) or current["started_at"] < since:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, another user's
    return runner_alive(layout)


def _task_state(layout: Layout, key: str) -> dict:
    folder = layout.task(key)
    if (folder / "result.json").exists():
        return {"state": "finished", "heartbeat": None}
    status = read_json(folder / "status.json")
    if status is not None:
        return {"state": "running", "heartbeat": status.get("heartbeat")}
    if layout.marker(key).exists() or (folder / "task.json").exists():
        return {"state": "queued", "heartbeat": None}
    return {"state": "missing", "heartbeat": None}


def poll(workdir: str | os.PathLike, keys: list[str], space: str | None = None) -> dict:
    """The runner's liveness and each task's state: queued, running, finished or missing."""
    layout = Layout(workdir, space)
    runner = read_json(layout.runner_json) or {}
    return {
        "runner": {"pid": runner.get("pid"), "alive": runner_alive(layout),
                   "heartbeat": runner.get("heartbeat")},
        "now": time.time(),
        "tasks": {key: _task_state(layout, key) for key in keys},
    }


def pack(workdir: str | os.PathLike, out: str | os.PathLike, keys: list[str],
         space: str | None = None) -> dict:
    """A tar at OUT of the finished tasks' result.json, predictions and output.log."""
    return _pack(Layout(workdir, space), Path(out), keys)


def cleanup(workdir: str | os.PathLike, keys: list[str], space: str | None = None) -> dict:
    """Remove finished or queued task folders; a running task is left alone (cancel it first)."""
    layout = Layout(workdir, space)
    removed, running = [], []
    for key in keys:
        folder = layout.task(key)
        claim(layout.marker(key))
        if (folder / "status.json").exists() and not (folder / "result.json").exists():
            running.append(key)
            continue
        if folder.exists():
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(key)
    return {"removed": removed, "running": running}


def cancel(workdir: str | os.PathLike, keys: list[str], space: str | None = None) -> dict:
    """Kill these tasks' trees; each ends failed with kind `cancelled`. Returns key -> state."""
    layout = Layout(workdir, space)
    states: dict[str, str] = {}
    waiting = []
    for key in keys:
        folder = layout.task(key)
        if (folder / "result.json").exists():
            states[key] = "finished"
            continue
        if not folder.is_dir():
            states[key] = "missing"
            continue
        (folder / "cancel").touch()
        if claim(layout.marker(key)):  # still queued: it never started
            write_result(folder, failed_result(key, "cancelled", "cancelled by the organiser"))
            states[key] = "cancelled"
        else:
            waiting.append(key)
    # Wait for the runner to kill the trees only if it is awake: a frozen runner (stopped
    # host, swapping machine) would outlast the caller's timeout, and the trees live on.
    beat = (read_json(layout.runner_json) or {}).get("heartbeat") if waiting else None
    alive = bool(waiting) and runner_alive(layout) and isinstance(beat, int | float) \
        and time.time() - beat < RUNNER_AWAKE
    deadline = time.monotonic() + CANCEL_WAIT
    while waiting and alive and time.monotonic() < deadline:
        waiting = [key for key in waiting if not (layout.task(key) / "result.json").exists()]
        time.sleep(0.02)
    for key in keys:
        if key in states:
            continue
        folder = layout.task(key)
        if (folder / "result.json").exists():
            result = read_json(folder / "result.json") or {}
            states[key] = "cancelled" if result.get("error_kind") == "cancelled" else "finished"
            continue
        # No runner to do it: kill the task's session ourselves and record the end.
        status = read_json(folder / "status.json") or {}
        pid = status.get("pid")
        if isinstance(pid, int) and still_the_task(pid, status.get("pid_start")):
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        init = status.get("init")  # a sandboxed task's namespace dies with its init
        if isinstance(init, int) and still_the_process(init, status.get("init_start")):
            try:
                os.kill(init, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        write_result(folder, failed_result(
            key, "cancelled", "cancelled by the organiser", status.get("started_at")))
        (folder / "status.json").unlink(missing_ok=True)
        states[key] = "cancelled"
    return {"tasks": states}


def still_the_task(pid, pid_start) -> bool:
    """Whether `pid` is still the task's process that status.json recorded: the same start
    time, and still the leader of its process group (the task's session), so that killing
    that group kills the task and nothing else. A pid reused since, a record without its
    start time, or a forged one names some other process: it is never killed."""
    if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 1:
        return False
    if isinstance(pid_start, bool) or not isinstance(pid_start, int):
        return False
    return process_start(pid) == pid_start and process_group(pid) == pid


def still_the_process(pid, pid_start) -> bool:
    """Whether `pid` still has the start time recorded for it (not a reused pid)."""
    if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 1:
        return False
    if isinstance(pid_start, bool) or not isinstance(pid_start, int):
        return False
    return process_start(pid) == pid_start


def log(workdir: str | os.PathLike, key: str, space: str | None = None) -> dict:
    """The task's captured output so far (head and tail, capped)."""
    layout = Layout(workdir, space)
    folder = layout.task(check_key(key))
    if not folder.is_dir():
        raise HarnessError(f"no task {key} on this host")
    if layout.is_sensitive((read_json(folder / "task.json") or {}).get("data")):
        raise HarnessError(f"task {key} is of a sensitive problem: its output stays on this host")
    try:
        return {"log": (folder / "output.log").read_text(errors="replace")}
    except FileNotFoundError:
        return {"log": ""}


def _disk_bytes(path: Path) -> int:
    """What a folder holds on disk, as `du` counts it (allocated blocks, links not followed)."""
    total, stack = 0, [os.fspath(path)]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except OSError:  # gone meanwhile, or not ours to read
            continue
        for entry in entries:
            try:
                total += entry.stat(follow_symlinks=False).st_blocks * 512
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
            except OSError:
                continue
    return total


def _task_names(layout: Layout) -> list[str]:
    try:
        return sorted(entry.name for entry in os.scandir(layout.tasks) if entry.is_dir(follow_symlinks=False))
    except FileNotFoundError:
        return []


def usage(workdir: str | os.PathLike, space: str | None = None) -> dict:
    """How WORKDIR's disk is shared: the caches every workspace uses, this workspace's
    folder, and how many other workspaces have folders there and what they hold (counts
    and bytes only: nothing of their tasks is read or told)."""
    layout = Layout(workdir, space)
    others, others_bytes = 0, 0
    try:
        spaces = [entry for entry in os.scandir(layout.spaces) if entry.is_dir(follow_symlinks=False)]
    except FileNotFoundError:
        spaces = []
    seen = set()
    for entry in spaces:
        # `<id>-floor` is workspace <id>'s folder for its empty task (floor.py): the same user.
        owner = entry.name.removesuffix(FLOOR_SUFFIX)
        if owner != layout.space_id:
            if owner not in seen:
                seen.add(owner)
                others += 1
            others_bytes += _disk_bytes(Path(entry.path))
    mine = None
    if layout.space_id is not None:
        mine = {"id": layout.space_id, "bytes": _disk_bytes(layout.space),
                "tasks": len([name for name in _task_names(layout) if not name.startswith(".")])}
        # Tasks left at WORKDIR/tasks by a datarun older than workspace folders: one more user.
        older = Layout(workdir)
        if _task_names(older):
            others += 1
            others_bytes += _disk_bytes(older.tasks) + _disk_bytes(older.inbox)
    return {
        "workdir": str(layout.root),
        "shared_bytes": _disk_bytes(layout.harness) + _disk_bytes(layout.data),
        "workspace": mine,
        "other_workspaces": others,
        "other_bytes": others_bytes,
    }


def clean(workdir: str | os.PathLike, keep: Sequence[str] = (), force: bool = False,
          space: str | None = None) -> dict:
    """Remove this workspace's task folders, but those in `keep`: finished ones, queued ones
    (their markers taken back first, so they never start) and what an interrupted `accept`
    left. A running one is left alone unless `force`: then it is cancelled (its tree
    killed, as `cancel` does) and removed. Only this workspace's folder is looked at."""
    layout = Layout(workdir, space)
    keeping = {check_key(key) for key in keep}
    names = set(_task_names(layout)) | set(layout.inbox_keys())
    removed, running, kept, freed = [], [], [], 0
    for name in sorted(names):
        folder = layout.tasks / name
        if name.startswith(".tmp-"):  # half an accept, never renamed into place
            freed += _disk_bytes(folder)
            shutil.rmtree(folder, ignore_errors=True)
            continue
        if not KEY_PATTERN.match(name) or name.startswith("."):
            continue
        if name in keeping:
            kept.append(name)
            continue
        if _task_state(layout, name)["state"] == "running":
            if not force:
                running.append(name)
                continue
            cancel(workdir, [name], space=space)
        claim(layout.marker(name))
        if folder.is_dir():
            freed += _disk_bytes(folder)
            shutil.rmtree(folder, ignore_errors=True)
        removed.append(name)
    return {"removed": removed, "running": running, "kept": sorted(kept), "freed": freed}
