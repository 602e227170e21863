"""The sandbox every task runs in, unless its host says `isolation = "none"`.

The runner forks one process (A) per sandbox, ahead of the task that will use it (a
spare, see runner.py and child.run_spare). A enters new user, mount, PID, IPC, UTS and
network namespaces, spawns the namespace's PID 1 (`sleep`, exec'd without capabilities:
it only holds the namespace), builds the read-only skeleton of the task's file system,
forks the task's process (C), tells the runner both pids and exits (`prepare`). C and the
init come back to the runner (a child subreaper). C waits on a pipe until the runner
hands it a task; then it mounts the task's folder and /proc for its namespace, moves into
the new root (pivot_root), drops every capability and runs the submission (`enter_task`).
Processes orphaned inside the namespace go to the init; when C ends, the runner kills the
init, and the kernel kills every process left in the namespace and reaps them into the
init's rusage, which the runner reaps last. The runner's wait4 therefore counts the CPU
time of every process the task ever started, and nothing outlives a task.

Why ahead of the task: every fork of a process the runner's size costs 13-40 ms on a
loaded 2-core VM (bench/overhead.py), and a sandbox needs two (C must be a child of the
process that made the PID namespace); made while the previous task runs, neither is on
the next task's path, which starts by writing its files down C's pipe. Why the init is an
exec'd `sleep` and not a fork of the harness that reaps orphans as they die, and why A
does not wait: a fork and an exit of a process the runner's size cost that much again;
spawning `sleep` costs under a millisecond. What a reaping init would add: a task that
orphans many short-lived processes keeps their zombies (no memory, a pid each) until it
ends. The task is not PID 1 itself, so signals it sends itself work as anywhere else.

Who the task is:
- runner not root: an unprivileged user namespace mapping uid 0 inside to the runner's
  uid, so the task has no more rights on the host than the runner (less: see below);
- runner root: the task's uid outside is the seat's own (TASK_UID_BASE + seat, no
  groups), mapped to uid 0 inside, so concurrent tasks are different users on the host
  too (see `enter` for the order of the steps, and why).
C then drops every capability (effective, permitted, inheritable, ambient, bounding set),
locks the securebits that would give them back to uid 0, and sets no-new-privileges.

What the task sees (everything else of the host is simply not there):
- the Python installation(s) the runner uses and the system's /usr (with /bin, /lib...
  links or binds as on the host), read-only, at the same paths;
- /etc with only ld.so.cache, localtime and a passwd, group, hosts and nsswitch.conf
  written for it;
- /task, its folder: a tmpfs of the task's disk cap holding a copy of the submission and
  the fold indices; /tmp, /var/tmp and /dev/shm are folders of that same tmpfs;
- /dev/null, zero, full, random, urandom; /proc of its own PID namespace;
- no network (an empty network namespace), a hostname of its own, a fixed environment.

The runner's WORKDIR, the data sets, other tasks, home folders, keys and /run are not in
that tree. Results go back over a pipe (see channel.py); the runner writes them.
"""

import ctypes
import os
import platform
import resource
import signal
import struct
import sys
from collections.abc import Sequence

ISOLATIONS = ("sandbox", "none")
ALIASES = {"user": "sandbox"}  # the name of the root-only isolation of earlier versions
TASK_UID_BASE = 2_000_000  # uid and gid outside the sandbox of the task in seat i (root runner)
DEFAULT_DISK = 1024**3  # bytes a task may write in all (the size of its tmpfs)
DEFAULT_PROCESSES = 256  # processes (and threads) a task may have at once
ROOT_SIZE = 4 * 1024**2  # the tmpfs holding the skeleton of the task's root
HOSTNAME = "sandbox"
TASK_DIR = "/task"
SCRATCH = ".scratch"  # /task/.scratch is /tmp, /var/tmp and /dev/shm

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
NAMESPACES = CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWNET
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_NOATIME, MS_NODIRATIME, MS_BIND = 32, 1024, 2048, 4096
MS_REC, MS_PRIVATE, MS_RELATIME = 16384, 1 << 18, 1 << 21
MNT_DETACH = 2
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_CAPBSET_DROP = 1, 4, 24
PR_SET_SECUREBITS, PR_SET_NO_NEW_PRIVS, PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 28, 38, 47, 4
# NOROOT, NO_SETUID_FIXUP, NO_CAP_AMBIENT_RAISE, and the locks of those and of KEEP_CAPS.
SECUREBITS = 0b11101111
SECBIT_NOROOT = 1
CAPABILITY_VERSION_3 = 0x20080522
SYSCALLS = {"x86_64": {"pivot_root": 155, "capset": 126},
            "aarch64": {"pivot_root": 41, "capset": 91}}
DEVICES = ("null", "zero", "full", "random", "urandom")
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
ETC_BINDS = ("/etc/ld.so.cache", "/etc/localtime")
ETC_FILES = {
    "passwd": "root:x:0:0:task:/tmp:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    "group": "root:x:0:\nnogroup:x:65534:\n",
    "hosts": "127.0.0.1 localhost\n::1 localhost\n",
    "nsswitch.conf": "passwd: files\ngroup: files\nhosts: files\n",
}
# Folders never bound even when on sys.path: the host's scratch and run-time folders.
NEVER_BOUND = ("/", "/tmp", "/var/tmp", "/dev/shm", "/run", "/home", "/root", "/etc", "/var")
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                    "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS")


class SandboxError(Exception):
    """A sandbox was asked for and cannot be had; one line saying what to fix."""


def mode(task: dict) -> str:
    """The task's isolation, "sandbox" unless task.json says "none"; refuses other values."""
    value = task.get("isolation") or "sandbox"
    value = ALIASES.get(value, value)
    if value not in ISOLATIONS:
        raise SandboxError(f"task.json isolation must be one of {', '.join(ISOLATIONS)}, got {value!r}")
    return value


def task_disk(task: dict) -> int:
    return int((task.get("limits") or {}).get("disk") or DEFAULT_DISK)


def task_processes(task: dict) -> int:
    return int((task.get("limits") or {}).get("processes") or DEFAULT_PROCESSES)


def task_environment(threads: int, devices: list[int] | None = None) -> dict[str, str]:
    """The whole environment of a sandboxed task: nothing is inherited."""
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/tmp", "TMPDIR": "/tmp",
           "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "USER": "root", "LOGNAME": "root"}
    env.update({name: str(int(threads)) for name in THREAD_VARIABLES})
    env.update(device_environment(devices or []))
    return env


GPU_VARIABLES = ("CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES")
GPU_SHARED_DEVICES = ("nvidiactl", "nvidia-uvm", "nvidia-uvm-tools", "nvidia-modeset")


def device_environment(devices: list[int]) -> dict[str, str]:
    """The GPUs a task may use, by index: the ones its dispatcher gave it, none for a CPU
    task (an empty value hides every GPU from CUDA)."""
    value = ",".join(str(int(index)) for index in devices)
    return {name: value for name in GPU_VARIABLES}


def gpu_device_files(devices: list[int]) -> list[str]:
    """The device files a sandboxed task with these GPUs needs: its own /dev/nvidiaN and
    the driver's shared ones, those that exist; nothing for a CPU task."""
    if not devices:
        return []
    names = [f"nvidia{int(index)}" for index in devices] + list(GPU_SHARED_DEVICES)
    return [f"/dev/{name}" for name in names if os.path.exists(f"/dev/{name}")]


def seat_uids(count: int = 64) -> bool:
    """Whether tasks get uids of their own (TASK_UID_BASE + seat): the runner is root and
    those uids exist in its user namespace (in a container, root may see only a few)."""
    if os.geteuid() != 0:
        return False
    try:
        with open("/proc/self/uid_map") as handle:
            for line in handle:
                inside, _, length = (int(part) for part in line.split())
                if inside <= TASK_UID_BASE and TASK_UID_BASE + count <= inside + length:
                    return True
    except (OSError, ValueError):
        return False
    return False


# --- system calls ---------------------------------------------------------------------

_libc = None


def _lib():
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


def _check(what: str, rc: int) -> None:
    if rc != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def _b(text: str | None) -> bytes | None:
    return text.encode() if text is not None else None


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    _check(f"mount {target}", _lib().mount(_b(source), _b(target), _b(fstype), ctypes.c_ulong(flags),
                                          _b(data)))


def _prctl(option: int, arg: int = 0) -> None:
    _check(f"prctl {option}", _lib().prctl(option, ctypes.c_ulong(arg), 0, 0, 0))


def _syscall(name: str, *args) -> int:
    numbers = SYSCALLS.get(platform.machine())
    if numbers is None:
        raise SandboxError(f"the sandbox does not know the system calls of {platform.machine()}")
    return _lib().syscall(numbers[name], *args)


def _write(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


_STATVFS_FLAGS = ((os.ST_RDONLY, MS_RDONLY), (os.ST_NOSUID, MS_NOSUID), (os.ST_NODEV, MS_NODEV),
                  (os.ST_NOEXEC, MS_NOEXEC), (os.ST_NOATIME, MS_NOATIME),
                  (os.ST_NODIRATIME, MS_NODIRATIME), (os.ST_RELATIME, MS_RELATIME))


def _read_only(target: str) -> None:
    """Remount a bind read-only, keeping the flags a user namespace may not clear."""
    flags = 0
    current = os.statvfs(target).f_flag
    for st_flag, ms_flag in _STATVFS_FLAGS:
        if current & st_flag:
            flags |= ms_flag
    _mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV | flags)


# --- the plan: what of the host a task sees (made once per runner) -------------------

def plan(hidden: Sequence[str] = (), private: Sequence[str] = ()) -> dict:
    """The host paths a sandboxed task gets, read-only: {"dirs", "links", "files", "devices"}.

    `hidden`: sys.path folders never bound (the harness's own folder: the task needs none
    of it, the runner imported what it needs before forking); `private`: folders nothing
    is bound from, whatever lies inside them (WORKDIR)."""
    hidden = [os.path.realpath(path) for path in hidden]
    private = [os.path.realpath(path) for path in private]
    dirs: list[str] = []
    links: dict[str, str] = {}
    for path in SYSTEM_DIRS:
        if os.path.islink(path):
            links[path] = os.readlink(path)
        elif os.path.isdir(path):
            dirs.append(path)
    own_env = os.path.realpath(sys.prefix) if sys.prefix != sys.base_prefix else None
    python = [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
              os.path.dirname(os.path.dirname(os.path.realpath(sys.executable)))]
    for path in python + [entry for entry in sys.path if entry]:
        real = os.path.realpath(path)
        if not os.path.isdir(real) or real in NEVER_BOUND:
            continue
        if real in hidden:
            continue
        # The runner's own virtual environment (`host setup` makes it in WORKDIR/envs) is a
        # Python installation it uses: bound read-only like one, though inside WORKDIR.
        in_own_env = own_env is not None and (real == own_env or real.startswith(own_env + os.sep))
        if not in_own_env and any(real == p or real.startswith(p + os.sep) for p in private):
            continue
        dirs.append(real)
    # Each folder once, and none inside another one already bound.
    chosen: list[str] = []
    for path in sorted(set(dirs), key=len):
        if not any(path == c or path.startswith(c.rstrip("/") + "/") for c in chosen):
            chosen.append(path)
    files = [path for path in ETC_BINDS if os.path.exists(path)]
    devices = [f"/dev/{name}" for name in DEVICES if os.path.exists(f"/dev/{name}")]
    try:
        with open("/proc/sys/kernel/cap_last_cap") as handle:
            last_cap = int(handle.read())
    except (OSError, ValueError):
        last_cap = 40
    return {"dirs": chosen, "links": links, "files": files, "devices": devices, "last_cap": last_cap}


def snapshot(folder: str) -> list[tuple[str, bytes | None]]:
    """The task folder's submission and fold indices, read before the sandbox exists:
    [(relative path, bytes or None for a folder)]."""
    found: list[tuple[str, bytes | None]] = []
    for name in ("train_idx.npy", "valid_idx.npy"):
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            with open(path, "rb") as handle:
                found.append((name, handle.read()))
    base = os.path.join(folder, "submission")
    found.append(("submission", None))
    for root, subdirs, names in os.walk(base):
        relative = os.path.relpath(root, folder)
        for sub in sorted(subdirs):
            found.append((os.path.join(relative, sub), None))
        for name in sorted(names):
            path = os.path.join(root, name)
            if os.path.islink(path) or not os.path.isfile(path):
                continue
            with open(path, "rb") as handle:
                found.append((os.path.join(relative, name), handle.read()))
    return found


# --- entering: A, B and C --------------------------------------------------------------

def _bind(source: str, target: str, directory: bool) -> None:
    if directory:
        os.makedirs(target, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o444))
    _mount(source, target, None, MS_BIND)


def _map_ids(uid: int, gid: int) -> None:
    _write("/proc/self/setgroups", "deny")
    _write("/proc/self/uid_map", f"0 {uid} 1\n")
    _write("/proc/self/gid_map", f"0 {gid} 1\n")


def _build_root(root: str, the_plan: dict) -> None:
    """The skeleton of the task's file system under ROOT (a fresh tmpfs), read-only:
    everything but the task folder, which `_mount_task` adds once the task is known."""
    _mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, f"size={ROOT_SIZE},mode=0755")
    for path in the_plan["dirs"]:
        if os.path.isdir(path):
            _bind(path, root + path, True)
            _read_only(root + path)
    for path, link in the_plan["links"].items():
        if not os.path.lexists(root + path):
            os.symlink(link, root + path)
    os.makedirs(root + "/etc", exist_ok=True)
    for path in the_plan["files"]:
        if os.path.exists(path):
            _bind(path, root + path, False)
            _read_only(root + path)
    for name, text in ETC_FILES.items():
        with open(f"{root}/etc/{name}", "w") as handle:
            handle.write(text)
    os.makedirs(root + "/dev", exist_ok=True)
    for path in the_plan["devices"]:
        _bind(path, root + path, False)
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                         ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):
        os.symlink(target, f"{root}/dev/{name}")
    for where in ("/proc", TASK_DIR, "/tmp", "/var/tmp", "/dev/shm"):  # mount points
        os.makedirs(root + where, exist_ok=True)
    # The skeleton itself is read-only; /task and the scratch folders mounted on it are not.
    _mount(None, root, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)


def _mount_task(root: str, files: list, disk: int, owner: int | None) -> None:
    """The task's folder: a tmpfs of its disk cap holding FILES, which is also its /tmp,
    /var/tmp and /dev/shm. OWNER: the uid outside that owns it (a root runner's seat
    uid), None for this process's."""
    task = root + TASK_DIR
    ids = f",uid={owner},gid={owner}" if owner is not None else ""
    _mount("tmpfs", task, "tmpfs", MS_NOSUID | MS_NODEV, f"size={int(disk)},mode=0755{ids}")
    scratch = f"{task}/{SCRATCH}"
    os.mkdir(scratch)
    os.chmod(scratch, 0o1777)
    for where in ("/tmp", "/var/tmp", "/dev/shm"):
        _mount(scratch, root + where, None, MS_BIND)
    for relative, data in files:
        path = os.path.join(task, relative)
        if data is None:
            os.makedirs(path, exist_ok=True)
        else:
            with open(path, "wb") as handle:
                handle.write(data)
        if owner is not None:
            os.chown(path, owner, owner)


def _drop_capabilities(last_cap: int) -> None:
    """No capability left in any set, and none that uid 0 or exec could bring back."""
    _prctl(PR_SET_SECUREBITS, SECUREBITS)
    for cap in range(last_cap + 1):
        _prctl(PR_CAPBSET_DROP, cap)
    _prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)
    header = struct.pack("Ii", CAPABILITY_VERSION_3, 0)
    data = bytes(24)
    _check("capset", _syscall("capset", ctypes.c_char_p(header), ctypes.c_char_p(data)))
    _prctl(PR_SET_NO_NEW_PRIVS, 1)


def _status_of(status: int) -> None:
    """End this process as STATUS says a child ended: same exit code, or same signal."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)
        os._exit(128 + sig)
    os._exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 1)


def _spawn_init() -> int:
    """PID 1 of the task's namespace: `sleep`, spawned without a copy of the runner's
    memory (vfork and exec) and without any capability (SECBIT_NOROOT while it execs)."""
    sleep = next((path for path in ("/usr/bin/sleep", "/bin/sleep") if os.path.exists(path)), None)
    if sleep is None:
        raise SandboxError("the sandbox needs /usr/bin/sleep (coreutils) for its init")
    _prctl(PR_SET_SECUREBITS, SECBIT_NOROOT)
    try:
        return os.posix_spawn(sleep, [sleep, "2147483647"], {"PATH": "/usr/bin:/bin"}, file_actions=[
            (os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDWR, 0),
            (os.POSIX_SPAWN_DUP2, 0, 1), (os.POSIX_SPAWN_DUP2, 0, 2)])
    finally:
        _prctl(PR_SET_SECUREBITS, 0)


ROOT = "/tmp"  # where the task's root is built: covered in its mount namespace only


def prepare(the_plan: dict, seats: bool, announce=None, wait_fd: int | None = None) -> None:
    """Called in A (the runner's fresh fork, its own session already): everything of a
    sandbox that does not depend on the task. Returns only in C, which then waits for its
    task and calls `enter_task`. A makes the namespaces, spawns the namespace's init,
    builds the read-only skeleton of the root, forks C, tells the runner both pids
    (`announce(task, init)`, before C goes on) and exits at once: both, orphaned, come
    back to the runner (a child subreaper), which reaps them.

    The runner makes one such process ahead of time (a spare, see runner.py), so the two
    forks and the mounts are off the task's path; the task's own part is a tmpfs, its
    files, pivot_root, its uid and dropping capabilities. Then A waits until WAIT_FD (the
    pipe C reads its task from) is readable before it announces and leaves; if the pipe
    closes with nothing in it (the spare was dropped, or the runner died), A kills the init
    instead, so the namespace and C die with it: nothing is left behind.

    Runner not root (`seats` false): A makes every namespace at once (the user namespace
    first, which gives it the rights to mount) and maps uid 0 inside to the runner's uid.
    Runner root (`seats`): A makes the mount and PID namespaces as root, so it can reach
    every path it binds; C drops to the seat's uid once it has mounted /proc and moved
    into the new root, and only then makes the user (uid 0 inside = seat uid), IPC, UTS
    and network namespaces. The task's mounts then belong to the host's root user:
    nothing in the sandbox can undo them, even with capabilities.
    """
    if not seats:
        uid, gid = os.geteuid(), os.getegid()
        _check("unshare", _lib().unshare(NAMESPACES))
        _map_ids(uid, gid)
    else:
        _check("unshare", _lib().unshare(CLONE_NEWNS | CLONE_NEWPID))
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    init = _spawn_init()
    _build_root(ROOT, the_plan)
    go_r, go_w = os.pipe()
    task = os.fork()
    if task:  # A: say who the task and its init are, let the task go, and leave
        os.close(go_r)
        if wait_fd is not None and not _task_arrives(wait_fd):
            os.kill(init, signal.SIGKILL)
            os._exit(0)
        if announce is not None:
            announce(task, init)
        os.write(go_w, b"g")
        os._exit(0)
    os.close(go_w)
    if os.read(go_r, 1) != b"g":  # A died before announcing it: nobody would reap the task
        os._exit(1)
    os.close(go_r)
    # A session of its own: kill(0, ...) reaches nothing outside the namespace (not A).
    os.setsid()


def _task_arrives(fd: int) -> bool:
    """Wait until FD has data (True) or is closed empty (False), reading nothing."""
    import select

    poller = select.poll()
    poller.register(fd, select.POLLIN | select.POLLHUP | select.POLLERR)
    while True:
        try:
            events = poller.poll()
        except InterruptedError:
            continue
        for _, event in events:
            if event & select.POLLIN:
                return True
            if event & (select.POLLHUP | select.POLLERR):
                return False


def enter_task(the_plan: dict, files: list, disk: int, processes: int, env: dict,
               seat_uid: int | None) -> None:
    """Called in C once its task is known (after `prepare`): the task folder with FILES,
    then into the new root for good, as the seat's uid (root runner), without any
    capability. Returns with cwd /task."""
    root = ROOT
    _mount_task(root, files, disk, seat_uid)
    _mount("proc", root + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    os.chdir(root)
    _check("pivot_root", _syscall("pivot_root", b".", b"."))
    _check("umount old root", _lib().umount2(b".", MNT_DETACH))
    if seat_uid is not None:
        os.setgroups([])
        os.setresgid(seat_uid, seat_uid, seat_uid)
        os.setresuid(seat_uid, seat_uid, seat_uid)
        _prctl(PR_SET_DUMPABLE, 1)  # its own /proc/self files again, to write its id maps
        _check("unshare", _lib().unshare(CLONE_NEWUSER | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWNET))
        _map_ids(seat_uid, seat_uid)
    _lib().sethostname(HOSTNAME.encode(), len(HOSTNAME))
    os.chdir(TASK_DIR)
    os.environ.clear()
    os.environ.update(env)
    resource.setrlimit(resource.RLIMIT_NPROC, (processes, processes))
    resource.setrlimit(resource.RLIMIT_FSIZE, (disk, disk))
    _drop_capabilities(the_plan["last_cap"])
    _prctl(PR_SET_DUMPABLE, 1)


def enter(the_plan: dict, files: list, disk: int, processes: int, env: dict,
          seat_uid: int | None, announce=None) -> None:
    """`prepare` and `enter_task` at once (the probe): returns only in C, in the sandbox."""
    prepare(the_plan, seat_uid is not None, announce)
    enter_task(the_plan, files, disk, processes, env, seat_uid)


# --- can this host sandbox? ------------------------------------------------------------

def probe() -> dict:
    """Try a sandbox for real in a throwaway child: {"ok", "reason"} in a few milliseconds."""
    try:
        with open("/proc/sys/user/max_user_namespaces") as handle:
            if int(handle.read()) <= 0:
                return {"ok": False, "reason": "user namespaces are off on this host "
                        "(/proc/sys/user/max_user_namespaces is 0): raise it, or set "
                        'isolation = "none" for trusted code'}
    except (OSError, ValueError):
        pass
    if not hasattr(os, "fork") or platform.system() != "Linux":
        return {"ok": False, "reason": f"the sandbox needs Linux, this host runs {platform.system()}"}
    if platform.machine() not in SYSCALLS:
        return {"ok": False, "reason": f"the sandbox does not know the system calls of "
                f"{platform.machine()}"}
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            os.close(read_fd)
            the_plan = plan()
            seat = TASK_UID_BASE if seat_uids() else None
            enter(the_plan, [], 1024**2, 16, task_environment(1), seat,
                  lambda task, init: os.write(write_fd, f"{task} {init}\n".encode()))
            if not os.path.isdir("/usr") or os.path.exists("/root/.ssh"):
                raise SandboxError("the sandbox's file system is not what it should be")
            os.write(write_fd, b"ok")
        except BaseException as error:  # every failure is the reason
            try:
                os.write(write_fd, f"{type(error).__name__}: {error}".encode()[:500])
            except OSError:
                pass
            code = 1
        os._exit(code)
    os.close(write_fd)
    chunks = []
    while True:
        chunk = os.read(read_fd, 4096)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(read_fd)
    os.waitpid(pid, 0)
    pids, _, answer = b"".join(chunks).partition(b"\n")
    for text in pids.split()[1:]:  # the namespace's init: it ends the namespace
        try:
            os.kill(int(text), signal.SIGKILL)
        except (OSError, ValueError):
            pass
    if not answer:
        pids, answer = b"", pids  # the probe failed before it had any process to report
    said = answer.decode(errors="replace")
    if said == "ok":
        return {"ok": True, "reason": None}
    return {"ok": False, "reason": f"a sandboxed process could not start here ({said or 'no answer'}): "
            'allow unprivileged user namespaces, or set isolation = "none" for trusted code'}
