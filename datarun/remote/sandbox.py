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

This module is the sandbox's policy (isolation, limits, environment, seats) and its life
in time: `prepare` (made ahead, a spare) and `enter_task` (handed over), and `probe`. The
system calls, namespaces and mounts they use to make one sandbox are namespaces.py.
"""

import os
import platform
import resource
import signal

from .namespaces import (
    CLONE_NEWIPC,
    CLONE_NEWNET,
    CLONE_NEWNS,
    CLONE_NEWPID,
    CLONE_NEWUSER,
    CLONE_NEWUTS,
    MNT_DETACH,
    MS_NODEV,
    MS_NOEXEC,
    MS_NOSUID,
    MS_PRIVATE,
    MS_REC,
    NAMESPACES,
    PR_SET_DUMPABLE,
    SYSCALLS,
    TASK_DIR,
    SandboxError,
    build_root,
    check,
    drop_capabilities,
    lib,
    map_ids,
    mount,
    mount_task,
    plan,
    prctl,
    spawn_init,
    syscall,
)

ISOLATIONS = ("sandbox", "none")
ALIASES = {"user": "sandbox"}  # the name of the root-only isolation of earlier versions
TASK_UID_BASE = 2_000_000  # uid and gid outside the sandbox of the task in seat i (root runner)
DEFAULT_DISK = 1024**3  # bytes a task may write in all (the size of its tmpfs)
DEFAULT_PROCESSES = 256  # processes (and threads) a task may have at once
HOSTNAME = "sandbox"

THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                    "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS")


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
        check("unshare", lib().unshare(NAMESPACES))
        map_ids(uid, gid)
    else:
        check("unshare", lib().unshare(CLONE_NEWNS | CLONE_NEWPID))
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    init = spawn_init()
    build_root(ROOT, the_plan)
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
    mount_task(root, files, disk, seat_uid)
    mount("proc", root + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    os.chdir(root)
    check("pivot_root", syscall("pivot_root", b".", b"."))
    check("umount old root", lib().umount2(b".", MNT_DETACH))
    if seat_uid is not None:
        os.setgroups([])
        os.setresgid(seat_uid, seat_uid, seat_uid)
        os.setresuid(seat_uid, seat_uid, seat_uid)
        prctl(PR_SET_DUMPABLE, 1)  # its own /proc/self files again, to write its id maps
        check("unshare", lib().unshare(CLONE_NEWUSER | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWNET))
        map_ids(seat_uid, seat_uid)
    lib().sethostname(HOSTNAME.encode(), len(HOSTNAME))
    os.chdir(TASK_DIR)
    os.environ.clear()
    os.environ.update(env)
    resource.setrlimit(resource.RLIMIT_NPROC, (processes, processes))
    resource.setrlimit(resource.RLIMIT_FSIZE, (disk, disk))
    drop_capabilities(the_plan["last_cap"])
    prctl(PR_SET_DUMPABLE, 1)


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
