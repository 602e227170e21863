"""Registered problems read back: their rows, folds, data and labels, and what `problem show`
prints of them.

Registering a problem (reading a kit, checking its data, freezing its folds, storing it)
is `datarun.problems.registry`'s, which imports this module; this one never imports it,
so what reads a problem (the dispatcher, the board, the site) needs none of the kit
reading.

numpy is imported where it is used: the dispatcher reads problem rows before its first
launch, and that path should not wait for numpy.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from datarun.errors import NotFound
from datarun.problems.resources import environment_of, needs_of
from datarun.store.blobs import BlobStore

if TYPE_CHECKING:
    import numpy as np

    from datarun.store.workspace import Workspace

JSON_COLUMNS = ("spec", "classes", "score_names", "limits", "sensitive")


def _problem_names(db) -> list[str]:
    return [row[0] for row in db.execute("SELECT name FROM problems ORDER BY name").fetchall()]


def _decode(row: dict) -> dict:
    for column in JSON_COLUMNS:
        if row.get(column) is not None:
            row[column] = json.loads(row[column])
    return row


def get_problem(db, name: str) -> dict:
    """The problems row, JSON columns decoded; NotFound for an unknown name."""
    rows = list(db.query("SELECT * FROM problems WHERE name = ?", [name]))
    if not rows:
        known = _problem_names(db)
        hint = (f"registered: {', '.join(known)}" if known
                else "none registered yet: run `datarun problem add KIT`")
        raise NotFound(f"unknown problem {name!r} ({hint})")
    return _decode(rows[0])


def list_problems(db) -> list[dict]:
    """Every registered problem with its fold count, by name."""
    rows = db.query(
        "SELECT p.*, (SELECT COUNT(*) FROM folds f WHERE f.problem = p.name) AS n_folds "
        "FROM problems p ORDER BY p.name"
    )
    return [_decode(row) for row in rows]


def list_folds(db, problem: str) -> list[dict]:
    return list(db.query(
        "SELECT fold, n_train, n_valid, train_hash, valid_hash FROM folds "
        "WHERE problem = ? ORDER BY fold", [problem]))


def data_dir(workspace: Workspace, problem: dict) -> Path:
    """The prepared data folder to ship to hosts (X_train.npy or .csv, y_train.npy, X_test.npy
    or .csv, meta.json)."""
    return BlobStore(workspace.blobs_dir).tree_path(problem["data_hash"])


def load_labels(workspace: Workspace, problem: dict) -> tuple[np.ndarray, np.ndarray]:
    """(y_train, y_test) of a registered problem."""
    import numpy as np

    folder = BlobStore(workspace.blobs_dir).tree_path(problem["labels_hash"])
    return (np.load(folder / "y_train.npy", allow_pickle=False),
            np.load(folder / "y_test.npy", allow_pickle=False))


def load_fold(workspace: Workspace, db, problem: str, fold: int) -> tuple[np.ndarray, np.ndarray]:
    """(train_idx, valid_idx) of one frozen fold, int64 row numbers into the training data."""
    row = db.execute("SELECT train_hash, valid_hash FROM folds WHERE problem = ? AND fold = ?",
                     [problem, fold]).fetchone()
    if row is None:
        get_problem(db, problem)  # NotFound for an unknown problem
        n_folds = db.execute("SELECT COUNT(*) FROM folds WHERE problem = ?", [problem]).fetchone()[0]
        raise NotFound(f"problem {problem!r} has no fold {fold} (folds 0 to {n_folds - 1})")
    store = BlobStore(workspace.blobs_dir)
    return store.get_array(row[0]), store.get_array(row[1])


def _balance(y: np.ndarray) -> dict:
    import numpy as np

    values, counts = np.unique(y, return_counts=True)
    return {str(v): int(c) for v, c in zip(values.tolist(), counts, strict=True)}


def _target_summary(y: np.ndarray) -> dict:
    import numpy as np

    if not len(y) or y.dtype.kind not in "biuf":  # no test data; labels that are no numbers
        return {"mean": None, "std": None, "min": None, "max": None}
    return {"mean": float(np.mean(y)), "std": float(np.std(y)), "min": float(np.min(y)),
            "max": float(np.max(y))}


def describe_problem(workspace: Workspace, db, name: str) -> dict:
    """What `problem show` prints: data shape, class balance, folds, scores, limits, cv, and
    which test split and folds were made (`split`)."""
    from datarun.problems.cv import describe_split
    from datarun.remote.scoring.scores import get_score_type

    problem = get_problem(db, name)
    if problem.get("sensitive"):  # its labels and data stay on its owner's hosts
        return describe_sensitive(problem, list_folds(db, name))
    spec = problem["spec"]
    y_train, y_test = load_labels(workspace, problem)
    meta = json.loads((data_dir(workspace, problem) / "meta.json").read_text())
    summary = _balance if problem["kind"] == "classification" else _target_summary
    scores = []
    ramp = spec.get("ramp")
    for index, score_name in enumerate(problem["score_names"]):
        lower = (ramp["scores"][index]["lower_is_better"] if ramp
                 else get_score_type(score_name, problem["kind"]).lower_is_better)
        scores.append({"name": score_name, "official": index == 0, "lower_is_better": lower})
    return {
        "name": problem["name"],
        "title": problem["title"],
        "kind": problem["kind"],
        "workflow": problem["workflow"],
        "target": spec["data"]["target"] or "-",
        "n_train": problem["n_train"],
        "n_test": problem["n_test"],
        "n_features": problem["n_features"],
        "columns": meta["columns"],
        "classes": problem["classes"],
        "target_summary": {"train": summary(y_train), "test": summary(y_test)},
        "cv": spec["cv"],
        "split": describe_split(spec, problem["kind"]),
        "folds": [{"fold": f["fold"], "n_train": f["n_train"], "n_valid": f["n_valid"]}
                  for f in list_folds(db, name)],
        "scores": scores,
        "limits": problem["limits"],
        "resources": needs_of(problem).to_dict(),
        "environment": environment_of(problem),
        "data_hash": problem["data_hash"],
        "kit_path": problem["kit_path"],
        "created_at": problem["created_at"],
        **({"ramp": {k: ramp[k] for k in ("workflow", "elements", "prediction")}} if ramp else {}),
    }


def describe_sensitive(problem: dict, folds: list[dict]) -> dict:
    """`problem show` of a sensitive problem: what the manifest says, nothing of the labels."""
    from datarun.remote.scoring.scores import get_score_type

    manifest = problem["sensitive"]["manifest"]
    ramp = problem["spec"].get("ramp")
    lower = ({s["name"]: s["lower_is_better"] for s in ramp["scores"]} if ramp else
             {name: get_score_type(name, problem["kind"]).lower_is_better for name in problem["score_names"]})
    return {
        "name": problem["name"], "title": problem["title"], "kind": problem["kind"],
        "workflow": problem["workflow"], "target": problem["spec"]["data"]["target"] or "-",
        "n_train": problem["n_train"], "n_test": problem["n_test"], "n_features": problem["n_features"],
        "columns": manifest["columns"], "classes": problem["classes"],
        "target_summary": {"train": {}, "test": {}}, "cv": problem["spec"]["cv"], "split": manifest["split"],
        "folds": [{"fold": f["fold"], "n_train": f["n_train"], "n_valid": f["n_valid"]} for f in folds],
        "scores": [{"name": name, "official": i == 0, "lower_is_better": lower[name]}
                   for i, name in enumerate(problem["score_names"])],
        "limits": problem["limits"], "data_hash": problem["data_hash"], "kit_path": problem["kit_path"],
        "created_at": problem["created_at"],
        "sensitive": {"hosts": problem["sensitive"]["hosts"], "folds_hash": manifest["folds_hash"]},
        **({"ramp": {k: ramp[k] for k in ("workflow", "elements", "prediction")}} if ramp else {}),
    }
