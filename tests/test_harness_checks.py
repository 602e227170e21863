"""The harness's pure parts as values: prediction checks, limit messages, failure kinds, output caps."""

import fcntl
import os
import signal
import stat
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from harness_helpers import DATA_IRIS, write_dataset

from datarun.remote import ops
from datarun.remote.child import DataSet
from datarun.remote.common import (
    HarnessError,
    Layout,
    check_key,
    release_if_idle,
    runner_alive,
    try_lock,
)
from datarun.remote.tree import OutputBuffer, TaskRun
from datarun.remote.workflows import TaskFailure, _probabilities, _values, import_submission

CLASSES = ["a", "b", "c"]
TASK = {"kind": "classification", "classes": CLASSES}


class Fitted:
    def __init__(self, classes):
        self.classes_ = np.array(classes)


class Unlabelled:
    pass


def _bad(call) -> str:
    with pytest.raises(TaskFailure) as raised:
        call()
    assert raised.value.kind == "bad_predictions"
    return raised.value.text


def test_probabilities_follow_the_task_classes_whatever_the_estimator_order():
    proba = np.array([[0.1, 0.9], [0.8, 0.2]])
    ordered = _probabilities(TASK, Fitted(["c", "a"]), proba, 2, np)
    np.testing.assert_array_equal(ordered, [[0.9, 0, 0.1], [0.2, 0, 0.8]])


def test_numeric_labels_match_their_json_form():
    task = {"kind": "classification", "classes": [0, 1, 2]}
    ordered = _probabilities(task, Fitted(np.array([2, 0, 1])), np.eye(3), 3, np)
    np.testing.assert_array_equal(ordered, [[0, 0, 1], [1, 0, 0], [0, 1, 0]])


@pytest.mark.parametrize("estimator, proba, message", [
    (Fitted(CLASSES), [["x", "y", "z"]], "predict_proba returned non-numbers"),
    (Fitted(CLASSES), np.ones((2, 3)), "predict_proba returned shape (2, 3), expected (1, n_classes)"),
    (Unlabelled(), np.ones((1, 2)), "predict_proba returned 2 columns for 3 classes and the "
                                    "estimator has no classes_"),
    (Fitted(["a", "b"]), np.ones((1, 3)), "predict_proba returned 3 columns but classes_ has 2"),
    (Fitted(["a", "zebra"]), np.ones((1, 2)), "the estimator predicts unknown classes ['zebra']"),
])
def test_malformed_probabilities_are_bad_predictions(estimator, proba, message):
    assert message in _bad(lambda: _probabilities(TASK, estimator, proba, 1, np))


def test_probabilities_without_classes_are_taken_in_order():
    proba = np.full((1, 3), 1 / 3)
    np.testing.assert_array_equal(_probabilities(TASK, Unlabelled(), proba, 1, np), proba)


def test_regression_values_are_checked():
    np.testing.assert_array_equal(_values([[1.0], [2.0]], 2, np), [1.0, 2.0])
    assert "predict returned non-numbers" in _bad(lambda: _values(["a", "b"], 2, np))
    assert "predict returned shape (3,), expected (2,)" in _bad(lambda: _values([1, 2, 3], 2, np))


def test_a_submission_without_its_file_is_an_import_error(tmp_path):
    with pytest.raises(TaskFailure) as raised:
        import_submission(tmp_path, "estimator")
    assert raised.value.kind == "import_error"
    assert raised.value.text == "the submission has no estimator.py"


def test_a_data_set_whose_labels_do_not_match_is_refused(tmp_path):
    write_dataset(tmp_path, DATA_IRIS, "classification")
    folder = tmp_path / "data" / DATA_IRIS
    np.save(folder / "y_train.npy", np.load(folder / "y_train.npy")[:10], allow_pickle=False)
    with pytest.raises(ValueError, match="120 rows in X_train but 10 in y_train"):
        DataSet(folder)


def test_keys_allow_only_safe_characters():
    assert check_key("t42-a1.x_y") == "t42-a1.x_y"
    for bad in ("", "..", "a/b", "a b", "é"):
        with pytest.raises(HarnessError, match="use only letters, digits"):
            check_key(bad)


# --- output capture -------------------------------------------------------------------


def test_output_keeps_head_and_tail_within_the_cap():
    buffer = OutputBuffer(100)
    buffer.add(b"HEAD" + b"." * 46)
    for _ in range(50):
        buffer.add(b"x" * 37)
    buffer.add(b"." * 46 + b"TAIL")
    text = buffer.text()
    assert text.startswith("HEAD") and text.endswith("TAIL")
    assert "[... 1850 bytes of output skipped ...]" in text
    assert len(text) - len("\n[... 1850 bytes of output skipped ...]\n") == 100


def test_short_output_is_kept_whole():
    buffer = OutputBuffer(100)
    buffer.add(b"hello\n")
    assert buffer.text() == "hello\n"


# --- limits and the end of a task ---------------------------------------------------------


def _run(limits=None) -> TaskRun:
    return TaskRun("k", Path("/nonexistent"), {"limits": limits or {}}, pid=999_999, output_fd=-1)


def test_limit_messages_name_the_limit_and_what_was_used():
    run = _run({"memory": 200_000_000})
    run.memory_now = 431_200_000
    assert run.check_limits() == (
        "memory_limit",
        "memory limit 200.0 MB exceeded: peak 431.2 MB (the task's own memory, all its processes)")
    run = _run({"cpu_time": 2.0})
    run.live_cpu = 2.34
    assert run.check_limits() == (
        "cpu_limit", "cpu time limit 2.0 s exceeded: used 2.3 s (whole process tree)")
    run = _run({"wall_time": 1.0})
    run.started = time.perf_counter() - 1.5
    kind, text = run.check_limits()
    assert kind == "timeout" and text.startswith("wall time limit 1.0 s exceeded: ran 1.5 s")
    assert _run({"wall_time": 60.0, "memory": 10**12}).check_limits() is None


def test_how_a_task_ended_gives_its_error_kind():
    run = _run()
    run.child_status = 0
    assert run.failure({"error_kind": None}, "save") is None
    assert run.failure(None, "save") == ("harness_error", "the task ended without its report")
    assert run.failure({"error_kind": None}, "save", predictions_written=False) == (
        "harness_error", "the task ended without writing its predictions")
    assert run.failure({"error_kind": "fit_error", "error": "boom"}, "train") == ("fit_error", "boom")
    run.child_status = signal.SIGKILL  # a raw wait status: killed by that signal
    assert run.failure(None, "valid")[0] == "predict_error"
    assert run.failure(None, "import")[0] == "import_error"
    kind, text = run.failure(None, None)
    assert kind == "harness_error" and text == "the task process was killed by SIGKILL during start-up"
    run.cancelled = True
    assert run.failure(None, "train") == ("cancelled", "cancelled by the organiser")
    run.limit_hit = ("timeout", "wall time limit 1.0 s exceeded")
    assert run.failure(None, "train") == ("timeout", "wall time limit 1.0 s exceeded")


# --- starting the runner ------------------------------------------------------------------


def _fake_python(tmp_path, body: str) -> str:
    script = tmp_path / "python"
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return str(script)


def test_a_runner_that_dies_at_start_is_reported(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "executable", _fake_python(tmp_path, "exit 4"))
    with pytest.raises(HarnessError, match=r"the runner exited at start with code 4; see .*runner.log"):
        ops.start_runner(tmp_path / "work", slots=1, threads=1)


def test_a_runner_that_never_takes_the_folder_is_reported(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "executable", _fake_python(tmp_path, "exec sleep 1"))
    monkeypatch.setattr(ops, "START_TIMEOUT", 0.2)
    with pytest.raises(HarnessError, match=r"the runner did not start within 0 s"):
        ops.start_runner(tmp_path / "work", slots=1, threads=1)


def test_going_idle_keeps_the_folder_when_a_task_arrived_meanwhile(tmp_path):
    layout = Layout(tmp_path / "work").make()
    lock = try_lock(layout.runner_lock)
    try:
        (layout.inbox / "late").touch()
        assert release_if_idle(layout, lock) is False
        assert runner_alive(layout) is True  # still held: nobody else may start
        (layout.inbox / "late").unlink()
        assert release_if_idle(layout, lock) is True
        assert runner_alive(layout) is False
    finally:
        os.close(lock)


def test_going_idle_yields_to_a_runner_that_took_the_folder(tmp_path):
    layout = Layout(tmp_path / "work").make()
    lock = try_lock(layout.runner_lock)
    (layout.inbox / "late").touch()
    fcntl.flock(lock, fcntl.LOCK_UN)
    other = try_lock(layout.runner_lock)  # the new runner, between release and re-check
    try:
        assert release_if_idle(layout, lock) is True
    finally:
        os.close(other)
        os.close(lock)
