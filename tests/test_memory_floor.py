"""A memory limit below what an empty task measures on a host is refused where it is set.

`host check` runs an empty task on each host it checks (a runner of its own, the task
sandboxed as the host's tasks are) and records its peak memory; `problem add` and
`train --memory` refuse a limit below the largest floor of hosts.toml's hosts, naming the
host, its figure and a limit that works. A host never measured is held to the default
floor until a check measures it."""

import re
import shutil

import pytest
from conftest import EXAMPLES, stop_runners
from sshd import pin

from datarun.executors.floors import working_limit
from datarun.executors.hosts import add_host
from datarun.sizes import MIN_TASK_MEMORY, format_cap
from datarun.store import hosts as stored_hosts
from datarun.store.db import open_db

MEASURED = re.compile(r"^error: (?P<what>.+): (?P<limit>[\d.]+ [kMG]?B) is below what an empty task "
                      r"measures on host (?P<host>\S+): (?P<floor>[\d.]+ [kMG]?B) "
                      r"\((?P<by>cgroup-v1|cgroup-v2|procfs), (?P<isolation>sandbox|none), "
                      r"\d{4}-\d\d-\d\d \d\d:\d\d UTC\); give at least (?P<give>\d+ MB)$")


@pytest.fixture
def measured(workspace, cli):
    result = cli("host", "check", "local", "--json")
    assert result.exit_code == 0, result.stderr
    yield result.json()["hosts"][0]["memory_floor"]
    stop_runners(workspace)


def kit_with_memory(tmp_path, memory: str):
    kit = tmp_path / "kit"
    shutil.copytree(EXAMPLES / "iris", kit)
    text = (kit / "problem.toml").read_text()
    (kit / "problem.toml").write_text(text[:text.index("[limits]")] + f'[limits]\nmemory = "{memory}"\n')
    return kit


def test_host_check_measures_an_empty_task_and_records_it(workspace, cli, measured):
    assert measured["measured_by"] in ("cgroup-v1", "cgroup-v2", "procfs")
    assert measured["isolation"] == "sandbox"
    # An empty task's own memory: a few megabytes, never the runner's ~160 MB of imports.
    assert 100_000 < measured["bytes"] < 100 * 1000**2
    db = open_db(workspace)
    floor = stored_hosts.floors(db)["local"]
    assert floor.floor == measured["bytes"] and floor.measured_by == f"{measured['measured_by']}, sandbox"
    table = cli("host", "check", "local")
    assert table.exit_code == 0
    assert re.search(r"local: an empty task measures [\d.]+ [kM]B \((cgroup-v1|cgroup-v2|procfs), "
                     r"sandbox\): no task's memory limit may be below it", table.stdout)
    # Its runner served a folder of its own and is gone; nothing of it counts as another workspace.
    sharing = cli("host", "check", "local", "--json").json()["hosts"][0]["sharing"]
    assert sharing["other_workspaces"] == 0


def test_train_refuses_a_limit_below_the_measured_floor_and_takes_one_above(workspace, cli, measured):
    result = cli("train", "--memory", "100kB")
    assert result.exit_code == 2
    [line] = result.stderr.strip().splitlines()
    match = MEASURED.match(line)
    assert match, line
    assert (match["what"], match["limit"], match["host"], match["isolation"]) == (
        "--memory", "100.0 kB", "local", "sandbox")
    assert match["give"] == format_cap(working_limit(measured["bytes"]))
    # The proposed limit is taken; it is under the default floor of a host never measured,
    # so the host's own figure is what decided.
    give = match["give"].replace(" ", "")
    assert working_limit(measured["bytes"]) < MIN_TASK_MEMORY
    ok = cli("train", "--memory", give)
    assert ok.exit_code == 0, ok.stderr


def test_problem_add_refuses_a_kit_limit_below_the_measured_floor(workspace, cli, measured, tmp_path):
    result = cli("problem", "add", kit_with_memory(tmp_path, "100kB"))
    assert result.exit_code == 2
    [line] = result.stderr.strip().splitlines()
    match = MEASURED.match(line)
    assert match and match["what"] == "problem.toml: [limits] memory", line
    assert cli("problem", "list", "--json").json()["problems"] == []
    limit = format_cap(working_limit(measured["bytes"])).replace(" ", "")
    shutil.rmtree(tmp_path / "kit")
    assert cli("problem", "add", kit_with_memory(tmp_path, limit)).exit_code == 0


def test_a_host_never_measured_is_held_to_the_default_floor(workspace, cli, tmp_path):
    message = ("is below the 32 MB assumed for host local, whose empty task was never measured "
               "(`datarun host check local` measures it); give at least 32 MB")
    result = cli("train", "--memory", "20MB")
    assert result.exit_code == 2
    assert result.stderr.strip() == f"error: --memory: 20.0 MB {message}"
    result = cli("problem", "add", kit_with_memory(tmp_path, "20MB"))
    assert result.exit_code == 2
    assert result.stderr.strip() == f"error: problem.toml: [limits] memory: 20.0 MB {message}"


def test_the_largest_floor_of_the_hosts_decides(workspace, cli, measured):
    add_host(workspace.hosts_file, "big", {"executor": "local", "workdir": str(workspace.root / "big")})
    db = open_db(workspace)
    stored_hosts.record_floor(db, "big", 50 * 1000**2, 1_700_000_000.0, "procfs, sandbox")
    result = cli("train", "--memory", "40MB")
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        "error: --memory: 40.0 MB is below what an empty task measures on host big: 50.0 MB "
        "(procfs, sandbox, 2023-11-14 22:13 UTC); give at least 75 MB")
    # `host remove` forgets the host's figure with its check.
    assert cli("host", "remove", "big").exit_code == 0
    assert "big" not in stored_hosts.floors(open_db(workspace))
    assert cli("train", "--memory", "40MB").exit_code == 0


def test_an_ssh_host_is_measured_over_ssh(workspace, cli, sshd_a, tmp_path):
    import os
    import uuid

    pin(workspace, sshd_a)
    name = f"wd-{uuid.uuid4().hex[:8]}"
    add_host(workspace.hosts_file, "a", sshd_a.host_table(workdir=f"~/{name}"))
    try:
        result = cli("host", "check", "a", "--json")
        assert result.exit_code == 0, result.stdout
        floor = result.json()["hosts"][0]["memory_floor"]
        assert floor["measured_by"] in ("cgroup-v1", "cgroup-v2", "procfs")
        assert 100_000 < floor["bytes"] < 100 * 1000**2
        assert stored_hosts.floors(open_db(workspace))["a"].floor == floor["bytes"]
    finally:
        shutil.rmtree(os.path.join(os.path.expanduser(f"~{sshd_a.user}"), name), ignore_errors=True)


def test_without_any_host_the_default_floor_holds(workspace, cli):
    assert cli("host", "remove", "local").exit_code == 0
    result = cli("train", "--memory", "20MB")
    assert result.exit_code == 2
    assert result.stderr.strip() == ("error: --memory: 20.0 MB is below the 32 MB assumed for a host "
                                     "never measured, and hosts.toml has no host to measure; give at "
                                     "least 32 MB")


@pytest.mark.slow
def test_floor_bench_measures_each_way_beside_the_fixed_floor():
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    bench = Path(__file__).resolve().parent.parent / "bench" / "floor.py"
    env = {k: v for k, v in os.environ.items() if k != "DATARUN_HOME"}
    result = subprocess.run([sys.executable, str(bench), "--quick", "--json"], capture_output=True,
                            text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(result.stdout)
    assert figures["fixed_floor"] == MIN_TASK_MEMORY
    assert {(run["measured_by"][0], run["isolation"]) for run in figures["runs"]} >= {
        ("procfs", "sandbox"), ("procfs", "none")}
    for run in figures["runs"]:
        assert run["floor"] > 0 and run["info_seconds"] > 0 and len(run["seconds"]) == 2
    assert "beside the fixed 32 MB" in result.stderr and "goal at most 3 s" in result.stderr


def test_a_sensitive_problems_limit_is_held_to_its_own_hosts_floors(workspace, cli):
    from datarun.errors import UsageError
    from datarun.executors.floors import check_memory_limit

    add_host(workspace.hosts_file, "owner", {"executor": "local", "workdir": str(workspace.root / "o")})
    db = open_db(workspace)
    stored_hosts.record_floor(db, "owner", 50 * 1000**2, 1_700_000_000.0, "procfs, sandbox")
    stored_hosts.record_floor(db, "local", 6 * 1000**2, 1_700_000_000.0, "cgroup-v1, sandbox")
    assert check_memory_limit(workspace, db, 40 * 1000**2, hosts=["local"]) == 40 * 1000**2
    with pytest.raises(UsageError, match=r"on host owner: 50.0 MB \(procfs, sandbox, "):
        check_memory_limit(workspace, db, 40 * 1000**2, hosts=["owner"])
