"""A task's memory limit counts what the task itself allocates or copies, not the pages it
shares with the runner it was forked from (its imports and the data set the runner loaded).

Scaled down from the 1M-row case: the runner holding the data set and scikit-learn is well
over the limit, a DummyClassifier fits under it, and a task that allocates past the limit
still fails as memory_limit.
"""

import json
import sqlite3

import numpy as np
import pandas as pd
import psutil
from conftest import stop_runners

KIT = """\
name = "wide"
title = "Wide"
kind = "classification"

[data]
train = "data/train.csv"
target = "y"
test_size = 0.2

[cv]
strategy = "kfold"
n_splits = 2
seed = 0

[workflow]
kind = "estimator"

[scores]
names = ["accuracy"]

[limits]
wall_time = "120s"
memory = "{memory}"
"""

DUMMY = """\
from sklearn.dummy import DummyClassifier


def get_estimator():
    return DummyClassifier()
"""

HOG = """\
import numpy as np
from sklearn.dummy import DummyClassifier


class Hog(DummyClassifier):
    def fit(self, X, y):
        self.block_ = np.ones(40_000_000)  # 320 MB of its own
        return super().fit(X, y)


def get_estimator():
    return Hog()
"""


def test_the_memory_limit_counts_the_task_own_memory_not_the_runner_pages(workspace, cli, tmp_path):
    rng = np.random.default_rng(0)
    rows = 150_000
    frame = pd.DataFrame(rng.normal(size=(rows, 40)), columns=[f"f{i}" for i in range(40)])
    frame["y"] = np.where(frame["f0"] > 0, "a", "b")
    kit = tmp_path / "kit"
    (kit / "data").mkdir(parents=True)
    frame.to_csv(kit / "data" / "train.csv", index=False)
    limit = 150_000_000
    (kit / "problem.toml").write_text(KIT.format(memory="150MB"))
    assert cli("problem", "add", kit).exit_code == 0
    for name, source in (("dummy", DUMMY), ("hog", HOG)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "estimator.py").write_text(source)
        assert cli("submit", "wide", tmp_path / name, "--team", name).exit_code == 0
    try:
        cli("train")
        from datarun.executors.local import local_layout

        pid = json.loads(local_layout(workspace).runner_json.read_text())["pid"]
        runner_rss = psutil.Process(pid).memory_info().rss
        conn = sqlite3.connect(workspace.db_path)
        rows_ = conn.execute("SELECT s.name, t.state, t.error_kind, t.peak_memory FROM tasks t "
                             "JOIN submissions s ON s.id = t.submission ORDER BY t.id").fetchall()
        conn.close()
    finally:
        stop_runners(workspace)
    # The runner (scikit-learn and the 48 MB data set) is over the limit by itself: a task
    # charged for the pages it shares with it would fail whatever it did.
    assert runner_rss > limit
    dummy = [row for row in rows_ if row[0] == "dummy"]
    hog = [row for row in rows_ if row[0] == "hog"]
    assert all(row[1:3] == ("done", None) for row in dummy), rows_
    assert all(row[3] < limit for row in dummy), rows_
    assert all(row[1:3] == ("failed", "memory_limit") for row in hog), rows_
