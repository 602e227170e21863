"""The baselines the benches time datarun against: what `ramp-test` does (one Python
fitting every submission on every fold in turn) and one fresh Python per task."""

import json
import sys
import time
from pathlib import Path

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
