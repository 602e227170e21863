"""Isolation mode (task.json `"isolation": "user"`): a task as an unprivileged user of its own.

A runner started as root can run a task:

- as a user id of its own (TASK_UID_BASE + the task's seat among the running tasks, with
  the same group id and no supplementary groups), so concurrent tasks cannot read or
  signal one another and RLIMIT_NPROC caps each task's processes separately;
- without network: the child enters a new, empty network namespace (only a loopback
  that is down) before it drops root, so no socket reaches anything, not even 127.0.0.1;
- in a private working folder: `WORKDIR/jail/<key>`, a tmpfs the runner mounts with the
  task's disk cap as its size, owned by the task's user, mode 0700. Inside the child's own
  mount namespace the jail is bound over /tmp, /var/tmp and /dev/shm (so joblib's
  temporary files and semaphores count against the same cap), and WORKDIR is covered by
  an empty read-only tmpfs: the data sets (with their training labels), the other tasks'
  folders and the runner's own files are not there to read. WORKDIR is also made 0700.

Dropping privileges happens in the forked child (the runner has numpy, scikit-learn and
the data in memory already, which the child inherits): unshare while still root, then
setgroups / setresgid / setresuid, then no-new-privileges. `Popen(user=...)` cannot be
combined with unshare here (EPERM), which is why it is done by hand.

The runner reads what the task leaves in its jail (its report, phase and predictions) as
root, so it opens those files without following links and with a size cap.
"""

import ctypes
import os
import resource
import shutil
import stat
from pathlib import Path

ISOLATIONS = ("none", "user")
TASK_UID_BASE = 2_000_000  # uid and gid of the task in seat i: TASK_UID_BASE + i
TASK_USER = "datarun-task"
DEFAULT_DISK = 1024**3  # bytes a task may write in all (its jail's size)
DEFAULT_PROCESSES = 256  # processes a task's user may have at once
HIDDEN_SIZE = 4096

CLONE_NEWNS = 0x00020000
CLONE_NEWNET = 0x40000000
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MNT_DETACH = 2
PR_SET_NO_NEW_PRIVS = 38
SCRATCH_FOLDERS = ("/tmp", "/var/tmp", "/dev/shm")


class IsolationError(Exception):
    """Isolation was asked for and cannot be had; one line saying what to fix."""


def wanted(task: dict) -> bool:
    """True when the task must run isolated; refuses a value it does not know."""
    mode = task.get("isolation") or "none"
    if mode not in ISOLATIONS:
        raise IsolationError(f"task.json isolation must be one of {', '.join(ISOLATIONS)}, got {mode!r}")
    return mode == "user"


def require_root() -> None:
    if os.geteuid() != 0:
        raise IsolationError(
            f'isolation = "user" needs the harness to run as root on the host (it runs as uid '
            f'{os.geteuid()}): log in as root there, or set isolation = "none" in hosts.toml')


_libc = None


def _lib():
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


def _call(what: str, rc: int) -> None:
    if rc != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def _bytes(text: str | None) -> bytes | None:
    return text.encode() if text is not None else None


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    _call(f"mount {target}", _lib().mount(_bytes(source), _bytes(target), _bytes(fstype),
                                          ctypes.c_ulong(flags), _bytes(data)))


def _umount(target: str) -> None:
    _call(f"umount {target}", _lib().umount2(target.encode(), MNT_DETACH))


def task_disk(task: dict) -> int:
    return int((task.get("limits") or {}).get("disk") or DEFAULT_DISK)


def task_processes(task: dict) -> int:
    return int((task.get("limits") or {}).get("processes") or DEFAULT_PROCESSES)


# --- the runner's side: jails ---------------------------------------------------------

def jail_root(workdir: Path) -> Path:
    return Path(workdir) / "jail"


def protect_workdir(workdir: Path) -> None:
    """WORKDIR readable by its owner only: a task's user finds nothing by path in it."""
    os.chmod(workdir, 0o700)
    jail_root(workdir).mkdir(mode=0o700, exist_ok=True)


def make_jail(workdir: Path, key: str, folder: Path, uid: int, disk: int) -> Path:
    """Mount the task's private tmpfs and copy in what the task reads from disk."""
    jail = jail_root(workdir) / key
    remove_jail(jail)
    jail.mkdir(mode=0o700)
    _mount("tmpfs", str(jail), "tmpfs", MS_NOSUID | MS_NODEV,
           f"size={int(disk)},mode=0700,uid={uid},gid={uid}")
    try:
        shutil.copytree(folder / "submission", jail / "submission")
        for name in ("train_idx.npy", "valid_idx.npy"):
            if (folder / name).is_file():
                shutil.copyfile(folder / name, jail / name)
        for path in [jail / "submission", *(jail / "submission").rglob("*"),
                     *jail.glob("*_idx.npy")]:
            os.chown(path, uid, uid, follow_symlinks=False)
    except BaseException:
        remove_jail(jail)
        raise
    return jail


def remove_jail(jail: Path) -> None:
    try:
        _umount(str(jail))
    except OSError:
        pass  # not mounted (or already gone)
    shutil.rmtree(jail, ignore_errors=True)


def remove_stale_jails(workdir: Path) -> None:
    """Jails a runner that died left mounted."""
    root = jail_root(workdir)
    if root.is_dir():
        for jail in root.iterdir():
            remove_jail(jail)


def read_file(path: Path, cap: int) -> bytes | None:
    """A regular file's bytes, never through a link, None when absent, odd or over the cap."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size > cap:
            return None
        with os.fdopen(fd, "rb", closefd=False) as handle:
            return handle.read(cap + 1)[:cap]
    finally:
        os.close(fd)


def copy_out(jail: Path, folder: Path, names: list[str], cap: int) -> None:
    """Copy the task's outputs from its jail into its task folder (plain files only)."""
    for name in names:
        data = read_file(jail / name, cap)
        if data is not None:
            tmp = folder / f".{name}.tmp"
            tmp.write_bytes(data)
            os.replace(tmp, folder / name)


# --- the child's side: entering -------------------------------------------------------

def enter(jail: Path, workdir: Path, uid: int, processes: int, disk: int) -> None:
    """In the forked child, as root: new namespaces, private scratch, WORKDIR hidden, then uid."""
    _call("unshare", _lib().unshare(CLONE_NEWNS | CLONE_NEWNET))
    # Mounts made from here on stay in this namespace.
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    # Held by a descriptor: once WORKDIR is covered (or /tmp, if WORKDIR is under it),
    # the jail's path leads elsewhere.
    fd = os.open(jail, os.O_PATH | os.O_DIRECTORY)
    _mount("tmpfs", str(workdir), "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV,
           f"size={HIDDEN_SIZE},mode=0555")
    for scratch in SCRATCH_FOLDERS:
        if os.path.isdir(scratch):
            _mount(f"/proc/self/fd/{fd}", scratch, None, MS_BIND)
    os.close(fd)
    os.chdir("/tmp")
    resource.setrlimit(resource.RLIMIT_NPROC, (processes, processes))
    resource.setrlimit(resource.RLIMIT_FSIZE, (disk, disk))
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)
    _call("no_new_privs", _lib().prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))
    os.environ.update(HOME="/tmp", TMPDIR="/tmp", USER=TASK_USER, LOGNAME=TASK_USER)
