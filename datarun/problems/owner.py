"""Sensitive problems: the data owner's preparation, and the organiser's row without data.

`prepare_owned` runs on the owner's server. It reads the kit as `problem add` does
(`registry.prepare_data`: the same checks, the same test split and folds), writes the
very data set `problem add` would ship to hosts into WORKDIR/data/<hash>/, and the rest
into WORKDIR/sensitive/<hash>/ (`datarun.remote.sensitive`): the train and test labels,
the folds, the manifest. The sandbox shows a task nothing of WORKDIR but its own folder.
The manifest names the data by hash and gives its shape, the class list, the score names
and the folds' sizes and hash: nothing of the data.

`store_sensitive` records on the organiser's side a problem registered from its public
kit and a manifest: no data, labels or fold indices, bound to the hosts that hold them.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from datarun.errors import UsageError
from datarun.problems.kits import load_kit
from datarun.remote import sensitive as host_side
from datarun.remote.common import Layout, make_read_only, private_folder

MANIFEST_KEYS = ("format", "problem", "kind", "data_hash", "n_train", "n_test", "n_features", "columns",
                 "classes", "score_names", "folds", "folds_hash")


def prepare_owned(kit_dir: Path, workdir: Path) -> dict:
    """Prepare a kit's data in the owner's WORKDIR; return its manifest."""
    import numpy as np

    from datarun.problems.cv import describe_split
    from datarun.problems.rampkit import is_ramp_kit
    from datarun.problems.registry import prepare_data, write_data_tree

    if is_ramp_kit(kit_dir):
        raise UsageError(f"{kit_dir}: RAMP kits cannot be prepared as sensitive problems yet; "
                         "use a native kit (problem.toml)")
    spec = load_kit(kit_dir)
    data = prepare_data(spec)
    layout = Layout(Path(workdir).expanduser())
    private_folder(layout.root)
    layout.data.mkdir(parents=True, exist_ok=True)
    (layout.root / host_side.FOLDER).mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=layout.root, prefix=".prepare-") as tmp:
        staged = Path(tmp, "data")
        staged.mkdir()
        write_data_tree(spec, data, staged)
        data_hash = host_side.tree_hash(staged)
        target = layout.data_set(data_hash)
        if not layout.is_complete(target):
            shutil.rmtree(target, ignore_errors=True)
            layout.mark_complete(staged)
            os.replace(staged, target)  # renamed while writable: a read-only folder cannot move
            make_read_only(target)
        manifest = {
            "format": host_side.MANIFEST_FORMAT, "problem": spec.name, "kind": spec.kind,
            "data_hash": data_hash, "n_train": len(data.y_train), "n_test": len(data.y_test),
            "n_features": int(data.X_train.shape[1]),  # type: ignore[attr-defined]
            "columns": [str(c) for c in data.X_train.columns],  # type: ignore[attr-defined]
            "classes": data.classes,
            "score_names": list(spec.score_names),
            "folds": [{"fold": i, "n_train": len(t), "n_valid": len(v)} for i, (t, v) in enumerate(data.folds)],
            "folds_hash": host_side.folds_hash(data.folds),
            "split": describe_split(spec.to_dict(), spec.kind),
        }
        store = Path(tmp, "sensitive")
        (store / "folds").mkdir(parents=True)
        np.save(store / "y_train.npy", data.y_train, allow_pickle=False)
        np.save(store / "y_test.npy", data.y_test, allow_pickle=False)
        for i, (train, valid) in enumerate(data.folds):
            np.save(store / "folds" / f"train_{i}.npy", np.asarray(train, dtype=np.int64), allow_pickle=False)
            np.save(store / "folds" / f"valid_{i}.npy", np.asarray(valid, dtype=np.int64), allow_pickle=False)
        (store / host_side.MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
        final = host_side.folder(layout.root, data_hash)
        if final.exists():  # prepared before: its kept predictions and the owner's flags stay
            for name in ("y_train.npy", "y_test.npy", host_side.MANIFEST):
                os.replace(store / name, final / name)
            shutil.rmtree(final / "folds", ignore_errors=True)
            os.replace(store / "folds", final / "folds")
        else:
            os.replace(store, final)
    return manifest


def _owned(workdir: Path, problem: str) -> host_side.Store:
    from datarun.remote.common import HarnessError

    try:
        return host_side.Store.of_problem(Path(workdir).expanduser(), problem)
    except HarnessError:
        raise UsageError(f"no sensitive problem {problem!r} is prepared in {workdir}: run "
                         "`datarun owner prepare KIT --workdir DIR` first") from None


def set_flag(workdir: Path, problem: str, flag: str, on: bool) -> dict:
    """The owner's flags: refuse the problem's tasks, withhold error texts."""
    store = _owned(workdir, problem)
    path = store.path / flag
    if on:
        path.touch()
    else:
        path.unlink(missing_ok=True)
    return {"problem": store.problem, "refuse": store.refused, "error_text": store.error_text}


def purge(workdir: Path, problem: str) -> dict:
    _owned(workdir, problem)
    return host_side.purge(Path(workdir).expanduser(), problem)


def read_manifest(path: Path) -> dict:
    """The manifest `owner prepare` printed, checked field by field."""
    try:
        manifest = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UsageError(f"manifest {path} does not exist") from None
    except (ValueError, UnicodeDecodeError):
        raise UsageError(f"manifest {path} is not JSON: give the file `datarun owner prepare --json` printed") from None
    if not isinstance(manifest, dict) or manifest.get("format") != host_side.MANIFEST_FORMAT:
        raise UsageError(f"manifest {path} is not a datarun manifest ({host_side.MANIFEST_FORMAT}): "
                         "give the file `datarun owner prepare --json` printed")
    missing = [key for key in MANIFEST_KEYS if key not in manifest]
    if missing:
        raise UsageError(f"manifest {path} lacks {', '.join(missing)}: give the file `datarun owner prepare` printed")
    return manifest


def check_against_kit(kit_dir: Path, manifest: dict) -> None:
    """The public kit and the owner's manifest must describe the same problem."""
    spec = load_kit(kit_dir)
    for field, ours in (("problem", spec.name), ("kind", spec.kind), ("score_names", list(spec.score_names))):
        if manifest[field] != ours:
            raise UsageError(f"problem {spec.name}: the manifest's {field} is {manifest[field]!r}, the kit's "
                             f"{ours!r}: prepare the data with the same problem.toml")


def store_sensitive(workspace, db, kit_dir: Path, manifest: dict, hosts: list[str]) -> dict:
    """Record a sensitive problem: the kit's settings, the manifest, its hosts; no data."""
    from datarun.problems.registry import _refuse_registered

    spec = load_kit(kit_dir)
    check_against_kit(kit_dir, manifest)
    row = (spec.name, spec.title, spec.kind, spec.workflow, json.dumps(spec.to_dict()),
           manifest["data_hash"], "", int(manifest["n_train"]), int(manifest["n_test"]),
           int(manifest["n_features"]), None if manifest["classes"] is None else json.dumps(manifest["classes"]),
           json.dumps(list(spec.score_names)), json.dumps(spec.limits.to_dict()), str(spec.kit_dir),
           time.time(), json.dumps({"hosts": hosts, "manifest": manifest}))
    fold_rows = [(spec.name, int(f["fold"]), "", "", int(f["n_train"]), int(f["n_valid"]))
                 for f in manifest["folds"]]
    with db.conn:
        db.conn.execute("BEGIN IMMEDIATE")
        _refuse_registered(db, spec.name)
        db.conn.execute(
            "INSERT INTO problems (name, title, kind, workflow, spec, data_hash, labels_hash, "
            "n_train, n_test, n_features, classes, score_names, limits, kit_path, created_at, sensitive) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", row)
        db.conn.executemany(
            "INSERT INTO folds (problem, fold, train_hash, valid_hash, n_train, n_valid) "
            "VALUES (?, ?, ?, ?, ?, ?)", fold_rows)
    return {"name": spec.name}
