"""The host working folder's layout and the small file habits every harness part shares.

Everything the organiser and the runner exchange is a file in WORKDIR (docs/PROTOCOL.md);
the helpers here keep the writes atomic (tmp + rename) so a reader never sees half a
JSON file, and keep the runner's single lock in one place.
"""

import errno
import fcntl
import json
import os
import re
import shutil
import stat
import time
from pathlib import Path

KEY_PATTERN = re.compile(r"^[A-Za-z0-9_.-]+$")
ERROR_TAIL = 4096  # bytes of traceback kept in result.json

ERROR_KINDS = (
    "import_error", "fit_error", "predict_error", "bad_predictions", "memory_limit",
    "cpu_limit", "timeout", "harness_error", "cancelled", "disk_full",
)
# The host's disk filled up under a task: the host's fault, never the team's. The organiser
# puts such a task back in the queue as lost on its host; no task row ever keeps this kind.
DISK_FULL = "disk_full"


class HarnessError(Exception):
    """A request the harness refuses; its message is one line that says what is wrong."""


def check_key(key: str, what: str = "task key") -> str:
    if not isinstance(key, str) or not KEY_PATTERN.match(key) or key in (".", ".."):
        raise HarnessError(f"bad {what} {key!r}: use only letters, digits, '_', '.' and '-'")
    return key


class Layout:
    """The paths of one host working folder, as seen by one workspace.

    WORKDIR is shared by every workspace that uses the host account: the content-addressed
    caches (`harness/<hash>`, `data/<hash>`) live at its root, once for all of them. What
    belongs to one workspace lives in its own folder, `workspaces/<id>/` (`space`): its task
    folders, its inbox, and its runner's lock, record, log and wake FIFO, so one runner
    serves one workspace and no command given for one workspace reaches another's tasks.
    Without an id (the harness driven by hand) that folder is WORKDIR itself.
    """

    SPACES = "workspaces"
    COMPLETE = ".complete"  # written last into a data set or harness folder: it is whole
    ARCHIVE_FOLDERS = ("tasks", "data")  # an archive for `accept`: tasks/<key>/, data/<hash>/
    RESULT_FILES = ("result.json", "output.log")  # with y_pred_*.npy: what a finished task gives back

    def __init__(self, workdir: str | os.PathLike, space: str | None = None):
        self.root = Path(workdir).expanduser().absolute()
        self.harness = self.root / "harness"
        self.data = self.root / "data"
        self.spaces = self.root / self.SPACES
        self.space_id = check_key(space, "workspace id") if space is not None else None
        self.space = self.spaces / space if space is not None else self.root
        self.tasks = self.space / "tasks"
        self.inbox = self.space / "inbox"
        self.jails = self.space / "jail"
        self.runner_json = self.space / "runner.json"
        self.runner_lock = self.space / "runner.lock"
        self.runner_log = self.space / "runner.log"
        self.wake = self.space / "wake"  # a FIFO the runner reads: a byte there means "look now"

    def make(self) -> "Layout":
        private_folder(self.root)
        for folder in (self.data, self.space, self.tasks, self.inbox):
            folder.mkdir(parents=True, exist_ok=True)
        return self

    def task(self, key: str) -> Path:
        return self.tasks / check_key(key)

    def marker(self, key: str) -> Path:
        return self.inbox / check_key(key)

    def staging_marker(self, key: str) -> Path:
        """Where a marker is written before it is renamed into place (`inbox_keys` skips it)."""
        return self.inbox / f".{check_key(key)}"

    def data_set(self, digest: str) -> Path:
        return self.data / check_key(digest, "data hash")

    def harness_copy(self, digest: str) -> Path:
        return self.harness / check_key(digest, "harness hash")

    @classmethod
    def is_complete(cls, folder: Path) -> bool:
        return (folder / cls.COMPLETE).exists()

    @classmethod
    def mark_complete(cls, folder: Path) -> None:
        (folder / cls.COMPLETE).touch()

    def is_sensitive(self, data_hash) -> bool:
        """Whether a data set is a sensitive one its owner prepared here (sensitive.py)."""
        return isinstance(data_hash, str) and KEY_PATTERN.match(data_hash) is not None and (
            self.root / "sensitive" / data_hash).is_dir()

    def has_result(self, key: str) -> bool:
        return (self.task(key) / "result.json").exists()

    def result_files(self, key: str) -> list[Path]:
        """The files of a finished task that go back to the organiser: result.json, output.log
        and the predictions, regular files only (a link is never followed out of the folder)."""
        folder = self.task(key)
        data_hash = (read_json(folder / "task.json") or {}).get("data")
        if self.is_sensitive(data_hash):
            # A sensitive problem's task: scored here, its predictions and output kept here;
            # only its result.json leaves the host, and only once sealed
            # (sensitive.result_files seals it first).
            sealed = (read_json(folder / "result.json") or {}).get("sealed") is True
            return [folder / "result.json"] if sealed and _regular(folder / "result.json") else []
        paths = [folder / name for name in self.RESULT_FILES]
        paths += sorted(folder.glob("y_pred_*.npy"))
        return [path for path in paths if _regular(path)]

    def inbox_keys(self) -> list[str]:
        """Queued keys, oldest marker first, so tasks run in the order they arrived."""
        try:
            entries = list(os.scandir(self.inbox))
        except FileNotFoundError:
            return []
        stamped = []
        for entry in entries:
            # A name starting with "." is a marker still being written (renamed into place).
            if entry.name.startswith(".") or not KEY_PATTERN.match(entry.name):
                continue
            try:
                stamped.append((entry.stat().st_mtime, entry.name))
            except FileNotFoundError:
                continue
        return [name for _, name in sorted(stamped)]


def _regular(path: Path) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def private_folder(path: Path) -> None:
    """WORKDIR as its owner's alone (0700): made so, or tightened if it is looser.

    Other users of a shared host must not read the submissions, data and results in it. A
    folder that is not this user's, or a shared one (sticky bit, like /tmp), is refused
    rather than taken over."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        path.mkdir(mode=0o700)
    except FileExistsError:
        pass
    info = os.stat(path)
    if not stat.S_ISDIR(info.st_mode):
        raise HarnessError(f"workdir {path} is not a folder: give datarun a folder of its own")
    if info.st_mode & stat.S_ISVTX:
        raise HarnessError(f"workdir {path} is a shared folder (sticky bit, like /tmp): give "
                           "datarun a folder of its own inside it")
    if info.st_uid != os.geteuid():
        raise HarnessError(f"workdir {path} belongs to uid {info.st_uid}, not to this user "
                           f"(uid {os.geteuid()}): give datarun a folder of its own")
    if stat.S_IMODE(info.st_mode) != 0o700:
        os.chmod(path, 0o700)


def make_read_only(folder: Path) -> None:
    """Files 0444 and folders 0555 under FOLDER (a data set, the harness), once shipped:
    nothing that runs as the host's user rewrites them by mistake or on purpose."""
    for root, _dirs, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            if not os.path.islink(path):
                os.chmod(path, 0o444)
        os.chmod(root, 0o555)


def is_disk_full(error: BaseException) -> bool:
    """ENOSPC or a quota, or numpy's short write (no errno, only its text)."""
    if not isinstance(error, OSError):
        return False
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    if isinstance(error, shutil.Error):  # copytree gathers its files' errors as text
        return any("[Errno 28]" in str(item) or "No space left" in str(item) for item in error.args[0])
    text = str(error)
    return error.errno is None and "requested and" in text and "written" in text


def disk_full_text(folder: Path | str) -> str:
    """"no space left on the device of FOLDER (N MB free)": one line, for the organiser."""
    try:
        stat_ = os.statvfs(folder)
        free = f"{stat_.f_bavail * stat_.f_frsize / 1e6:.1f} MB free"
    except OSError:
        free = "free space unknown"
    return f"no space left on the device of {folder} ({free})"


def write_json(path: Path, data: dict) -> None:
    """Write JSON atomically: a reader sees the old file or the new one, never a mix."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w") as handle:
            json.dump(data, handle, default=str)
        os.replace(tmp, path)
    except BaseException:
        try:  # a full disk leaves no half-written temporary file behind
            os.unlink(tmp)
        except OSError:
            pass
        raise


def read_json(path: Path) -> dict | None:
    try:
        with open(path) as handle:
            return json.load(handle)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except ValueError:
        return None


def task_nonce(folder: Path) -> str | None:
    """The attempt's nonce, from the task's task.json (None when it has none)."""
    nonce = (read_json(folder / "task.json") or {}).get("nonce")
    return nonce if isinstance(nonce, str) else None


def write_result(folder: Path, result: dict) -> None:
    """A task's result.json, carrying the nonce its task.json was given: the organiser takes
    a result only with the nonce it gave that attempt, so a result left by another attempt,
    another workspace or anyone else is refused, whatever folder it is found in."""
    write_json(folder / "result.json", dict(result, nonce=task_nonce(folder)))


def claim(path: Path) -> bool:
    """Remove a marker; True only for the one process whose unlink succeeded."""
    try:
        os.unlink(path)
        return True
    except FileNotFoundError:
        return False


def tail_text(text: str, limit: int = ERROR_TAIL) -> str:
    data = text.encode("utf-8", "replace")
    if len(data) <= limit:
        return text
    return "..." + data[-limit:].decode("utf-8", "ignore")


def try_lock(path: Path, attempts: int = 1, pause: float = 0.05) -> int | None:
    """The runner lock's fd if we got it, else None.

    Several attempts because `poll` and `start` probe the lock for a moment: a runner
    starting at that instant must not mistake a probe for a live runner.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    for attempt in range(attempts):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except OSError as error:
            if error.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                os.close(fd)
                raise
            if attempt + 1 < attempts:
                time.sleep(pause)
    os.close(fd)
    return None


def wake_runner(layout: Layout) -> None:
    """Tell the runner that its inbox changed, so it starts the new tasks now rather than
    at its next tick. Harmless when no runner listens (opening the FIFO then fails)."""
    try:
        fd = os.open(layout.wake, os.O_WRONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
    except OSError:  # no FIFO yet, or nobody reading it (ENXIO)
        return
    try:
        os.write(fd, b"\0")
    except OSError:  # the pipe is full: wake-ups are pending already
        pass
    finally:
        os.close(fd)


def open_wake_fifo(layout: Layout) -> int | None:
    """The runner's end of the wake FIFO, opened read-write so it never reads end-of-file;
    None when it cannot be made (a folder in the way, a filesystem without FIFOs): the
    runner then finds new tasks at its next tick, as it would without it."""
    import stat

    try:
        try:
            if not stat.S_ISFIFO(os.lstat(layout.wake).st_mode):
                os.unlink(layout.wake)
                raise FileNotFoundError
        except FileNotFoundError:
            os.mkfifo(layout.wake, 0o600)
        return os.open(layout.wake, os.O_RDWR | os.O_NONBLOCK | os.O_NOFOLLOW)
    except OSError:
        return None


def release_if_idle(layout: Layout, lock_fd: int) -> bool:
    """Let the lock go; True to exit. Takes it back if a task arrived meanwhile (the race
    where `start` saw the lock still held and so started no runner for that task)."""
    fcntl.flock(lock_fd, fcntl.LOCK_UN)
    if not layout.inbox_keys():
        return True
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True  # a new runner took the folder over and will run the task
    return False


def runner_alive(layout: Layout) -> bool:
    """True while some runner holds WORKDIR's lock (the lock dies with its holder)."""
    if not layout.runner_lock.exists():
        return False
    fd = try_lock(layout.runner_lock)
    if fd is None:
        return True
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)
    return False


def process_start(pid: int) -> int | None:
    """When process `pid` started, in clock ticks since boot (/proc/<pid>/stat field 22),
    or None if there is no such process. A pid is reused; a pid with its start time is not."""
    try:
        with open(f"/proc/{int(pid)}/stat", "rb") as handle:
            text = handle.read().decode("ascii", "replace")
    except (OSError, ValueError):
        return None
    # The command name (field 2) is in parentheses and may hold anything, ")" included.
    fields = text[text.rfind(")") + 2:].split()
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None


def process_group(pid: int) -> int | None:
    """The process group of `pid` (/proc/<pid>/stat field 5), or None."""
    try:
        with open(f"/proc/{int(pid)}/stat", "rb") as handle:
            text = handle.read().decode("ascii", "replace")
        return int(text[text.rfind(")") + 2:].split()[2])
    except (OSError, ValueError, IndexError):
        return None


def failed_result(key: str, kind: str, error: str, started_at: float | None = None) -> dict:
    """A result.json for a task that produced no predictions."""
    now = time.time()
    return {
        "key": key, "state": "failed", "error_kind": kind, "error": tail_text(error),
        "train_time": None, "valid_time": None, "test_time": None,
        "wall_time": (now - started_at) if started_at else 0.0, "cpu_time": 0.0,
        "peak_memory": 0, "started_at": started_at or now, "finished_at": now,
        "predictions": None, "environment": environment(),
    }


def environment() -> dict:
    """Where a result was produced; versions from metadata, so nothing heavy is imported."""
    import platform
    import socket

    from . import HARNESS_VERSION

    versions = library_versions()
    return {
        "hostname": socket.gethostname(), "python": platform.python_version(),
        "numpy": versions["numpy"], "pandas": versions["pandas"],
        "sklearn": versions["sklearn"], "psutil": versions["psutil"],
        "harness": HARNESS_VERSION,
    }


_DISTRIBUTIONS = {
    "numpy": "numpy", "pandas": "pandas", "sklearn": "scikit-learn", "psutil": "psutil",
    "rampwf": "ramp-workflow", "joblib": "joblib", "threadpoolctl": "threadpoolctl",
}
_versions_cache: dict | None = None


def library_versions() -> dict:
    global _versions_cache
    if _versions_cache is None:
        from importlib import metadata

        found: dict[str, str | None] = {}
        for name, dist in _DISTRIBUTIONS.items():
            try:
                found[name] = metadata.version(dist)
            except metadata.PackageNotFoundError:
                found[name] = None
        _versions_cache = found
    return dict(_versions_cache)
