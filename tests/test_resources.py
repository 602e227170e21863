"""What a problem's tasks need of a host, as data and through the CLI on the local host.

Placement as values: a task goes only to a host with the tags, GPUs, threads and memory
its problem asks for; a GPU task takes devices no other task of its host holds, a CPU
task none. And the one report for tasks that fit no host (a requirement, a memory limit
over every cap, a host that takes no task, no host at all): `train` says it at once and
stops with exit 1 instead of waiting, `dispatch` says it and exits 1, `status` shows it.
"""

import shutil

import pytest
from conftest import EXAMPLES, stop_runners

from datarun.dispatch.schedule import FreeSeats, assign, free_seats, unfit, why_not
from datarun.errors import UsageError
from datarun.executors.hosts import Host
from datarun.problems.resources import Needs, parse_needs, parse_resources
from datarun.store import hosts as stored_hosts
from datarun.store.db import open_db
from datarun.store.tasks import Task, TaskState

GB = 1000**3


def task(task_id: int, problem: str = "p", host: str | None = None, slot: int | None = None,
         devices: list[int] | None = None) -> Task:
    return Task(id=task_id, submission=1, fold=task_id, problem=problem,
                state=TaskState.RUNNING if host else TaskState.QUEUED, host=host, slot=slot,
                limits={"memory": GB, "devices": devices or []} if host else None)


# -- parsing ---------------------------------------------------------------------------------

def test_resources_read_from_a_table_and_from_needs_options():
    assert parse_resources({"tags": ["gpu", "big"], "gpus": 1, "memory": "8GB", "threads": 4}) == Needs(
        ("gpu", "big"), 1, 8 * GB, 4)
    assert parse_needs(["tags=gpu,big", "gpus=1", "memory=8GB", "threads=4"]) == {
        "tags": ["gpu", "big"], "gpus": 1, "memory": "8GB", "threads": 4}
    assert Needs(("gpu",), 1, 8 * GB, 4).describe() == "tags gpu; 1 GPU; memory 8.0 GB; 4 threads"
    assert Needs().describe() == "nothing special"


@pytest.mark.parametrize(("table", "message"), [
    ({"gpu": 1}, "problem.toml: [resources]: unknown key 'gpu' (known: tags, gpus, memory, threads)"),
    ({"gpus": -1}, "problem.toml: [resources] gpus must be a whole number >= 0, got -1"),
    ({"gpus": True}, "problem.toml: [resources] gpus must be a whole number >= 0, got True"),
    ({"threads": 0}, "problem.toml: [resources] threads must be a whole number >= 1, got 0"),
    ({"tags": [1]}, "problem.toml: [resources] tags must be a list of tag names, got [1]"),
    ({"memory": "lots"}, "problem.toml: [resources] memory: expected a size like '512MB' or '2GB', got 'lots'"),
])
def test_bad_resources_are_refused_in_one_line(table, message):
    with pytest.raises(UsageError) as error:
        parse_resources(table)
    assert str(error.value) == message


@pytest.mark.parametrize(("option", "message"), [
    ("gpus", "--needs 'gpus': expected KEY=VALUE, e.g. gpus=1, tags=gpu,big, memory=8GB or threads=4"),
    ("cores=2", "--needs 'cores=2': unknown key 'cores' (known: tags, gpus, memory, threads)"),
    ("gpus=one", "--needs 'gpus=one': gpus must be a whole number"),
])
def test_bad_needs_options_are_refused_in_one_line(option, message):
    with pytest.raises(UsageError) as error:
        parse_needs([option])
    assert str(error.value) == message


def test_a_kit_table_that_is_not_a_table_is_refused():
    with pytest.raises(UsageError, match=r"^problem.toml: \[resources\] must be a table$"):
        parse_resources(["gpu"])


# -- placement -------------------------------------------------------------------------------

def test_what_a_host_lacks_is_said_requirement_by_requirement():
    gpu = Host("g", executor="ssh", address="x", slots=4, gpus=2, tags=("gpu",), threads=2, memory=16 * GB)
    cpu = Host("c", executor="ssh", address="x", slots=4, tags=("cpu",), memory=GB)
    needs = Needs(("gpu",), 1)
    assert why_not(gpu, needs, {"memory": GB}) is None
    assert why_not(cpu, needs, {}) == "no tag gpu (has cpu)"
    assert why_not(Host("n", slots=1), needs, {}) == "no tag gpu"
    assert why_not(gpu, Needs(gpus=4), {}) == "2 GPUs, 4 needed"
    assert why_not(gpu, Needs(threads=4), {}) == "2 threads per slot, 4 needed"
    assert why_not(gpu, Needs(memory=32 * GB), {}) == "memory 16.0 GB, 32.0 GB needed"
    assert why_not(cpu, Needs(), {"memory": 2 * GB}) == "memory cap 1.0 GB under the task's limit 2.0 GB"
    assert why_not(Host("u", slots=1), Needs(memory=32 * GB), {"memory": 64 * GB}) is None  # no cap declared


def test_two_gpu_tasks_get_different_devices_a_third_waits_cpu_tasks_get_none():
    hosts = {"g": Host("g", executor="ssh", address="x", slots=4, gpus=2, tags=("gpu",)),
             "c": Host("c", executor="ssh", address="x", slots=4)}
    free = free_seats(hosts, [], ["g", "c"])
    gpu_tasks = [task(i, "vision") for i in (1, 2, 3)]
    cpu_tasks = [task(i, "iris") for i in (4, 5)]
    needs = {"vision": Needs(("gpu",), 1), "iris": Needs()}
    plan = assign(gpu_tasks + cpu_tasks, free, hosts, lambda t: {"memory": GB}, lambda t: needs[t.problem])
    placed = {t.id: (name, limits["devices"]) for name, got in plan.items() for t, _, limits in got}
    assert placed[1] == ("g", [0]) and placed[2] == ("g", [1])
    assert 3 not in placed  # both devices held: it waits in the queue
    assert placed[4][1] == [] and placed[5][1] == []  # CPU tasks take seats, no device

    # With task 1 running on device 0, the waiting one gets device 1 once task 2 is gone.
    running = [task(1, "vision", "g", 0, devices=[0]), task(4, "iris", "g", 1)]
    free = free_seats(hosts, running, ["g", "c"])
    assert free.devices == {"g": {0}}
    plan = assign([task(3, "vision")], free, hosts, lambda t: {}, lambda t: needs[t.problem])
    assert [(t.id, limits["devices"]) for t, _, limits in plan["g"]] == [(3, [1])]


def test_a_gpu_problem_never_lands_on_a_cpu_host_and_does_not_hide_cpu_tasks():
    hosts = {"c": Host("c", executor="ssh", address="x", slots=2, tags=("cpu",))}
    needs = {"vision": Needs(("gpu",), 1), "iris": Needs()}
    plan = assign([task(1, "vision"), task(2, "iris")], FreeSeats({"c": [0, 1, 2, 3]}), hosts,
                  lambda t: {}, lambda t: needs[t.problem])
    assert [t.id for t, _, _ in plan["c"]] == [2]


def test_unfit_tasks_are_one_line_per_problem_naming_each_host():
    hosts = {"big": Host("big", executor="ssh", address="x", slots=2, memory=8 * GB, tags=("cpu",)),
             "small": Host("small", executor="ssh", address="x", slots=2, memory=GB),
             "broken": Host("broken", executor="ssh", address="x", slots=2, gpus=1, tags=("gpu",))}
    needs = {"vision": Needs(("gpu",), 1), "iris": Needs(), "huge": Needs()}
    limits = {"vision": {"memory": GB}, "iris": {"memory": GB}, "huge": {"memory": 16 * GB}}
    queued = [task(1, "vision"), task(2, "vision"), task(3, "iris"), task(4, "huge")]
    found = unfit(queued, hosts, {"broken": "its last check failed: no numpy"},
                  lambda t: limits[t.problem], lambda t: needs[t.problem])
    assert [u.line for u in found] == [
        "task 4 of huge (needs memory limit 16.0 GB) fit no host: big: memory cap 8.0 GB under the "
        "task's limit 16.0 GB; broken: its last check failed: no numpy; small: memory cap 1.0 GB "
        "under the task's limit 16.0 GB",
        "tasks 1, 2 of vision (needs tags gpu; 1 GPU; memory limit 1.0 GB) fit no host: big: no tag "
        "gpu (has cpu); broken: its last check failed: no numpy; small: no tag gpu",
    ]
    assert unfit(queued[:1], {}, {}, lambda t: {}, lambda t: Needs())[0].line == (
        "task 1 of vision fit no host: hosts.toml has no host")
    assert found[1].to_dict()["tasks"] == [1, 2]


# -- through the CLI, on the local host -------------------------------------------------------

def gpu_kit(tmp_path, name="iris-gpu", resources='tags = ["gpu"]\ngpus = 1\n'):
    kit = tmp_path / name
    shutil.copytree(EXAMPLES / "iris", kit, ignore=shutil.ignore_patterns("submissions"))
    text = (kit / "problem.toml").read_text().replace('name = "iris"', f'name = "{name}"')
    (kit / "problem.toml").write_text(text + f"\n[resources]\n{resources}")
    return kit


def local_hosts(workspace, extra: str = "") -> None:
    workspace.hosts_file.write_text(f'[hosts.local]\nexecutor = "local"\nslots = 2\n{extra}')


def test_problem_show_and_add_needs_record_the_requirements(workspace, cli, tmp_path):
    result = cli("problem", "add", gpu_kit(tmp_path), "--json")
    assert result.exit_code == 0, result.stderr
    assert result.json()["resources"] == {"tags": ["gpu"], "gpus": 1, "memory": None, "threads": None}
    result = cli("problem", "add", EXAMPLES / "iris", "--needs", "tags=big,fast", "--needs", "memory=2GB",
                 "--json")
    assert result.exit_code == 0, result.stderr
    assert result.json()["resources"] == {"tags": ["big", "fast"], "gpus": 0, "memory": 2 * GB, "threads": None}
    shown = cli("problem", "show", "iris")
    assert "needs" in shown.stdout and "tags big, fast; memory 2.0 GB" in shown.stdout
    bad = cli("problem", "add", gpu_kit(tmp_path, "other"), "--needs", "gpus=x")
    assert bad.exit_code == 2 and bad.stderr.strip() == "error: --needs 'gpus=x': gpus must be a whole number"


def test_a_kit_with_a_bad_resources_table_is_refused_before_its_data_is_read(workspace, cli, tmp_path):
    result = cli("problem", "add", gpu_kit(tmp_path, resources="gpus = 1\ncuda = true\n"))
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        "error: problem.toml: [resources]: unknown key 'cuda' (known: tags, gpus, memory, threads)")


def test_train_says_which_tasks_fit_no_host_and_stops_after_the_others(workspace, cli, tmp_path):
    local_hosts(workspace)
    assert cli("problem", "add", gpu_kit(tmp_path)).exit_code == 0
    assert cli("problem", "add", EXAMPLES / "iris").exit_code == 0
    assert cli("submit", "iris-gpu", EXAMPLES / "iris" / "submissions" / "logreg", "--team", "a").exit_code == 0
    assert cli("submit", "iris", EXAMPLES / "iris" / "submissions" / "logreg", "--team", "a").exit_code == 0
    try:
        result = cli("train")
    finally:
        stop_runners(workspace)
    line = "tasks 1, 2, 3, 4, 5 of iris-gpu (needs tags gpu; 1 GPU; memory limit 1.0 GB) fit no host: local: no tag gpu"
    assert result.exit_code == 1
    assert f"error: {line}" in result.stderr
    assert "5 done, 0 failed of 10 tasks" in result.stderr and "5 left queued: they fit no host" in result.stderr

    status = cli("status", "--json").json()
    assert status["unfit"] == [{"problem": "iris-gpu", "tasks": [1, 2, 3, 4, 5],
                                "needs": "tags gpu; 1 GPU; memory limit 1.0 GB",
                                "hosts": {"local": "no tag gpu"}, "reason": line}]
    assert f"waiting for no host: {line}" in " ".join(cli("status").stdout.split())
    dispatched = cli("dispatch", "--json")
    assert dispatched.exit_code == 1
    assert dispatched.json()["unfit"][0]["tasks"] == [1, 2, 3, 4, 5]
    assert f"error: {line}" in dispatched.stderr


def test_a_memory_limit_over_every_cap_stops_train_at_once(workspace, cli):
    local_hosts(workspace, 'memory = "500MB"\n')
    assert cli("problem", "add", EXAMPLES / "iris").exit_code == 0
    assert cli("submit", "iris", EXAMPLES / "iris" / "submissions" / "logreg", "--team", "a").exit_code == 0
    result = cli("train", "--json")
    assert result.exit_code == 1
    assert result.json()["queued"] == 5
    assert result.json()["unfit"][0]["hosts"] == {"local": "memory cap 500.0 MB under the task's limit 1.0 GB"}
    assert "error: tasks 1, 2, 3, 4, 5 of iris (needs memory limit 1.0 GB) fit no host" in result.stderr


def test_a_host_whose_check_failed_and_no_host_at_all_are_reported_the_same_way(workspace, cli):
    local_hosts(workspace)
    assert cli("problem", "add", EXAMPLES / "iris").exit_code == 0
    assert cli("submit", "iris", EXAMPLES / "iris" / "submissions" / "logreg", "--team", "a").exit_code == 0
    db = open_db(workspace)
    stored_hosts.record(db, "local", 0.0, False, {"problems": ["cannot sandbox: no user namespaces"]})
    result = cli("train")
    assert result.exit_code == 1
    assert ("fit no host: local: its last check failed: cannot sandbox: no user namespaces"
            in " ".join(result.stderr.split()))

    workspace.hosts_file.write_text("")
    result = cli("train")
    assert result.exit_code == 1
    assert "error: tasks 1, 2, 3, 4, 5 of iris fit no host: hosts.toml has no host" in result.stderr
