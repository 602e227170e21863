"""Error messages about hosts that no other test triggered: hosts.toml values, `host add`
options, ~/.ssh/config, ProxyJump and SSH servers that do not behave.

Each one is checked through the CLI: its exact one-line message on stderr, its exit code,
and that nothing stored (hosts.toml, the pinned keys) changed.
"""

import os
import re
import shutil
import socket
import time
import uuid
from pathlib import Path

import pytest
from sshd import free_port, pin

from datarun.executors.hosts import add_host


def refused(result, exit_code: int, message: str) -> None:
    assert result.exit_code == exit_code, (result.exit_code, result.stderr)
    assert result.stderr == f"error: {message}\n"
    assert result.stdout == ""


def ssh_config(text: str) -> Path:
    # conftest points HOME at a temporary folder: this ~/.ssh/config is the test's own.
    path = Path(os.path.expanduser("~/.ssh/config"))
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    return path


@pytest.mark.parametrize(("table", "message"), [
    ("address = 'x'\nslots = true\n", "[hosts.node1] slots must be a whole number, got true"),
    ("address = 'x'\nthreads = 0\n", "[hosts.node1] threads must be at least 1, got 0"),
    ("address = 'x'\ngpus = -1\n", "[hosts.node1] gpus must be 0 or more, got -1"),
    ("address = 'x'\nmemory = true\n",
     "[hosts.node1] memory: expected a size like '512MB' or '2GB', got true"),
    ("address = 'x'\nmemory = '0MB'\n", "[hosts.node1] memory: must be more than zero, got '0MB'"),
    ("address = 'x'\nmemory = 0\n", "[hosts.node1] memory: must be more than zero, got 0"),
])
def test_a_bad_value_in_hosts_toml_is_named(workspace, cli, table, message):
    workspace.hosts_file.write_text(f"[hosts.node1]\n{table}")
    before = workspace.hosts_file.read_text()
    refused(cli("host", "list"), 2, f"hosts.toml: {message}")
    assert workspace.hosts_file.read_text() == before


def test_a_host_that_is_not_a_table_is_named(workspace, cli):
    workspace.hosts_file.write_text("[hosts]\nnode1 = 3\n")
    refused(cli("host", "list"), 2, "hosts.toml: [hosts.node1] must be a table")


@pytest.mark.parametrize(("args", "message"), [
    (["--threads", "0"], "host add node1: --threads must be at least 1, got 0"),
    (["--port", "70000"], "host add node1: --port must be from 1 to 65535, got 70000"),
    (["--memory", "5XB"], "host add node1: --memory: unknown size unit 'xb' in '5XB' (use KB, MB, GB, MiB, GiB)"),
    (["--gpus", "-1"], "host add node1: --gpus must be 0 or more, got -1"),
    (["--memory", "0GB"], "host add node1: --memory: must be more than zero, got '0GB'"),
])
def test_host_add_refuses_bad_options_and_writes_nothing(workspace, cli, args, message):
    before = workspace.hosts_file.read_text()
    refused(cli("host", "add", "node1", "--address", "node1.example.org", *args), 2, message)
    assert workspace.hosts_file.read_text() == before


def test_host_add_names_its_own_arguments(workspace, cli):
    before = workspace.hosts_file.read_text()
    refused(cli("host", "add", "node1", "--address", ""), 2,
            "host add node1: --address is empty: give the host's name or IP address")
    refused(cli("host", "add", "bad name", "--address", "a"), 2,
            "host name 'bad name' may hold only letters, digits, '_', '-' and '.'")
    assert workspace.hosts_file.read_text() == before


def test_host_check_reports_a_bad_ssh_config_on_the_ssh_hosts_and_checks_the_rest(workspace, cli):
    config = ssh_config("Host a\n  HostName\n")
    add_host(workspace.hosts_file, "node", {"address": "a"})
    result = cli("host", "check", "--json")
    assert result.exit_code == 1
    reports = {r["name"]: r for r in result.json()["hosts"]}
    assert reports["local"]["ok"] is True
    assert reports["node"]["ok"] is False
    assert reports["node"]["problems"] == [
        f"cannot read {config}: Unparsable line HostName: fix the file, or move it aside"]


def test_an_unparsable_ssh_config_is_named(workspace, cli):
    config = ssh_config("Host a\n  HostName\n")
    before = workspace.hosts_file.read_text()
    message = f"cannot read {config}: Unparsable line HostName: fix the file, or move it aside"
    refused(cli("host", "add", "node", "--address", "a", "--trust"), 2, message)
    assert workspace.hosts_file.read_text() == before  # nothing added when the pin failed
    add_host(workspace.hosts_file, "node", {"address": "a"})
    refused(cli("host", "trust", "node"), 2, message)
    assert not (workspace.state_dir / "known_hosts").exists()


def test_a_proxyjump_loop_is_refused_before_any_connection(workspace, cli):
    # a jumps through b, b through a: each hop is resolved before any socket is opened.
    ssh_config("Host a\n  HostName 127.0.0.1\n  ProxyJump b\n"
               "Host b\n  HostName 127.0.0.1\n  ProxyJump a\n")
    add_host(workspace.hosts_file, "node", {"address": "a"})
    refused(cli("host", "trust", "node"), 1,
            "host node (jump host b) (jump host a) (jump host b) (jump host a): more than 4 "
            "ProxyJump hops in ~/.ssh/config")
    assert not (workspace.state_dir / "known_hosts").exists()


def test_trusting_a_port_where_no_ssh_server_speaks_times_out(workspace, cli):
    with socket.socket() as silent:  # accepts connections (the kernel does), never says a word
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        add_host(workspace.hosts_file, "node", {"address": "127.0.0.1", "port": port,
                                                "connect_timeout": "0.5s"})
        started = time.monotonic()
        result = cli("host", "trust", "node")
        assert time.monotonic() - started < 5
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr == (f"error: host node: no SSH server answered at 127.0.0.1:{port} "
                             "within 0.5s (no SSH banner): wrong port, or the host hangs\n")
    assert not (workspace.state_dir / "known_hosts").exists()


# --- against a real sshd on loopback ---------------------------------------------------


@pytest.fixture
def workdir(sshd_a):
    """A workdir of the test's own in the test user's home, removed afterwards."""
    name = f"wd-{uuid.uuid4().hex[:8]}"
    yield f"~/{name}"
    shutil.rmtree(os.path.join(os.path.expanduser(f"~{sshd_a.user}"), name), ignore_errors=True)


@pytest.mark.ssh
def test_a_jump_host_that_cannot_reach_the_host_is_named(workspace, cli, sshd_a):
    pin(workspace, sshd_a)
    closed = free_port()  # nothing listens there: the jump host's connect is refused
    ssh_config(f"Host jumpbox\n  HostName 127.0.0.1\n  Port {sshd_a.port}\n  User {sshd_a.user}\n"
               f"  IdentityFile {sshd_a.client_key}\n"
               f"Host inner\n  HostName 127.0.0.1\n  Port {closed}\n  ProxyJump jumpbox\n")
    add_host(workspace.hosts_file, "node", {"address": "inner", "connect_timeout": "5s"})
    known = (workspace.state_dir / "known_hosts").read_text()
    result = cli("host", "trust", "node")
    assert result.exit_code == 1 and result.stdout == ""
    assert re.fullmatch(rf"error: host node: the jump host 127\.0\.0\.1 could not reach "
                        rf"127\.0\.0\.1:{closed}: .+\n", result.stderr), result.stderr
    assert (workspace.state_dir / "known_hosts").read_text() == known


@pytest.mark.ssh
def test_a_python_that_is_not_python_fails_the_check_in_one_line(workspace, cli, sshd_a,
                                                                 workdir):
    # `python = "/bin/echo"`: the harness command runs, exits 0 and prints no JSON.
    pin(workspace, sshd_a)
    add_host(workspace.hosts_file, "node", sshd_a.host_table(python="/bin/echo", workdir=workdir))
    home = os.path.expanduser(f"~{sshd_a.user}")
    result = cli("host", "check", "node")
    assert result.exit_code == 1
    assert result.stderr == (f"node: host node: harness info printed no JSON: "
                             f"'-m datarun_remote info --space {workspace.id} {home}/{workdir[2:]}\\n'\n")
    [report] = cli("host", "check", "node", "--json").json()["hosts"]
    assert report["ok"] is False and report["connected"] is True
