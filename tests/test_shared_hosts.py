"""Two workspaces sharing one host account never swap results (issue 17), for real.

One sshd on loopback logs both workspaces in as the same user, into the same workdir,
under the same host name in both hosts.toml, as two organisers sharing a compute account
would (two challenges, or one made again with `datarun init`). Both register the same
penguins-like kit and have one submission each, so their task keys are the same
(`t1-a1`, `t2-a1`, ...): workspace A's submission raises a message of its own in `fit`,
B's is a plain logistic regression. Everything goes through the CLI; results are read
back with `submission show --json`.

What must hold: each workspace gets only its own results, whatever the other left on the
host and in whatever order they run; a result that does not carry its attempt's nonce is
refused, recorded, never scored (with a negative control: the same forgery taken when the
check is off); a stale folder is never merged into nor collected; `host clean` removes
only this workspace's leftovers; `host check` says how the workdir is shared. The last
test does the same on the local host, whose working folder two workspaces share once it
moves out of `.datarun/`.
"""

import json
import os
import shutil
import signal
import sqlite3
import textwrap
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from faultcluster import datarun_process, trace_folder, wait_until
from faultproxy import host_workdir, stop_host_runner
from sshd import pin

from datarun.remote.common import Layout
from datarun.store.workspace import Workspace

FAILURE = "penguin-specific failure 7731"
N_TRAIN, N_TEST, N_FOLDS = 120, 30, 4
SPECIES = ("Adelie", "Chinstrap", "Gentoo")

KIT_TOML = """
name = "penguins"
title = "Palmer-like penguins"
kind = "classification"

[data]
train = "data/train.csv"
test = "data/test.csv"
target = "species"

[cv]
strategy = "stratified-kfold"
n_splits = 4
seed = 3

[workflow]
kind = "estimator"

[scores]
names = ["accuracy"]

[limits]
wall_time = "120s"
memory = "2GB"
"""

# Waits for a gate file (so a test acts while the task is surely running), then fails.
FAILS = """
import os
import time

GATE = {gate!r}


class PenguinModel:
    def fit(self, X, y):
        deadline = time.time() + 120
        while GATE and not os.path.exists(GATE) and time.time() < deadline:
            time.sleep(0.05)
        raise ValueError("penguin-specific failure 7731")


def get_estimator():
    return PenguinModel()
"""

LOGREG = """
import os
import time

from sklearn.linear_model import LogisticRegression

GATE = {gate!r}


class Gated(LogisticRegression):
    def fit(self, X, y):
        deadline = time.time() + 120
        while GATE and not os.path.exists(GATE) and time.time() < deadline:
            time.sleep(0.05)
        return super().fit(X, y)


def get_estimator():
    return Gated(max_iter=1000)
"""

REFUSED = ("result from host node refused: result.json carries another attempt's nonce: "
           "it is not this attempt's result")


def make_penguins_kit(root: Path) -> Path:
    """Three species told apart by bill, flipper and mass, like Palmer's penguins."""
    kit = root / "kit-penguins"
    (kit / "data").mkdir(parents=True)
    (kit / "problem.toml").write_text(KIT_TOML)
    rng = np.random.default_rng(7)
    means = {"Adelie": (38.8, 18.3, 190.0, 3700.0), "Chinstrap": (48.8, 18.4, 196.0, 3730.0),
             "Gentoo": (47.5, 15.0, 217.0, 5076.0)}
    for name, rows in (("train.csv", N_TRAIN), ("test.csv", N_TEST)):
        lines = ["bill_length_mm,bill_depth_mm,flipper_length_mm,body_mass_g,species"]
        for i in range(rows):
            species = SPECIES[i % 3]
            values = rng.normal(means[species], (2.5, 1.0, 6.0, 300.0))
            lines.append(",".join(f"{v:.1f}" for v in values) + f",{species}")
        (kit / "data" / name).write_text("\n".join(lines) + "\n")
    return kit


@dataclass
class Org:
    """One organiser's workspace, driven through the CLI with `--workspace`."""

    root: Path
    cli: object

    @property
    def at(self) -> tuple:
        return ("--workspace", str(self.root))

    def __call__(self, *args):
        return self.cli(*self.at, *args)

    @property
    def id(self) -> str:
        return self("status", "--json").json()["workspace"]["id"]

    def submit(self, tmp: Path, code: str) -> int:
        folder = tmp / f"sub-{uuid.uuid4().hex[:6]}"
        folder.mkdir()
        (folder / "estimator.py").write_text(textwrap.dedent(code))
        result = self("submit", "penguins", folder, "--team", self.root.name, "--json")
        assert result.exit_code == 0, result.stderr
        return result.json()["id"]

    def show(self, submission: int) -> dict:
        result = self("submission", "show", submission, "--json")
        assert result.exit_code == 0, result.stderr
        return result.json()

    def tasks(self, submission: int) -> list[dict]:
        return self.show(submission)["tasks"]


class SharedHost:
    """One SSH host account, one workdir, any number of workspaces registering it as `node`."""

    def __init__(self, server, cli, tmp: Path):
        self.server, self.cli, self.tmp = server, cli, tmp
        self.workdir = f"~/shared-{uuid.uuid4().hex[:8]}"
        self.folder = host_workdir(server, self.workdir)
        self.kit = make_penguins_kit(tmp)
        self.trace = trace_folder()
        self.gate = self.trace / "gate"

    def workspace(self, name: str) -> Org:
        """`datarun init`, the shared host in hosts.toml (and its key pinned), the kit registered."""
        root = self.tmp / name
        made = self.cli("init", root)
        assert made.exit_code == 0, made.stderr
        # isolation "none": the submissions here wait for a gate file and leave traces on
        # the host (the sharing of a workdir, not the sandbox, is what these tests are about).
        table = self.server.host_table(workdir=self.workdir, slots=2, command_timeout=30.0,
                                       isolation="none")
        lines = ["[hosts.node]"] + [f"{key} = {json.dumps(value)}" for key, value in table.items()]
        (root / "hosts.toml").write_text("\n".join(lines) + "\n")
        pin(Workspace(root), self.server)
        org = Org(root, self.cli)
        added = org("problem", "add", self.kit)
        assert added.exit_code == 0, added.stderr
        return org

    def tasks_of(self, org: Org, space: str | None = None) -> Path:
        """A workspace's task folders on the host (read directly: the host is this machine)."""
        return Layout(self.folder, space or org.id).tasks

    def give_to_host_user(self, top: Path) -> None:
        """What the test wrote in the host's workdir belongs to the host's user, as if it
        had written it (the test runs as root when the host user is another)."""
        import pwd

        user = pwd.getpwnam(self.server.user)
        for path in [top, *top.rglob("*")]:
            os.chown(path, user.pw_uid, user.pw_gid, follow_symlinks=False)

    def open_gate(self) -> None:
        self.gate.touch()

    def close(self) -> None:
        self.open_gate()  # let gated tasks end, then stop every runner of the workdir
        stop_host_runner(self.folder)
        shutil.rmtree(self.trace, ignore_errors=True)


@pytest.fixture
def shared(tmp_path, sshd_a, cli):
    host = SharedHost(sshd_a, cli, tmp_path)
    yield host
    host.close()


def key_of(task: dict) -> str:
    return f"t{task['id']}-a{task['attempt']}"


def launch_and_leave(shared: SharedHost, org: Org, code: str) -> tuple[int, list[str]]:
    """Submit, run one `dispatch` pass (tasks launched on the host), never collect; the keys
    launched, once their results sit in the workspace's folder there."""
    submission = org.submit(shared.tmp, code)
    passed = org("dispatch", "--json")
    assert passed.exit_code == 0, passed.stderr
    assert passed.json()["launched"] >= 2
    keys = [key_of(t) for t in org.tasks(submission) if t["state"] == "running"]
    assert len(keys) >= 2
    tasks = shared.tasks_of(org)
    wait_until(lambda: all((tasks / key / "result.json").exists() for key in keys), 60,
               f"{org.root.name}'s launched tasks to finish on the host")
    return submission, keys


def assert_all_own_logreg(org: Org, submission: int, host: str = "node") -> list[dict]:
    """Every fold done by the logistic regression, nothing of the other workspace's."""
    shown = org.show(submission)
    assert shown["state"] == "done", shown
    for task in shown["tasks"]:
        assert (task["state"], task["error_kind"], task["error"]) == ("done", None, None), task
        assert task["scores"]["valid"]["accuracy"] > 0.8
        assert task["environment"]["host"] == host
    assert FAILURE not in json.dumps(shown)
    for task in shown["tasks"]:
        assert FAILURE not in org("logs", task["id"]).stdout
    return shown["tasks"]


def assert_all_own_failure(org: Org, submission: int) -> list[dict]:
    tasks = org.tasks(submission)
    assert len(tasks) == N_FOLDS
    for task in tasks:
        assert (task["state"], task["error_kind"]) == ("failed", "fit_error"), task
        assert FAILURE in task["error"]
    return tasks


# --- the interleavings -------------------------------------------------------------


def test_a_workspace_never_takes_the_results_another_left_on_the_shared_host(shared):
    a, b = shared.workspace("a"), shared.workspace("b")
    assert a.id != b.id
    sub_a, keys_a = launch_and_leave(shared, a, FAILS.format(gate=None))
    left_by_a = {key: (shared.tasks_of(a) / key / "result.json").read_bytes() for key in keys_a}
    assert all(FAILURE.encode() in data for data in left_by_a.values())

    sub_b = b.submit(shared.tmp, LOGREG.format(gate=None))
    trained = b("train", "--json")
    assert trained.exit_code == 0, trained.stderr
    assert (trained.json()["done"], trained.json()["failed"]) == (N_FOLDS, 0)
    tasks_b = assert_all_own_logreg(b, sub_b)
    # The same keys A launched: without a folder per workspace they would have met.
    assert set(keys_a) <= {key_of(task) for task in tasks_b}
    assert all(task["events"] == [] for task in tasks_b)
    # A's results are still there, untouched by B's runs and B's cleanup.
    for key, data in left_by_a.items():
        assert (shared.tasks_of(a) / key / "result.json").read_bytes() == data

    trained = a("train", "--json")
    assert trained.exit_code == 1  # its submission fails, as it should
    assert (trained.json()["done"], trained.json()["failed"]) == (0, N_FOLDS)
    tasks_a = assert_all_own_failure(a, sub_a)
    # What A launched was collected, not run again.
    assert set(keys_a) <= {key_of(task) for task in tasks_a}
    assert all(task["events"] == [] for task in tasks_a)
    assert_all_own_logreg(b, sub_b)  # and nothing of B's changed meanwhile


def test_the_same_when_the_first_workspaces_dispatcher_is_killed_mid_train(shared):
    a, b = shared.workspace("a"), shared.workspace("b")
    sub_a = a.submit(shared.tmp, FAILS.format(gate=str(shared.gate)))
    training = datarun_process(Workspace(a.root), "train", "--json")
    tasks = shared.tasks_of(a)
    try:
        wait_until(lambda: tasks.is_dir() and len(list(tasks.glob("*/status.json"))) >= 2, 60,
                   "two of A's tasks running on the host")
    finally:
        training.send_signal(signal.SIGKILL)
        training.wait(10)
    running_a = [key_of(t) for t in a.tasks(sub_a) if t["state"] == "running"]
    assert len(running_a) >= 2

    sub_b = b.submit(shared.tmp, LOGREG.format(gate=None))
    trained = b("train", "--json")
    assert trained.exit_code == 0, trained.stderr
    tasks_b = assert_all_own_logreg(b, sub_b)
    assert set(running_a) <= {key_of(task) for task in tasks_b}

    shared.open_gate()  # A's tasks, left running by its dead dispatcher, now fail on their own
    trained = a("train", "--json")
    assert trained.exit_code == 1
    tasks_a = assert_all_own_failure(a, sub_a)
    assert set(running_a) <= {key_of(task) for task in tasks_a}  # collected, not run again
    assert_all_own_logreg(b, sub_b)


def test_a_workspace_made_again_with_init_gets_none_of_the_old_results(shared):
    old = shared.workspace("a")
    old_id = old.id
    _, keys = launch_and_leave(shared, old, FAILS.format(gate=None))
    shutil.rmtree(old.root)  # the database is lost; the organiser starts again in place

    again = shared.workspace("a")
    assert again.id != old_id
    sub = again.submit(shared.tmp, LOGREG.format(gate=None))
    trained = again("train", "--json")
    assert trained.exit_code == 0, trained.stderr
    tasks = assert_all_own_logreg(again, sub)
    assert set(keys) <= {key_of(task) for task in tasks}
    assert all(task["events"] == [] for task in tasks)
    # The old workspace's folder is left as it was, and `host check` shows it.
    assert all((shared.tasks_of(again, old_id) / key / "result.json").exists() for key in keys)
    check = again("host", "check", "node", "--json")
    assert check.exit_code == 0, check.stderr
    sharing = check.json()["hosts"][0]["sharing"]
    assert sharing["workspace"] == again.id and sharing["workdir"] == str(shared.folder)
    assert sharing["other_workspaces"] == 1 and sharing["other_bytes"] > 0
    text = again("host", "check", "node").stdout
    assert f"node: workdir {shared.folder} shared with 1 other workspace holding " in text


def test_stale_task_folders_are_refused_never_merged_into_nor_collected(shared):
    """Folders of this workspace's own keys already on the host (a datarun from before
    workspace folders, or this workspace restored from an older backup, left them): each
    bundle meeting one is refused there, recorded, and sent again as a new attempt."""
    a, b = shared.workspace("a"), shared.workspace("b")
    _, keys = launch_and_leave(shared, a, FAILS.format(gate=None))
    stale = shared.tasks_of(b)
    stale.mkdir(parents=True)
    for key in keys:
        shutil.copytree(shared.tasks_of(a) / key, stale / key)
    shared.give_to_host_user(shared.folder / "workspaces")
    before = {key: sorted((p.relative_to(stale), p.read_bytes()) for p in (stale / key).rglob("*")
                          if p.is_file()) for key in keys}

    sub = b.submit(shared.tmp, LOGREG.format(gate=None))
    trained = b("train", "--json")
    assert trained.exit_code == 0, trained.stderr
    tasks = assert_all_own_logreg(b, sub)
    text = b("submission", "show", sub).stdout
    for task in tasks:
        if f"t{task['id']}-a1" in keys:
            assert task["attempt"] == 2
            assert [(e["attempt"], e["kind"], e["text"]) for e in task["events"]] == [(
                1, "bundle_refused",
                f"host node refused the bundle: task folder t{task['id']}-a1 already exists on the "
                "host (finished): a bundle is never merged into an older one; send the task again "
                "under a new key")]
            assert f"fold {task['fold']} attempt 1: host node refused the bundle: task folder" in text
        else:
            assert task["events"] == []
    # The stale folders are as they were: nothing merged in, nothing taken out.
    for key in keys:
        assert sorted((p.relative_to(stale), p.read_bytes()) for p in (stale / key).rglob("*")
                      if p.is_file()) == before[key]


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


# --- the local host -----------------------------------------------------------------------


def test_on_the_local_host_too_each_workspace_has_its_own_folder(tmp_path, cli, monkeypatch):
    """Two workspaces whose local host uses one working folder (its default, ~/.datarun-host,
    is the same for every workspace of a user): each has its own folder and runner there."""
    shared_folder = tmp_path / "local-host"
    kit = make_penguins_kit(tmp_path)
    orgs = {}
    for name in ("a", "b"):
        assert cli("init", tmp_path / name).exit_code == 0
        orgs[name] = Org(tmp_path / name, cli)
        assert orgs[name]("problem", "add", kit).exit_code == 0
    a, b = orgs["a"], orgs["b"]
    for org in (a, b):  # the same `workdir` for both (and no sandbox: the tasks leave traces)
        (org.root / "hosts.toml").write_text(
            f'[hosts.local]\nexecutor = "local"\nslots = 2\nworkdir = "{shared_folder}"\n'
            'isolation = "none"\n')
    run_both_on(shared_folder, a, b, tmp_path)
    # By default the local host's folder is ~/.datarun-host, the workspace's own folder in it.
    from datarun.executors.local import local_layout

    (a.root / "hosts.toml").write_text('[hosts.local]\nexecutor = "local"\n')
    own = local_layout(Workspace(a.root))
    assert own.space == Path.home() / ".datarun-host" / "workspaces" / a.id


def run_both_on(shared_folder: Path, a: Org, b: Org, tmp_path: Path) -> None:
    try:
        sub_a = a.submit(tmp_path, FAILS.format(gate=None))
        assert a("dispatch", "--json").exit_code == 0
        running = [key_of(t) for t in a.tasks(sub_a) if t["state"] == "running"]
        folder_a = Layout(shared_folder, a.id).tasks
        wait_until(lambda: all((folder_a / key / "result.json").exists() for key in running), 60,
                   "A's tasks to finish on the local host")
        sub_b = b.submit(tmp_path, LOGREG.format(gate=None))
        assert b("train", "--json").exit_code == 0
        tasks_b = assert_all_own_logreg(b, sub_b, host="local")
        assert set(running) <= {key_of(t) for t in tasks_b}
        assert a("train", "--json").exit_code == 1
        assert_all_own_failure(a, sub_a)
        assert sorted(p.name for p in (shared_folder / "workspaces").iterdir()) == sorted([a.id, b.id])
        assert not (shared_folder / "tasks").exists()
        pids = {json.loads(Layout(shared_folder, org.id).runner_json.read_text())["pid"] for org in (a, b)}
        assert len(pids) == 2  # one runner per workspace
    finally:
        stop_host_runner(shared_folder)
