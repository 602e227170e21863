"""A task bundle as docs/PROTOCOL.md gives it: task.json, the fold's indices, the submission's files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from datarun.executors.hosts import Host
from datarun.store.blobs import BlobStore
from datarun.store.tasks import Task

MAX_OUTPUT = 1 << 20  # bytes of a task's output the harness keeps


def task_spec(task: Task, problem: dict[str, Any], files: dict[str, str], host: Host) -> dict[str, Any]:
    """task.json: what the harness needs to run one attempt, its key and nonce included."""
    return {
        "key": task.key, "nonce": task.nonce, "task_id": task.id, "attempt": task.attempt,
        "submission": task.submission,
        "fold": task.fold, "problem": problem["name"], "data": problem["data_hash"],
        "workflow": problem["workflow"], "kind": problem["kind"], "classes": problem["classes"],
        "files": sorted(files), "limits": task.limits or {}, "threads": host.threads,
        "max_output": MAX_OUTPUT, "isolation": host.isolation,
    }


def build_bundle(staging: Path, task: Task, problem: dict[str, Any], files: dict[str, str],
                 fold: tuple[np.ndarray, np.ndarray] | None, host: Host, store: BlobStore) -> Path:
    """Write the bundle of a claimed task into staging/<key>/; its folder. Without `fold` (a
    sensitive problem's task) the host gives the task its fold from its owner's store."""
    folder = staging / task.key
    (folder / "submission").mkdir(parents=True)
    for name, digest in files.items():
        shutil.copyfile(store.path(digest), folder / "submission" / name)
    if fold is not None:
        train_idx, valid_idx = fold
        np.save(folder / "train_idx.npy", train_idx, allow_pickle=False)
        np.save(folder / "valid_idx.npy", valid_idx, allow_pickle=False)
    (folder / "task.json").write_text(json.dumps(task_spec(task, problem, files, host), indent=1))
    return folder
