"""The system calls, namespaces and mounts that make one sandbox (sandbox.py says when and
in which process each runs, and what the task then sees).

`plan` is what of the host a sandboxed task sees, worked out once per runner; `build_root`
makes the read-only skeleton of its root from it, `mount_task` adds the task's own
folder, `drop_capabilities` takes every capability away; `spawn_init` starts the PID
namespace's init. Plain ctypes calls into libc: nothing here needs a compiler or a helper
binary on the host.
"""

import ctypes
import os
import platform
import struct
import sys
from collections.abc import Sequence

ROOT_SIZE = 4 * 1024**2  # the tmpfs holding the skeleton of the task's root
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


class SandboxError(Exception):
    """A sandbox was asked for and cannot be had; one line saying what to fix."""


# --- system calls ---------------------------------------------------------------------

_libc = None


def lib():
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


def check(what: str, rc: int) -> None:
    if rc != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def as_bytes(text: str | None) -> bytes | None:
    return text.encode() if text is not None else None


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    check(f"mount {target}", lib().mount(as_bytes(source), as_bytes(target), as_bytes(fstype), ctypes.c_ulong(flags),
                                          as_bytes(data)))


def prctl(option: int, arg: int = 0) -> None:
    check(f"prctl {option}", lib().prctl(option, ctypes.c_ulong(arg), 0, 0, 0))


def syscall(name: str, *args) -> int:
    numbers = SYSCALLS.get(platform.machine())
    if numbers is None:
        raise SandboxError(f"the sandbox does not know the system calls of {platform.machine()}")
    return lib().syscall(numbers[name], *args)


def write_file(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


STATVFS_FLAGS = ((os.ST_RDONLY, MS_RDONLY), (os.ST_NOSUID, MS_NOSUID), (os.ST_NODEV, MS_NODEV),
                  (os.ST_NOEXEC, MS_NOEXEC), (os.ST_NOATIME, MS_NOATIME),
                  (os.ST_NODIRATIME, MS_NODIRATIME), (os.ST_RELATIME, MS_RELATIME))


def read_only(target: str) -> None:
    """Remount a bind read-only, keeping the flags a user namespace may not clear."""
    flags = 0
    current = os.statvfs(target).f_flag
    for st_flag, ms_flag in STATVFS_FLAGS:
        if current & st_flag:
            flags |= ms_flag
    mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV | flags)


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


# --- building the root ------------------------------------------------------------------

def bind(source: str, target: str, directory: bool) -> None:
    if directory:
        os.makedirs(target, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o444))
    mount(source, target, None, MS_BIND)


def map_ids(uid: int, gid: int) -> None:
    write_file("/proc/self/setgroups", "deny")
    write_file("/proc/self/uid_map", f"0 {uid} 1\n")
    write_file("/proc/self/gid_map", f"0 {gid} 1\n")


def build_root(root: str, the_plan: dict) -> None:
    """The skeleton of the task's file system under ROOT (a fresh tmpfs), read-only:
    everything but the task folder, which `mount_task` adds once the task is known."""
    mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, f"size={ROOT_SIZE},mode=0755")
    for path in the_plan["dirs"]:
        if os.path.isdir(path):
            bind(path, root + path, True)
            read_only(root + path)
    for path, link in the_plan["links"].items():
        if not os.path.lexists(root + path):
            os.symlink(link, root + path)
    os.makedirs(root + "/etc", exist_ok=True)
    for path in the_plan["files"]:
        if os.path.exists(path):
            bind(path, root + path, False)
            read_only(root + path)
    for name, text in ETC_FILES.items():
        with open(f"{root}/etc/{name}", "w") as handle:
            handle.write(text)
    os.makedirs(root + "/dev", exist_ok=True)
    for path in the_plan["devices"]:
        bind(path, root + path, False)
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                         ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):
        os.symlink(target, f"{root}/dev/{name}")
    for where in ("/proc", TASK_DIR, "/tmp", "/var/tmp", "/dev/shm"):  # mount points
        os.makedirs(root + where, exist_ok=True)
    # The skeleton itself is read-only; /task and the scratch folders mounted on it are not.
    mount(None, root, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)


def mount_task(root: str, files: list, disk: int, owner: int | None) -> None:
    """The task's folder: a tmpfs of its disk cap holding FILES, which is also its /tmp,
    /var/tmp and /dev/shm. OWNER: the uid outside that owns it (a root runner's seat
    uid), None for this process's."""
    task = root + TASK_DIR
    ids = f",uid={owner},gid={owner}" if owner is not None else ""
    mount("tmpfs", task, "tmpfs", MS_NOSUID | MS_NODEV, f"size={int(disk)},mode=0755{ids}")
    scratch = f"{task}/{SCRATCH}"
    os.mkdir(scratch)
    os.chmod(scratch, 0o1777)
    for where in ("/tmp", "/var/tmp", "/dev/shm"):
        mount(scratch, root + where, None, MS_BIND)
    for relative, data in files:
        path = os.path.join(task, relative)
        if data is None:
            os.makedirs(path, exist_ok=True)
        else:
            with open(path, "wb") as handle:
                handle.write(data)
        if owner is not None:
            os.chown(path, owner, owner)


def drop_capabilities(last_cap: int) -> None:
    """No capability left in any set, and none that uid 0 or exec could bring back."""
    prctl(PR_SET_SECUREBITS, SECUREBITS)
    for cap in range(last_cap + 1):
        prctl(PR_CAPBSET_DROP, cap)
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)
    header = struct.pack("Ii", CAPABILITY_VERSION_3, 0)
    data = bytes(24)
    check("capset", syscall("capset", ctypes.c_char_p(header), ctypes.c_char_p(data)))
    prctl(PR_SET_NO_NEW_PRIVS, 1)


def spawn_init() -> int:
    """PID 1 of the task's namespace: `sleep`, spawned without a copy of the runner's
    memory (vfork and exec) and without any capability (SECBIT_NOROOT while it execs)."""
    sleep = next((path for path in ("/usr/bin/sleep", "/bin/sleep") if os.path.exists(path)), None)
    if sleep is None:
        raise SandboxError("the sandbox needs /usr/bin/sleep (coreutils) for its init")
    prctl(PR_SET_SECUREBITS, SECBIT_NOROOT)
    try:
        return os.posix_spawn(sleep, [sleep, "2147483647"], {"PATH": "/usr/bin:/bin"}, file_actions=[
            (os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDWR, 0),
            (os.POSIX_SPAWN_DUP2, 0, 1), (os.POSIX_SPAWN_DUP2, 0, 2)])
    finally:
        prctl(PR_SET_SECUREBITS, 0)
