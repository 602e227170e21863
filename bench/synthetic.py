"""Scored submissions without training: rows and prediction blobs as `train` leaves them.

The contributivity bench and its tests need hundreds or thousands of fully scored
submissions; training them would take hours and measure the training. Each one here is a
submission row whose every fold's task is `done`, with predictions that are noisy copies
of the labels (each its own noise, so the blend has real choices to make).
"""

from __future__ import annotations

import json
import time

import numpy as np

from datarun.problems.registered import get_problem, list_folds, load_labels
from datarun.store.blobs import BlobStore
from datarun.store.db import transaction


def noisy(rng, y: np.ndarray, classes: list | None, strength: float) -> np.ndarray:
    """Predictions of the labels y with this much signal (classification: probabilities)."""
    if classes:
        index = {label: i for i, label in enumerate(classes)}
        proba = rng.random((len(y), len(classes)))
        proba[np.arange(len(y)), [index[label] for label in y.tolist()]] += strength
        return proba / proba.sum(axis=1, keepdims=True)
    return y.astype(np.float64) + rng.normal(scale=1.0 / strength, size=len(y))


def add_scored(workspace, db, problem_name: str, count: int, seed: int = 0,
               event: str | None = None) -> list[int]:
    """Add `count` fully trained submissions to the problem's `event` (default: its
    default event); their ids."""
    rng = np.random.default_rng(seed)
    store = BlobStore(workspace.blobs_dir)
    problem = get_problem(db, problem_name)
    y_train, y_test = load_labels(workspace, problem)
    classes = problem["classes"]
    folds = [row["fold"] for row in list_folds(db, problem_name)]
    if event is None:
        event = problem_name  # a problem's default event is named like it
    ids = []
    now = time.time()
    with transaction(db):
        for _ in range(count):
            tag = rng.integers(1 << 62)
            files = {"estimator.py": store.put_bytes(f"# synthetic {tag}\n".encode())}
            cursor = db.execute(
                "INSERT INTO submissions (problem, event, team, name, files_hash, files, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                [problem_name, event, f"team{tag % 97}", f"s{tag}", f"{tag:x}", json.dumps(files), now])
            sid = cursor.lastrowid
            strength = float(rng.uniform(0.2, 2.0))
            for fold in folds:
                train = store.put_predictions(noisy(rng, y_train, classes, strength))
                test = store.put_predictions(noisy(rng, y_test, classes, strength))
                db.execute(
                    "INSERT INTO tasks (submission, fold, state, attempt, queued_at, finished_at, "
                    "pred_train, pred_test) VALUES (?, ?, 'done', 1, ?, ?, ?, ?)",
                    [sid, fold, now, now, train, test])
            ids.append(sid)
    return ids
