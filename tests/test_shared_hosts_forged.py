"""Forged results and `host clean` on a host account two workspaces share (see
test_shared_hosts.py for the setting)."""

import json
import os
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from faultcluster import wait_until
from sharedhost import (
    FAILS,
    LOGREG,
    N_TEST,
    N_TRAIN,
    REFUSED,
    Org,
    SharedHost,
    assert_all_own_failure,
    assert_all_own_logreg,
    key_of,
    launch_and_leave,
)

from datarun.store.workspace import Workspace

# --- forged results -----------------------------------------------------------------------


def plant(folder: Path, key: str, nonce: str | None = "not-the-attempts-nonce") -> None:
    """A well-formed finished result in a task folder, predicting Adelie for every row."""
    for name, rows in (("y_pred_train.npy", N_TRAIN), ("y_pred_test.npy", N_TEST)):
        predictions = np.zeros((rows, 3))
        predictions[:, 0] = 1.0
        np.save(folder / name, predictions, allow_pickle=False)
    result = {
        "key": key, "state": "done", "error_kind": None, "error": None, "train_time": 0.1,
        "valid_time": 0.01, "test_time": 0.01, "wall_time": 0.2, "cpu_time": 0.2,
        "peak_memory": 1000000, "started_at": 1764300000.0, "finished_at": 1764300000.2,
        "predictions": {"train": "y_pred_train.npy", "test": "y_pred_test.npy"},
        "environment": {"hostname": "forger"},
    }
    if nonce is not None:
        result["nonce"] = nonce
    (folder / ".result.json.tmp").write_text(json.dumps(result))
    (folder / ".result.json.tmp").replace(folder / "result.json")
    shared_user = folder.stat()
    for path in folder.glob("*result*"), folder.glob("y_pred_*.npy"):
        for item in path:
            os.chown(item, shared_user.st_uid, shared_user.st_gid)


def launch_gated(shared: SharedHost, org: Org) -> tuple[int, dict[int, dict]]:
    """A logistic regression waiting at the gate: launched, its first two tasks running."""
    sub = org.submit(shared.tmp, LOGREG.format(gate=str(shared.gate)))
    assert org("dispatch", "--json").exit_code == 0
    tasks = {t["fold"]: t for t in org.tasks(sub)}
    folder = shared.tasks_of(org)
    wait_until(lambda: all((folder / key_of(tasks[fold]) / "status.json").exists() for fold in (0, 1)),
               60, "the first two tasks running on the host")
    return sub, tasks


def host_says(org: Org, keys: list[str]) -> dict[str, str]:
    """What the host reports of these tasks (the executor's own poll)."""
    from datarun.executors.hosts import load_hosts
    from datarun.executors.ssh import SSHExecutor

    workspace = Workspace(org.root)
    executor = SSHExecutor(workspace, load_hosts(workspace.hosts_file)["node"])
    try:
        return {key: task.state for key, task in executor.poll(keys).tasks.items()}
    finally:
        executor.close()


def test_a_forged_result_with_a_wrong_nonce_is_refused_recorded_and_never_scored(shared):
    b = shared.workspace("b")
    sub, tasks = launch_gated(shared, b)
    first, second = tasks[0], tasks[1]
    folder = shared.tasks_of(b)
    plant(folder / key_of(first), key_of(first))
    plant(folder / key_of(second), key_of(second), nonce=None)
    # As if this attempt's host had been lost twice before: this loss is its last.
    conn = sqlite3.connect(Workspace(b.root).db_path)
    with conn:
        conn.execute("UPDATE tasks SET lost = 2 WHERE id = ?", [second["id"]])
    conn.close()
    # The forgeries are what the host reports as finished: only the nonce tells them apart.
    assert host_says(b, [key_of(first), key_of(second)]) == {key_of(first): "finished",
                                                            key_of(second): "finished"}

    passed = b("dispatch", "--json")
    assert passed.exit_code == 0, passed.stderr
    assert passed.json()["requeued"] == 2 and passed.json()["collected"] == 0
    shown = {t["fold"]: t for t in b.tasks(sub)}
    # Refused and recorded; the attempt counts as lost on its host (re-queued, or failed as
    # host_lost on its last try), and nothing of the forgery is scored.
    conn = sqlite3.connect(Workspace(b.root).db_path)
    lost = dict(conn.execute("SELECT id, lost FROM tasks").fetchall())
    conn.close()
    assert (lost[first["id"]], lost[second["id"]]) == (1, 3)
    assert shown[0]["state"] in ("queued", "running") and shown[0]["scores"] == {}
    assert [(e["attempt"], e["kind"], e["host"], e["text"]) for e in shown[0]["events"]] == [
        (1, "result_refused", "node", REFUSED)]
    assert (shown[1]["state"], shown[1]["error_kind"]) == ("failed", "host_lost")
    assert shown[1]["error"] == ("result from host node refused: result.json carries no nonce: it is not "
                                 "this attempt's result (lost 3 of 3 times)")
    assert shown[1]["scores"] == {} and shown[1]["environment"] is None
    assert [e["kind"] for e in shown[1]["events"]] == ["result_refused"]
    assert f"fold 0 attempt 1: {REFUSED}" in b("submission", "show", sub).stdout
    logs = b("logs", first["id"], "--json").json()
    assert logs["events"][0]["text"] == REFUSED

    shared.open_gate()
    trained = b("train", "--json")
    assert trained.exit_code == 0, trained.stderr  # the open tasks: fold 1 is over already
    final = {t["fold"]: t for t in b.tasks(sub)}
    # Done by a real fit: the new attempt's, or the first one's own result, taken late once
    # it overwrote the forgery (the first complete result of the attempt's own wins).
    assert final[0]["state"] == "done"
    assert final[0]["scores"]["valid"]["accuracy"] > 0.8
    assert final[0]["environment"]["hostname"] != "forger"
    # Recorded once: what the given-up attempt's folder yields later is not recorded again.
    assert [e["text"] for e in final[0]["events"]] == [REFUSED]
    assert (final[2]["state"], final[3]["state"]) == ("done", "done")


def test_negative_control_without_the_nonce_check_the_forgery_would_be_scored(shared, monkeypatch):
    """The same forgery with the nonce check switched off: taken as the task's result."""
    import datarun.dispatch.results as results

    monkeypatch.setattr(results, "check_nonce", lambda data, nonce: None)
    b = shared.workspace("b")
    sub, tasks = launch_gated(shared, b)
    plant(shared.tasks_of(b) / key_of(tasks[0]), key_of(tasks[0]))
    assert b("dispatch", "--json").exit_code == 0
    taken = {t["fold"]: t for t in b.tasks(sub)}[0]
    assert (taken["state"], taken["attempt"]) == ("done", 1)
    assert taken["environment"]["hostname"] == "forger"
    assert taken["scores"]["valid"]["accuracy"] == pytest.approx(1 / 3, abs=0.1)  # all Adelie
    assert taken["events"] == []


# --- host clean and host check ------------------------------------------------------------


def test_host_clean_removes_only_this_workspaces_leftovers(shared):
    a, b = shared.workspace("a"), shared.workspace("b")
    sub_a, keys_a = launch_and_leave(shared, a, FAILS.format(gate=None))
    left_by_a = sorted(p.name for p in shared.tasks_of(a).iterdir())
    sub_b, tasks = launch_gated(shared, b)
    mine = shared.tasks_of(b)

    # Everything of B's on the host is running as far as its database knows: all kept.
    cleaned = b("host", "clean", "node", "--json")
    assert cleaned.exit_code == 0, cleaned.stderr
    result = cleaned.json()
    assert (result["host"], result["workspace_id"], result["removed"], result["running"]) == (
        "node", b.id, [], [])
    assert result["kept"] == sorted(key_of(t) for t in tasks.values())

    # An attempt given up on (as after its host went silent) that still runs there: kept
    # without --force, cancelled and removed with it.
    given_up = tasks[0]
    conn = sqlite3.connect(Workspace(b.root).db_path)
    with conn:
        conn.execute("UPDATE tasks SET state = 'queued', host = NULL, slot = NULL WHERE id = ?",
                     [given_up["id"]])
    conn.close()
    result = b("host", "clean", "node", "--json").json()
    assert (result["removed"], result["running"]) == ([], [key_of(given_up)])
    text = b("host", "clean", "node")
    assert "1 attempts given up on still run there: `datarun host clean node --force`" in text.stderr
    result = b("host", "clean", "node", "--force", "--json").json()
    assert (result["removed"], result["running"]) == ([key_of(given_up)], [])
    assert not (mine / key_of(given_up)).exists()
    assert sorted(p.name for p in shared.tasks_of(a).iterdir()) == left_by_a

    shared.open_gate()
    assert b("train", "--json").exit_code == 0
    assert_all_own_logreg(b, sub_b)
    # Finished attempts given up on: folders no sync of B's will collect or remove.
    sub_c, keys_c = launch_and_leave(shared, b, LOGREG.format(gate=None))
    conn = sqlite3.connect(Workspace(b.root).db_path)
    with conn:
        conn.execute("UPDATE tasks SET state = 'queued', host = NULL, slot = NULL WHERE submission = ?",
                     [sub_c])
    conn.close()
    result = b("host", "clean", "node", "--json").json()
    assert set(keys_c) <= set(result["removed"]) and result["freed"] > 0
    assert (result["running"], result["kept"]) == ([], [])
    assert list(mine.iterdir()) == []
    assert "host node: removed 0 task folders of this workspace" in b("host", "clean", "node").stderr

    # B's host check sees A's folder as one other workspace, its size only.
    sharing = b("host", "check", "node", "--json").json()["hosts"][0]["sharing"]
    assert (sharing["other_workspaces"], sharing["own_tasks"]) == (1, 0)
    assert sharing["other_bytes"] > 0 and sharing["cache_bytes"] > 0
    # A's leftovers were never touched: A collects its own results.
    assert sorted(p.name for p in shared.tasks_of(a).iterdir()) == left_by_a
    assert a("train", "--json").exit_code == 1
    assert set(keys_a) <= {key_of(t) for t in assert_all_own_failure(a, sub_a)}


def test_host_clean_refuses_an_unknown_host_and_waits_for_no_dispatcher(shared):
    from datarun.dispatch.train import dispatcher_lock

    b = shared.workspace("b")
    unknown = b("host", "clean", "nowhere")
    assert unknown.exit_code == 2
    assert unknown.stderr == "error: unknown host 'nowhere' (hosts.toml has: node)\n"
    with dispatcher_lock(Workspace(b.root), wait=False):
        busy = b("host", "clean", "node")
    assert busy.exit_code == 3
    assert busy.stderr == ("error: another datarun dispatcher is running in this workspace; "
                           "try again when it ends\n")

