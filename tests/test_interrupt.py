"""Ctrl-C on `train`: the runner is detached and its tasks go on, so the interrupted
command says which tasks keep running on which hosts, and how to stop them."""

import signal

from conftest import EXAMPLES, stop_runners
from faultcluster import datarun_process, task_rows, wait_until

from datarun.dispatch.train import interrupted_lines
from datarun.store.tasks import Task, TaskState

SLOW = """\
import time

from sklearn.dummy import DummyClassifier


class Slow(DummyClassifier):
    def fit(self, X, y):
        time.sleep(60)
        return super().fit(X, y)


def get_estimator():
    return Slow()
"""


def test_interrupted_train_names_the_running_tasks_their_hosts_and_cancel(workspace, cli, tmp_path):
    assert cli("problem", "add", EXAMPLES / "iris").exit_code == 0
    slow = tmp_path / "slow"
    slow.mkdir()
    (slow / "estimator.py").write_text(SLOW)
    assert cli("submit", "iris", slow, "--team", "a").exit_code == 0
    train = datarun_process(workspace, "train")
    try:
        wait_until(lambda: sum(row["state"] == "running" for row in task_rows(workspace).values()) >= 2,
                   60, "two tasks running")
        train.send_signal(signal.SIGINT)
        _, stderr = train.communicate(timeout=30)
        assert train.returncode == 130, stderr
        assert "Traceback" not in stderr, stderr
        lines = stderr.splitlines()
        head = next(i for i, line in enumerate(lines) if line.startswith("interrupted:"))
        assert lines[head].startswith("interrupted: ") and "keep running on 1 host:" in lines[head], stderr
        assert lines[head + 1].startswith("  host local: submission 1 fold "), stderr
        assert "`datarun cancel SUBMISSION` for each of 1" in lines[head + 2], stderr
        # They do keep running: the lines told the truth.
        assert any(row["state"] == "running" for row in task_rows(workspace).values())
        assert cli("cancel", "1").exit_code == 0
    finally:
        if train.poll() is None:
            train.kill()
            train.communicate()
        stop_runners(workspace)


def task(submission: int, fold: int, host: str) -> Task:
    return Task(id=fold + 1, submission=submission, fold=fold, problem="p", state=TaskState.RUNNING,
                host=host)


def test_interrupted_lines_per_host_and_when_nothing_runs():
    lines = interrupted_lines({"node1": [task(3, 0, "node1"), task(4, 1, "node1")],
                               "local": [task(3, 2, "local")]}, queued=5)
    assert lines == [
        "interrupted: 3 tasks keep running on 2 hosts:",
        "  host local: submission 3 fold 2",
        "  host node1: submission 3 fold 0, submission 4 fold 1",
        "the next `datarun train` (or `datarun dispatch`) collects their results, 5 queued wait "
        "for it; to stop them: `datarun cancel SUBMISSION` for each of 3 4",
    ]
    assert interrupted_lines({}, queued=0) == ["interrupted: no task is running on any host"]
    assert interrupted_lines({}, queued=2) == [
        "interrupted: no task is running on any host; 2 queued wait for the next `datarun train`"]
