"""Durations and sizes carry their unit: a bare number is refused with one line proposing
one, units may be spelt out, and a memory limit below what an empty task measures is
refused where it is set (`problem add`, `train --memory`: test_memory_floor.py)."""

import shutil

import pytest
from conftest import EXAMPLES


@pytest.fixture
def iris(workspace, cli):
    assert cli("problem", "add", EXAMPLES / "iris").exit_code == 0
    return workspace


def kit_with_limits(tmp_path, limits: str):
    kit = tmp_path / "kit"
    shutil.copytree(EXAMPLES / "iris", kit)
    text = (kit / "problem.toml").read_text()
    (kit / "problem.toml").write_text(text[:text.index("[limits]")] + "[limits]\n" + limits)
    return kit


@pytest.mark.parametrize("args, message", [
    (["train", "--memory", "10"],
     "error: --memory: '10' has no unit; write e.g. '10MB' or '10GB' ('10B' for bytes)"),
    (["train", "--wall-time", "90"],
     "error: --wall-time: '90' has no unit; write e.g. '90s' for seconds or '90m' for minutes"),
    (["train", "--cpu-time", "1.5"],
     "error: --cpu-time: '1.5' has no unit; write e.g. '1.5s' for seconds or '1.5m' for minutes"),
    (["event", "add", "spring", "--problem", "iris", "--min-interval", "15"],
     "error: --min-interval: '15' has no unit; write e.g. '15s' for seconds or '15m' for minutes"),
    (["train", "--memory", "10MB"],
     "error: --memory: 10.0 MB is below the 32 MB assumed for host local, whose empty task was never "
     "measured (`datarun host check local` measures it); give at least 32 MB"),
])
def test_a_bare_number_or_a_tiny_memory_limit_is_refused_in_one_line(iris, cli, args, message):
    result = cli(*args)
    assert result.exit_code == 2
    assert result.stderr.strip() == message


def test_units_may_be_spelt_out(iris, cli):
    result = cli("event", "add", "spring", "--problem", "iris", "--min-interval", "10 minutes", "--json")
    assert result.exit_code == 0, result.stderr
    assert result.json()["min_interval"] == 600.0


@pytest.mark.parametrize("limits, message", [
    ('wall_time = "1"\n', "[limits] wall_time: '1' has no unit; write e.g. '1s' for seconds"),
    ("wall_time = 600\n", "[limits] wall_time: '600' has no unit"),
    ('memory = "100"\n', "[limits] memory: '100' has no unit; write e.g. '100MB'"),
    ('memory = "1MB"\n', "[limits] memory: 1.0 MB is below the 32 MB assumed for host local"),
])
def test_problem_add_refuses_limits_without_units_or_below_an_empty_task(workspace, cli, tmp_path,
                                                                          limits, message):
    result = cli("problem", "add", kit_with_limits(tmp_path, limits))
    assert result.exit_code == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert cli("problem", "list", "--json").json()["problems"] == []


LOCAL = '[hosts.local]\nexecutor = "local"\n'
SLURM = '[hosts.q]\nexecutor = "slurm"\nqueue = "debug"\n'


@pytest.mark.parametrize("hosts, message", [
    (f"{LOCAL}slots = 1\nmemory = 2000000000\n", "error: hosts.toml: [hosts.local] memory: '2000000000' "
     "has no unit; write '2000000000B' for bytes (2.0 GB)"),
    (f"{LOCAL}connect_timeout = 10\n", "error: hosts.toml: [hosts.local] connect_timeout: '10' has no unit; "
     "write e.g. '10s' for seconds or '10m' for minutes"),
    (f'{LOCAL}command_timeout = "1.5"\n', "error: hosts.toml: [hosts.local] command_timeout: '1.5' has no "
     "unit; write e.g. '1.5s' for seconds or '1.5m' for minutes"),
    (f'{LOCAL}command_timeout = "a minute"\n', "error: hosts.toml: [hosts.local] command_timeout: expected a "
     "duration like '30s', '10m' or '2h', got 'a minute'"),
    (f"{SLURM}walltime = 60\n", "error: hosts.toml: [hosts.q] walltime: '60' has no unit (Slurm reads "
     "minutes, PBS seconds); write it as a clock, e.g. '01:00:00' for 60 minutes"),
    (f'{SLURM}walltime = "90"\n', "error: hosts.toml: [hosts.q] walltime: '90' has no unit (Slurm reads "
     "minutes, PBS seconds); write it as a clock, e.g. '01:30:00' for 90 minutes"),
    (f'{SLURM}walltime = "2 hours"\n', "error: hosts.toml: [hosts.q] walltime: expected a clock like "
     "'02:00:00' (hours:minutes:seconds) or '1-00:00:00' (days-hours:minutes:seconds), got '2 hours'"),
], ids=["memory cap", "connect timeout", "command timeout", "timeout in words", "walltime", "quoted walltime",
        "walltime in words"])
def test_a_host_size_duration_or_walltime_without_a_unit_is_refused(workspace, cli, hosts, message):
    workspace.hosts_file.write_text(hosts)
    result = cli("host", "list")
    assert result.exit_code == 2
    assert result.stderr.strip() == message


def test_host_timeouts_take_their_unit(workspace, cli):
    workspace.hosts_file.write_text(f'{LOCAL}connect_timeout = "30s"\ncommand_timeout = "2 minutes"\n')
    [host] = cli("host", "list", "--json").json()["hosts"]
    assert (host["connect_timeout"], host["command_timeout"]) == (30.0, 120.0)


def test_a_batch_queue_walltime_as_a_clock_is_kept(workspace, cli):
    workspace.hosts_file.write_text(f'{SLURM}walltime = "1-02:00:00"\n')
    result = cli("host", "list", "--json")
    assert result.exit_code == 0, result.stderr
    [host] = [h for h in result.json()["hosts"] if h["name"] == "q"]
    assert host["walltime"] == "1-02:00:00"


def test_a_hooks_timeout_without_a_unit_is_refused(workspace, cli):
    (workspace.root / "datarun.toml").write_text('[hooks]\non_scored = "true"\ntimeout = 30\n')
    result = cli("dispatch")
    assert result.exit_code == 2
    assert result.stderr.strip() == ("error: datarun.toml: [hooks] timeout: '30' has no unit; "
                                     "write e.g. '30s' for seconds or '30m' for minutes")


@pytest.mark.parametrize("args, message", [
    (["problem", "add", EXAMPLES / "iris", "--data-file-cap", "100"],
     "error: --data-file-cap: '100' has no unit; write e.g. '100MB' or '100GB' ('100B' for bytes)"),
    (["host", "add", "box", "--address", "box.example.org", "--memory", "16"],
     "error: host add box: --memory: '16' has no unit; write e.g. '16MB' or '16GB' ('16B' for bytes)"),
    (["problem", "add", EXAMPLES / "iris", "--needs", "memory=8"],
     "error: --needs memory: '8' has no unit; write e.g. '8MB' or '8GB' ('8B' for bytes)"),
])
def test_a_size_option_without_a_unit_is_refused(workspace, cli, args, message):
    result = cli(*args)
    assert result.exit_code == 2
    assert result.stderr.strip() == message
