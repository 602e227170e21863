"""Build harness inputs by hand: prepared data sets, task bundles, archives; drive a runner.

The harness tests use these instead of the organiser's code, so they check the harness
against docs/PROTOCOL.md alone.
"""

import json
import os
import signal
import tarfile
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import psutil
from sklearn.datasets import load_diabetes, load_iris

from datarun.remote import ops
from datarun.remote.incoming import tree_hash

LOGISTIC = """
from sklearn.linear_model import LogisticRegression

def get_estimator():
    return LogisticRegression(max_iter=500)
"""

RIDGE = """
from sklearn.linear_model import Ridge

def get_estimator():
    return Ridge()
"""


def write_dataset(workdir: Path, digest: str, kind: str) -> dict:
    """data/<digest>/ as the organiser prepares it; returns its meta.json."""
    if kind == "classification":
        frame = load_iris(as_frame=True).frame
        target = "target"
        y = np.array(["setosa", "versicolor", "virginica"])[frame.pop(target).to_numpy()]
    else:
        frame = load_diabetes(as_frame=True).frame
        target = "target"
        y = frame.pop(target).to_numpy(dtype=np.float64)
    order = np.random.default_rng(0).permutation(len(frame))
    frame, y = frame.iloc[order].reset_index(drop=True), y[order]
    n_test = len(frame) // 5
    folder = workdir / "data" / digest
    folder.mkdir(parents=True, exist_ok=True)
    frame.iloc[n_test:].to_csv(folder / "X_train.csv", index=False)
    frame.iloc[:n_test].to_csv(folder / "X_test.csv", index=False)
    np.save(folder / "y_train.npy", y[n_test:], allow_pickle=False)
    classes = sorted(set(y.tolist())) if kind == "classification" else None
    meta = {"kind": kind, "classes": classes, "target": target, "n_train": len(frame) - n_test,
            "n_test": n_test, "columns": list(frame.columns)}
    (folder / "meta.json").write_text(json.dumps(meta))
    (folder / ".complete").touch()
    return meta


def _content_hash(kind: str) -> str:
    """The content hash of the folder write_dataset makes: a host keeps a data set under its
    content hash, and checks an uploaded one against it."""
    with tempfile.TemporaryDirectory() as folder:
        write_dataset(Path(folder), "probe", kind)
        return tree_hash(Path(folder) / "data" / "probe")


DATA_IRIS = _content_hash("classification")
DATA_DIABETES = _content_hash("regression")


def task_files(key: str, code: str, meta: dict, digest: str, limits: dict | None = None,
               max_output: int = 1024**2, files: dict | None = None, nonce: str | None = None,
               isolation: str | None = None) -> dict:
    """The files of tasks/<key>/ as {relative path: bytes}. `isolation`: task.json's (none
    means the harness's default, the sandbox)."""
    n_train = meta["n_train"]
    indices = np.arange(n_train)
    train_idx, valid_idx = indices[: n_train * 3 // 4], indices[n_train * 3 // 4:]
    task = {
        "key": key, "task_id": 1, "attempt": 1, "submission": 1, "fold": 0,
        "problem": "p", "data": digest, "workflow": "estimator", "kind": meta["kind"],
        "classes": meta["classes"], "files": ["estimator.py"],
        "limits": {"wall_time": 60.0, "cpu_time": None, "memory": None, **(limits or {})},
        "threads": 1, "max_output": max_output,
    }
    if nonce is not None:
        task["nonce"] = nonce
    if isolation is not None:
        task["isolation"] = isolation
    out = {"task.json": json.dumps(task).encode(),
           "train_idx.npy": _npy(train_idx), "valid_idx.npy": _npy(valid_idx),
           "submission/estimator.py": textwrap.dedent(code).encode()}
    for name, content in (files or {}).items():
        out[f"submission/{name}"] = content.encode() if isinstance(content, str) else content
    return out


def _npy(array) -> bytes:
    import io

    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def make_archive(path: Path, members: dict[str, bytes]) -> Path:
    """A tar holding these {member name: content} files."""
    import io

    with tarfile.open(path, "w") as tar:
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(content))
    return path


def submit(workdir: Path, key: str, code: str, meta: dict, digest: str, space: str | None = None,
           **options) -> None:
    """Ship one task through `accept`, as the organiser would (`space`: the workspace id)."""
    members = {f"tasks/{key}/{name}": content
               for name, content in task_files(key, code, meta, digest, **options).items()}
    archive = make_archive(workdir.parent / f"{key}-{space}.tar", members)
    result = ops.accept(workdir, archive, space=space)
    assert result["tasks"] == [key]


def wait_finished(workdir: Path, keys: list[str], timeout: float = 60.0,
                  space: str | None = None) -> dict[str, dict]:
    """Poll until every task is finished; return their result.json."""
    from datarun.remote.common import Layout

    layout = Layout(workdir, space)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        report = ops.poll(workdir, keys, space=space)
        if all(t["state"] == "finished" for t in report["tasks"].values()):
            return {key: json.loads((layout.task(key) / "result.json").read_text()) for key in keys}
        time.sleep(0.05)
    raise AssertionError(f"tasks not finished after {timeout} s: {ops.poll(workdir, keys, space=space)}")


def stop_runner(pid: int, timeout: float = 10.0) -> None:
    """Stop a runner this test started, by its pid, and wait until it is gone."""
    try:
        process = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return
    try:
        os.kill(pid, signal.SIGTERM)
        process.wait(timeout)
    except psutil.NoSuchProcess:
        pass
    except psutil.TimeoutExpired:
        os.kill(pid, signal.SIGKILL)
        process.wait(timeout)


def session_members(sid: int) -> list[int]:
    """Live processes still in a task's session (the task's child pid is its session id)."""
    found = []
    for proc in psutil.process_iter(["pid"]):
        try:
            if os.getsid(proc.pid) == sid and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc.pid)
        except (OSError, psutil.Error):
            continue
    return found


def alive_named(name: str) -> list[int]:
    """Live host processes whose comm is NAME or whose command line holds it."""
    found = []
    for proc in psutil.process_iter(["pid", "name", "cmdline", "status"]):
        info = proc.info
        if info["status"] == psutil.STATUS_ZOMBIE:
            continue
        if info["name"] == name or any(name in part for part in info["cmdline"] or []):
            if proc.pid != os.getpid():
                found.append(proc.pid)
    return found
