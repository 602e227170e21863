"""What the organiser takes from a sensitive problem's host: a sealed result.json of numbers,
nothing more. A result carrying files, oversized, unsealed or with other than numbers is
refused with a line naming what it carried; the same result without the extra is taken
(the control)."""

import json

import numpy as np
import pytest

from datarun.dispatch.results import SensitiveLeak, read_sealed_result
from datarun.remote.sensitive import error_text

NAMES = ["accuracy", "log_loss"]


def sealed(folder, **changes):
    folder.mkdir(parents=True, exist_ok=True)
    data = {"key": "t1-a1", "nonce": "n0", "state": "done", "error_kind": None, "error": None,
            "train_time": 0.1, "valid_time": 0.01, "test_time": 0.01, "wall_time": 0.2, "cpu_time": 0.2,
            "peak_memory": 1000, "started_at": 1.0, "finished_at": 2.0, "measured_by": "procfs",
            "isolation": "sandbox", "environment": {"python": "3.11"}, "sealed": True,
            "scores": [["train", "accuracy", 1.0], ["valid", "accuracy", 0.9], ["valid", "log_loss", None]]}
    data.update(changes)
    (folder / "result.json").write_text(json.dumps(data))
    return folder


def test_a_sealed_result_is_taken_as_its_numbers(tmp_path):
    result, scores = read_sealed_result(sealed(tmp_path / "t"), "t1-a1", "n0", NAMES)
    assert result.state == "done" and result.y_pred_train is None
    assert scores == [("train", "accuracy", 1.0), ("valid", "accuracy", 0.9), ("valid", "log_loss", None)]


@pytest.mark.parametrize("change, message", [
    ({"scores": [["valid", "accuracy", "0.9 setosa"]]}, "its valid accuracy is '0.9 setosa', not a number"),
    ({"scores": [["valid", "accuracy", 0.9], ["valid", "accuracy", 0.8]]},
     "its scores hold \"['valid', 'accuracy', 0.8]\", not [split, score name, number]"),
    ({"scores": [["valid", "species", 0.9]]}, "its scores hold \"['valid', 'species', 0.9]\", not [split, "
                                              "score name, number]"),
    ({"labels": [1, 2, 3]}, "its result.json is not sealed by the host (fields labels)"),
    ({"sealed": False}, "its result.json is not sealed by the host (fields sealed)"),
    ({"state": "failed", "error_kind": "fit_error", "error": "x" * 301},
     "its error text is not a short text (at most 300 characters)"),
    ({"environment": {"padding": "x" * 20000}}, None),
])
def test_a_result_carrying_more_than_numbers_is_refused(tmp_path, change, message):
    with pytest.raises(SensitiveLeak) as caught:
        read_sealed_result(sealed(tmp_path / "t", **change), "t1-a1", "n0", NAMES)
    if message:
        assert str(caught.value) == message
    else:
        assert str(caught.value).startswith("its result.json is ") and "over the 16384 of a sealed result" in str(caught.value)


def test_a_result_with_prediction_files_is_refused(tmp_path):
    folder = sealed(tmp_path / "t")
    np.save(folder / "y_pred_train.npy", np.ones(3))
    (folder / "output.log").write_text("labels")
    with pytest.raises(SensitiveLeak) as caught:
        read_sealed_result(folder, "t1-a1", "n0", NAMES)
    assert str(caught.value) == ("it sent output.log, y_pred_train.npy beside result.json; a sensitive "
                                 "problem's host sends its sealed result.json alone")


def test_error_texts_leave_no_words_of_the_submission():
    traceback = 'Traceback...\n  File "estimator.py", line 9\nValueError: LEAK setosa,virginica'
    assert error_text("fit_error", traceback) == "ValueError (the message stays on the data owner's host)"
    own = "Traceback...\nestimator.SetosaVirginica: 1"
    assert error_text("predict_error", own) == ("an exception of the submission's own class (the message "
                                                "stays on the data owner's host)")
    assert error_text("memory_limit", "memory limit 100 MB exceeded: peak 120 MB\nmore") == \
        "memory limit 100 MB exceeded: peak 120 MB"
    assert error_text("fit_error", traceback, allowed=False) is None


def test_an_unsandboxed_sensitive_task_is_refused_on_the_host(tmp_path):
    from conftest import EXAMPLES

    from datarun.problems.owner import prepare_owned
    from datarun.remote.common import HarnessError
    from datarun.remote.sensitive import place_fold

    manifest = prepare_owned(EXAMPLES / "iris", tmp_path / "wd")
    task = {"data": manifest["data_hash"], "fold": 0, "isolation": "none"}
    (tmp_path / "task").mkdir()
    with pytest.raises(HarnessError) as caught:
        place_fold(tmp_path / "wd", tmp_path / "task", task)
    assert str(caught.value) == ('problem iris is sensitive: this host runs its tasks sandboxed only (remove '
                                 '`isolation = "none"` from its hosts.toml entry)')
    place_fold(tmp_path / "wd", tmp_path / "task", dict(task, isolation="sandbox"))  # the control
    assert (tmp_path / "task" / "train_idx.npy").is_file()


def test_a_host_sending_predictions_of_a_sensitive_problem_is_refused_and_recorded(
        cli, workspace, tmp_path, monkeypatch):
    """The owner's host here is the embedded local host (its own workdir): the test plays a
    host whose harness sends a prediction file beside the sealed result. The result is
    refused and recorded, the file deleted unread; the same run without it is taken."""
    import shutil as shell

    from conftest import EXAMPLES, stop_runners

    import datarun.executors.local as local
    from datarun.problems.owner import prepare_owned

    owner_wd = tmp_path / "owner-wd"
    manifest = prepare_owned(EXAMPLES / "iris", owner_wd)
    workspace.hosts_file.write_text(f'[hosts.hospital]\nexecutor = "local"\nworkdir = "{owner_wd}"\nslots = 2\n')
    (tmp_path / "m.json").write_text(json.dumps(manifest))
    kit = tmp_path / "public"
    kit.mkdir()
    shell.copy(EXAMPLES / "iris" / "problem.toml", kit / "problem.toml")
    assert cli("problem", "add", kit, "--sensitive", "--host", "hospital", "--manifest", tmp_path / "m.json").exit_code == 0
    honest = cli("submit", "iris", EXAMPLES / "iris" / "submissions" / "logreg", "--team", "a", "--json").json()["id"]
    try:
        assert cli("train", "--submission", str(honest)).exit_code == 0  # the control: taken

        real = local.result_files

        def leaky(layout, key):
            files = real(layout, key)
            extra = layout.task(key) / "y_pred_train.npy"
            np.save(extra, np.full(3, 0.123456789))
            return [*files, extra]

        monkeypatch.setattr(local, "result_files", leaky)
        leaked = cli("submit", "iris", EXAMPLES / "iris" / "submissions" / "knn", "--team", "b", "--json").json()["id"]
        assert cli("train", "--submission", str(leaked)).exit_code == 1
    finally:
        stop_runners(workspace)
    tasks = cli("submission", "show", str(leaked), "--json").json()["tasks"]
    first = tasks[0]
    assert (first["state"], first["error_kind"]) == ("failed", "harness_error")
    assert first["error"] == (
        "result from host hospital refused for sensitive problem iris: it sent y_pred_train.npy beside "
        "result.json; a sensitive problem's host sends its sealed result.json alone: check that host's "
        "harness (`datarun host check hospital`)")
    assert [e["kind"] for e in first["events"]] == ["result_refused"]
    needle = np.full(3, 0.123456789).tobytes()
    from datarun.store.blobs import PACKED, unpack_array

    for path in workspace.root.rglob("*"):
        if path.is_file():  # a compacted prediction blob searched as the numbers it holds too
            data = path.read_bytes()
            assert needle not in data and not (data.startswith(PACKED) and needle in unpack_array(data).tobytes())


def test_the_owner_and_host_side_messages(cli, workspace, tmp_path):
    from conftest import EXAMPLES

    from datarun.problems.owner import prepare_owned
    from datarun.remote import ops
    from datarun.remote.common import HarnessError, Layout
    from datarun.remote.sensitive import place_fold, request

    none = cli("owner", "refuse", "iris", "--workdir", tmp_path / "wd")
    assert none.stderr.strip() == (f"error: no sensitive problem 'iris' is prepared in {tmp_path / 'wd'}: run "
                                   "`datarun owner prepare KIT --workdir DIR` first")
    from contract import validate

    prepared = cli("owner", "prepare", EXAMPLES / "iris", "--workdir", tmp_path / "wd", "--json")
    assert validate(prepared.stdout) == "owner-manifest"
    manifest = prepare_owned(EXAMPLES / "iris", tmp_path / "wd")
    refuse = cli("owner", "refuse", "iris", "--workdir", tmp_path / "wd", "--json")
    assert validate(refuse.stdout) == "owner-flags" and refuse.json()["refuse"] is True
    assert cli("owner", "allow", "iris", "--workdir", tmp_path / "wd", "--json").json()["refuse"] is False
    assert cli("owner", "errors", "iris", "--off", "--workdir", tmp_path / "wd", "--json").json()["error_text"] is False
    purged = cli("owner", "purge", "iris", "--workdir", tmp_path / "wd", "--json")
    assert validate(purged.stdout) == "owner-purge"
    assert purged.json() == {"schema": "datarun/owner-purge/1", "problem": "iris", "purged": []}

    for path, text, message in (
            (tmp_path / "absent.json", None, f"error: manifest {tmp_path / 'absent.json'} does not exist"),
            (tmp_path / "garbled.json", "{", f"error: manifest {tmp_path / 'garbled.json'} is not JSON: give the "
                                             "file `datarun owner prepare --json` printed"),
            (tmp_path / "short.json", json.dumps({"format": "datarun-sensitive/1", "problem": "iris"}),
             f"error: manifest {tmp_path / 'short.json'} lacks kind, data_hash, n_train, n_test, n_features, "
             "columns, classes, score_names, folds, folds_hash: give the file `datarun owner prepare` printed")):
        if text is not None:
            path.write_text(text)
        result = cli("problem", "add", EXAMPLES / "iris", "--sensitive", "--host", "local", "--manifest", path)
        assert result.stderr.strip() == message
    assert cli("problem", "add", EXAMPLES / "iris").exit_code == 0
    not_sensitive = cli("problem", "check", "iris")
    assert not_sensitive.stderr.strip() == ("error: problem iris is not sensitive: its predictions are in this "
                                            "workspace")

    wd = tmp_path / "wd"
    with pytest.raises(HarnessError, match="^this host holds no sensitive data set abc: has its owner run "):
        request(wd, None, json.dumps({"op": "bag", "data": "abc"}))
    with pytest.raises(HarnessError, match="^unknown sensitive request 'steal'$"):
        request(wd, None, json.dumps({"op": "steal", "data": manifest["data_hash"]}))
    with pytest.raises(HarnessError, match="^the sensitive request is not JSON$"):
        request(wd, None, "{")
    (tmp_path / "task").mkdir()
    with pytest.raises(HarnessError, match="^problem iris has no fold 9 on this host$"):
        place_fold(wd, tmp_path / "task", {"data": manifest["data_hash"], "fold": 9})

    layout = Layout(wd, "space1").make()
    layout.task("t1-a1").mkdir()
    (layout.task("t1-a1") / "task.json").write_text(json.dumps({"data": manifest["data_hash"]}))
    (layout.task("t1-a1") / "output.log").write_text("setosa")
    with pytest.raises(HarnessError, match="^task t1-a1 is of a sensitive problem: its output stays on this host$"):
        ops.log(wd, "t1-a1", space="space1")
    assert layout.result_files("t1-a1") == []  # nothing of an unsealed sensitive result is packed
