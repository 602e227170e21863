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
only this workspace's leftovers; `host check` says how the workdir is shared. The forged
results and `host clean` are in test_shared_hosts_forged.py; the setting (the host, the
kit, the submissions) in sharedhost.py. The last test here does the same on the local
host, whose working folder two workspaces share once it moves out of `.datarun/`.
"""

import json
import shutil
import signal
from pathlib import Path

from faultcluster import datarun_process, wait_until
from faultproxy import stop_host_runner
from sharedhost import (
    FAILS,
    FAILURE,
    LOGREG,
    N_FOLDS,
    Org,
    assert_all_own_failure,
    assert_all_own_logreg,
    key_of,
    launch_and_leave,
    make_penguins_kit,
)

from datarun.remote.common import Layout
from datarun.store.workspace import Workspace

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
