"""The baselines the benches time datarun against: what `ramp-test` does (one Python
fitting every submission on every fold in turn) and one fresh Python per task; and the
options and ways of measuring shared by the memory benches (bench/floor.py, bench/memory.py),
which set each way's figure beside a baseline of their own."""

import argparse
import json
import os
import sys
import time
from pathlib import Path

MB = 1000**2  # the memory benches' unit

BASELINE_COMMON = r'''
import importlib.util, json, sys, time
import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, log_loss, roc_auc_score

def load(kit):
    train = pd.read_csv(f"{kit}/data/train.csv")
    test = pd.read_csv(f"{kit}/data/test.csv")
    y_train = train.pop("species").to_numpy()
    y_test = test.pop("species").to_numpy()
    return train, y_train, test, y_test

def load_submission(path, name):
    sys.path.insert(0, path)
    spec = importlib.util.spec_from_file_location("estimator", f"{path}/estimator.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["estimator"] = module
    spec.loader.exec_module(module)
    sys.path.remove(path)
    return module

def scores(y, proba, classes):
    return [accuracy_score(y, classes[proba.argmax(axis=1)]),
            log_loss(y, proba, labels=classes),
            roc_auc_score(y, proba, multi_class="ovr", labels=classes)]

def run_task(module, X_train, y_train, X_test, y_test, train_idx, valid_idx):
    """Fit, predict and score one fold as ramp-test does; return the model's own seconds."""
    start = time.perf_counter()
    estimator = module.get_estimator()
    estimator.fit(X_train.iloc[train_idx], y_train[train_idx])
    proba_train = estimator.predict_proba(X_train)
    proba_test = estimator.predict_proba(X_test)
    model = time.perf_counter() - start
    classes = np.asarray(estimator.classes_)
    scores(y_train[train_idx], proba_train[train_idx], classes)
    scores(y_train[valid_idx], proba_train[valid_idx], classes)
    scores(y_test, proba_test, classes)
    return model
'''

# One process fitting every submission on every fold in turn: what `ramp-test` does.
LOOP_SCRIPT = BASELINE_COMMON + r'''
kit, folds, n_folds = sys.argv[1], sys.argv[2], int(sys.argv[3])
names = sys.argv[4:]
X_train, y_train, X_test, y_test = load(kit)
model = 0.0
for name in names:
    module = load_submission(f"{kit}/submissions/{name}", name)
    for fold in range(n_folds):
        train_idx = np.load(f"{folds}/fold{fold}_train.npy")
        valid_idx = np.load(f"{folds}/fold{fold}_valid.npy")
        model += run_task(module, X_train, y_train, X_test, y_test, train_idx, valid_idx)
print(json.dumps({"model_time": model}))
'''

# One task per process: what an engine that starts a fresh worker per task pays.
TASK_SCRIPT = BASELINE_COMMON + r'''
kit, folds, fold, name = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
X_train, y_train, X_test, y_test = load(kit)
module = load_submission(f"{kit}/submissions/{name}", name)
train_idx = np.load(f"{folds}/fold{fold}_train.npy")
valid_idx = np.load(f"{folds}/fold{fold}_valid.npy")
print(json.dumps({"model_time": run_task(module, X_train, y_train, X_test, y_test, train_idx, valid_idx)}))
'''


def run_loop_baseline(kit: Path, folds: Path, n_folds: int, names: list[str]) -> tuple[float, float]:
    """(wall seconds of a fresh Python running the whole loop, its fit+predict seconds)."""
    from common import timed

    wall, result = timed([sys.executable, "-c", LOOP_SCRIPT, str(kit), str(folds), str(n_folds), *names])
    return wall, json.loads(result.stdout)["model_time"]


def run_process_per_task_baseline(kit: Path, folds: Path, n_folds: int,
                                  names: list[str]) -> tuple[float, float]:
    """(wall seconds of one fresh Python per task, one after another; their fit+predict seconds)."""
    from common import run

    model = 0.0
    start = time.perf_counter()
    for name in names:
        for fold in range(n_folds):
            result = run([sys.executable, "-c", TASK_SCRIPT, str(kit), str(folds), str(fold), name])
            model += json.loads(result.stdout)["model_time"]
    return time.perf_counter() - start, model


def memory_bench_options(doc: str, argv: list[str] | None,
                         quick_repeat: int) -> tuple[argparse.Namespace, list[str]]:
    """The memory benches' options (--repeat N, --quick, --json) and the ways of measuring a
    task's memory to run: a cgroup of the task (as root only, where datarun may make one),
    then the private memory in /proc (forced by the bench with DATARUN_CGROUPS=0)."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quick", action="store_true",
                        help=f"{quick_repeat} run{'s' if quick_repeat > 1 else ''} of each (smoke test)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeat = quick_repeat
    return args, (["cgroup"] if os.geteuid() == 0 else []) + ["procfs"]
