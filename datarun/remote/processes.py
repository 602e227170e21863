"""The processes of each running task, as the runner samples them every ~50 ms (tree.py
says what it keeps of them): the runner's descendants, read down from itself, and which
task each belongs to (by ancestry, else by session or because it was seen before).
"""

import os

from .tree import TaskRun


def descendants(root: int, psutil) -> tuple[list, dict[int, int]]:
    """The processes under ROOT (the runner), as psutil.Process objects, and each one's
    parent pid: read down the tree from /proc/PID/task/TID/children, so a sample costs a
    few reads per process of the runner's tasks. (psutil's children(recursive=True) reads
    the stat file of every process of the host: ~14 ms a sample on a busy 2-core machine,
    a third of the runner's time with tiny tasks.) Without those files (a kernel built
    without CONFIG_PROC_CHILDREN) it falls back to psutil's scan."""
    parents: dict[int, int] = {}
    stack = [root]
    while stack:
        parent = stack.pop()
        try:
            threads = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue
        for thread in threads:
            try:
                with open(f"/proc/{parent}/task/{thread}/children", "rb") as handle:
                    listed = handle.read().split()
            except FileNotFoundError:
                if parent == root:
                    return _scanned(root, psutil)
                continue
            except OSError:
                continue
            for text in listed:
                child = int(text)
                if child not in parents and child != root:
                    parents[child] = parent
                    stack.append(child)
    procs = []
    for pid in parents:
        try:
            procs.append(psutil.Process(pid))
        except psutil.Error:
            pass
    return procs, parents


def _scanned(root: int, psutil) -> tuple[list, dict[int, int]]:
    try:
        procs = psutil.Process(root).children(recursive=True)
    except psutil.Error:
        return [], {}
    parents = {}
    for proc in procs:
        try:
            parents[proc.pid] = proc.ppid()
        except psutil.Error:
            pass
    return procs, parents


def sort_processes(procs: list, parents: dict[int, int], running: dict[str, TaskRun],
                   owner) -> dict[str, list]:
    """The processes PROCS (the runner's descendants now, with their PARENTS) of each
    running task, by key: found by ancestry up to a task's root, else by OWNER(pid)
    (session, or seen before)."""
    trees: dict[str, list] = {key: [] for key in running}
    roots = {run.pid: key for key, run in running.items()}
    roots.update({run.task_pid: key for key, run in running.items()})
    roots.update({run.init_pid: key for key, run in running.items() if run.init_pid})
    for proc in procs:
        key = None
        pid, hops = proc.pid, 0
        while pid in parents and hops < 64:  # walk up to a task's child
            if pid in roots:
                key = roots[pid]
                break
            pid, hops = parents[pid], hops + 1
        if key is None:
            found = owner(proc.pid)
            key = found.key if found else None
        if key is not None:
            trees[key].append(proc)
    return trees
