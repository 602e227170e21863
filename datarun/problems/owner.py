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


def prepare_owned(kit_dir: Path, workdir: Path, env: dict[str, str] | None = None) -> dict:
    """Prepare a kit's data in the owner's WORKDIR; return its manifest.

    A native kit is read as `problem add` reads it (`registry.prepare_data`), a RAMP kit
    as `problem add` reads an open one (`rampdata.prepare_ramp_data`: the kit's own
    get_train_data, get_test_data and get_cv, with `env` as `problem add --env` gives it);
    either way the data set written is the one `problem add` would ship to hosts."""
    from datarun.problems.rampkit import is_ramp_kit

    parts = _ramp_parts(kit_dir, env or {}) if is_ramp_kit(kit_dir) else _native_parts(kit_dir)
    return _install(Path(workdir).expanduser(), *parts)


def _native_parts(kit_dir: Path):
    """(write the data tree, the manifest's fields, the labels to keep, the folds)."""
    import numpy as np

    from datarun.problems.cv import describe_split
    from datarun.problems.registry import prepare_data, write_data_tree

    spec = load_kit(kit_dir)
    data = prepare_data(spec)
    fields = {
        "problem": spec.name, "kind": spec.kind,
        "n_train": len(data.y_train), "n_test": len(data.y_test),
        "n_features": int(data.X_train.shape[1]),  # type: ignore[attr-defined]
        "columns": [str(c) for c in data.X_train.columns],  # type: ignore[attr-defined]
        "classes": data.classes,
        "score_names": list(spec.score_names),
        "split": describe_split(spec.to_dict(), spec.kind),
    }

    def keep_labels(store: Path) -> None:
        np.save(store / "y_train.npy", data.y_train, allow_pickle=False)
        np.save(store / "y_test.npy", data.y_test, allow_pickle=False)

    return (lambda staged: write_data_tree(spec, data, staged)), fields, keep_labels, data.folds


def _ramp_parts(kit_dir: Path, env: dict[str, str]):
    """A RAMP kit's parts, as `problem add` reads an open one. The labels kept are the kit's
    own objects (what its score types read, as ramp-test's do) and plain arrays of them."""
    import numpy as np

    from datarun.problems.cv import describe_split
    from datarun.problems.rampdata import (
        _columns,
        _n_features,
        _pickle,
        prepare_ramp_data,
        ramp_spec,
        write_ramp_data_tree,
    )
    from datarun.problems.rampkit import check_starting_kit, load_ramp_kit

    kit = load_ramp_kit(kit_dir, env)
    check_starting_kit(kit)
    data = prepare_ramp_data(kit)
    n_folds = len(data.folds)
    fields = {
        "problem": kit.name, "kind": kit.kind,
        "n_train": len(data.labels_train), "n_test": len(data.labels_test),
        "n_features": _n_features(data.X_train), "columns": _columns(data.X_train),
        "classes": kit.label_names if kit.kind == "classification" else None,
        "score_names": [s["name"] for s in kit.scores],
        "split": describe_split({"data": {}, "cv": {"n_splits": n_folds}, "ramp": True}, kit.kind),
        "workflow": "ramp",
        "ramp": ramp_spec(kit, data),
    }
    check_ramp_scores(kit, data)

    def keep_labels(store: Path) -> None:
        np.save(store / "y_train.npy", data.labels_train, allow_pickle=False)
        np.save(store / "y_test.npy", data.labels_test, allow_pickle=False)
        _pickle(data.y_train, store / "y_train.pkl", "y_train")
        _pickle(data.y_test, store / "y_test.pkl", "y_test")

    return (lambda staged: write_ramp_data_tree(kit, data, staged)), fields, keep_labels, data.folds


def check_ramp_scores(kit, data) -> None:
    """Each of the kit's score types scores the training labels against themselves here, as
    the host will score every task: a score type that cannot run is refused now, by name."""
    from datarun.problems.rampkit import RAMP_FILE, _one_line

    P = kit.module.Predictions
    with _kit_env(kit):
        for score in kit.module.score_types:
            try:
                truth = P(y_true=data.y_train)
                float(score.score_function(truth, P(y_true=data.y_train)))
            except Exception as error:
                raise UsageError(
                    f"{RAMP_FILE}: score type {score.name!r} cannot score the kit's own labels "
                    f"({_one_line(error)}); the data owner's host scores every task with it: fix "
                    "the score type, or install what it imports") from None


def _kit_env(kit):
    from datarun.problems.rampkit import kit_environment

    return kit_environment(kit.kit_dir, kit.env)


def _install(root: Path, write_tree, fields: dict, keep_labels, folds) -> dict:
    """Write the data set to ROOT/data/<hash>/ and the labels, folds and manifest to
    ROOT/sensitive/<hash>/ (a data set prepared before keeps its kept predictions and the
    owner's flags); return the manifest."""
    import numpy as np

    layout = Layout(root)
    private_folder(layout.root)
    layout.data.mkdir(parents=True, exist_ok=True)
    (layout.root / host_side.FOLDER).mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=layout.root, prefix=".prepare-") as tmp:
        staged = Path(tmp, "data")
        staged.mkdir()
        write_tree(staged)
        data_hash = host_side.tree_hash(staged)
        target = layout.data_set(data_hash)
        if not layout.is_complete(target):
            shutil.rmtree(target, ignore_errors=True)
            layout.mark_complete(staged)
            os.replace(staged, target)  # renamed while writable: a read-only folder cannot move
            make_read_only(target)
        manifest = {
            "format": host_side.MANIFEST_FORMAT, "problem": fields["problem"], "kind": fields["kind"],
            "data_hash": data_hash, **{k: v for k, v in fields.items() if k not in ("problem", "kind")},
            "folds": [{"fold": i, "n_train": len(t), "n_valid": len(v)} for i, (t, v) in enumerate(folds)],
            "folds_hash": host_side.folds_hash(folds),
        }
        store = Path(tmp, "sensitive")
        (store / "folds").mkdir(parents=True)
        keep_labels(store)
        for i, (train, valid) in enumerate(folds):
            np.save(store / "folds" / f"train_{i}.npy", np.asarray(train, dtype=np.int64), allow_pickle=False)
            np.save(store / "folds" / f"valid_{i}.npy", np.asarray(valid, dtype=np.int64), allow_pickle=False)
        (store / host_side.MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
        final = host_side.folder(layout.root, data_hash)
        if final.exists():  # prepared before: its kept predictions and the owner's flags stay
            for path in store.iterdir():
                if path.name != "folds":
                    os.replace(path, final / path.name)
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


RAMP_FIELDS = ("workflow", "elements", "prediction", "pred_shape", "label_names")


def check_against_kit(kit_dir: Path, manifest: dict) -> None:
    """The public kit and the owner's manifest must describe the same problem."""
    from datarun.problems.rampkit import is_ramp_kit

    if is_ramp_kit(kit_dir):
        kit = _public_ramp_kit(kit_dir, manifest)
        theirs: dict = manifest["ramp"] if isinstance(manifest.get("ramp"), dict) else {}
        pairs = [("problem", manifest["problem"], kit.name), ("kind", manifest["kind"], kit.kind),
                 ("score_names", manifest["score_names"], [s["name"] for s in kit.scores])]
        pairs += [(f"RAMP {field}", theirs.get(field), getattr(kit, field)) for field in RAMP_FIELDS]
        for field, given, ours in pairs:
            if given != ours:
                raise UsageError(f"problem {kit.name}: the manifest's {field} is {given!r}, the kit's "
                                 f"{ours!r}: prepare the data with the same problem.py")
        return
    if manifest.get("workflow") == "ramp":
        raise UsageError(f"problem {manifest['problem']}: the manifest is of a RAMP kit but {kit_dir} "
                         "holds problem.toml: register the RAMP kit's public folder (its problem.py)")
    spec = load_kit(kit_dir)
    for field, ours in (("problem", spec.name), ("kind", spec.kind), ("score_names", list(spec.score_names))):
        if manifest[field] != ours:
            raise UsageError(f"problem {spec.name}: the manifest's {field} is {manifest[field]!r}, the kit's "
                             f"{ours!r}: prepare the data with the same problem.toml")


def _public_ramp_kit(kit_dir: Path, manifest: dict):
    """The organiser's RAMP kit (problem.py read, no data), with the owner's environment."""
    from datarun.problems.rampkit import load_ramp_kit

    if manifest.get("workflow") != "ramp":
        raise UsageError(f"problem {manifest['problem']}: {kit_dir} is a RAMP kit but the manifest is of a "
                         "native one (problem.toml): register the kit the owner prepared")
    env = (manifest.get("ramp") or {}).get("env") or {}
    return load_ramp_kit(kit_dir, {str(k): str(v) for k, v in env.items()})


def _ramp_row(kit_dir: Path, manifest: dict, data_file_cap: int | None) -> tuple:
    """A RAMP problem's row as `register_ramp_problem` writes it, from the public kit and the
    owner's manifest (its RAMP settings are the owner's: the host runs the owner's kit)."""
    from datarun.problems.rampdata import DEFAULT_DATA_FILE_CAP, DEFAULT_LIMITS

    kit = _public_ramp_kit(kit_dir, manifest)
    cap = DEFAULT_DATA_FILE_CAP if data_file_cap is None else int(data_file_cap)
    spec = {
        "name": kit.name, "title": kit.title, "kind": kit.kind,
        "data": {"train": None, "test": None, "target": None, "test_size": None, "drop": []},
        "cv": {"strategy": "get_cv", "n_splits": len(manifest["folds"]), "seed": None, "test_size": None},
        "workflow": {"kind": "ramp"},
        "scores": {"names": list(manifest["score_names"])},
        "limits": DEFAULT_LIMITS,
        "ramp": dict(manifest["ramp"], data_file_cap=cap),
    }
    return (kit.name, kit.title, kit.kind, "ramp", json.dumps(spec), json.dumps(DEFAULT_LIMITS),
            str(kit.kit_dir))


def store_sensitive(workspace, db, kit_dir: Path, manifest: dict, hosts: list[str],
                    data_file_cap: int | None = None) -> dict:
    """Record a sensitive problem: the kit's settings, the manifest, its hosts; no data."""
    from datarun.problems.rampkit import is_ramp_kit
    from datarun.problems.registry import _refuse_registered

    check_against_kit(kit_dir, manifest)
    if is_ramp_kit(kit_dir):
        name, title, kind, workflow, spec_json, limits, kit_path = _ramp_row(kit_dir, manifest, data_file_cap)
    else:
        spec = load_kit(kit_dir)
        name, title, kind, workflow, spec_json, limits, kit_path = (
            spec.name, spec.title, spec.kind, spec.workflow, json.dumps(spec.to_dict()),
            json.dumps(spec.limits.to_dict()), str(spec.kit_dir))
    row = (name, title, kind, workflow, spec_json,
           manifest["data_hash"], "", int(manifest["n_train"]), int(manifest["n_test"]),
           int(manifest["n_features"]), None if manifest["classes"] is None else json.dumps(manifest["classes"]),
           json.dumps(list(manifest["score_names"])), limits, kit_path,
           time.time(), json.dumps({"hosts": hosts, "manifest": manifest}))
    fold_rows = [(name, int(f["fold"]), "", "", int(f["n_train"]), int(f["n_valid"]))
                 for f in manifest["folds"]]
    with db.conn:
        db.conn.execute("BEGIN IMMEDIATE")
        _refuse_registered(db, name)
        db.conn.execute(
            "INSERT INTO problems (name, title, kind, workflow, spec, data_hash, labels_hash, "
            "n_train, n_test, n_features, classes, score_names, limits, kit_path, created_at, sensitive) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", row)
        db.conn.executemany(
            "INSERT INTO folds (problem, fold, train_hash, valid_hash, n_train, n_valid) "
            "VALUES (?, ?, ?, ?, ?, ?)", fold_rows)
    return {"name": name}
