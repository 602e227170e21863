"""What `datarun dispatch` and `datarun train` print when a host cannot be reached; no
other test read their text output for a host error.

The only host is an SSH host on a loopback port where nothing listens, so every
connection is refused at once.
"""

import re

import pytest
from sshd import free_port
from test_operator import GOOD, small_kit, submit, tasks_of


@pytest.fixture
def unreachable(workspace, cli, tmp_path):
    """A registered problem, one queued submission, and a host that refuses connections."""
    assert cli("problem", "add", small_kit(tmp_path)).exit_code == 0
    port = free_port()
    workspace.hosts_file.write_text(
        f'[hosts.node]\naddress = "127.0.0.1"\nport = {port}\nconnect_timeout = \"1s\"\n')
    good = submit(cli, tmp_path, "good", GOOD)
    return good, (f"host node: connection refused at 127.0.0.1:{port}: wrong port, or no SSH "
                  "server runs there")


def test_dispatch_names_the_host_it_could_not_reach(cli, unreachable):
    good, refused = unreachable
    result = cli("dispatch")
    assert result.exit_code == 1 and result.stdout == ""
    # Named once; every line of a cron pass says when.
    assert re.fullmatch(rf"(\S+Z) {re.escape(refused)}\n\1 collected 0, launched 0, re-queued 0\n",
                        result.stderr)
    assert {task["state"] for task in tasks_of(cli, good)} == {"queued"}  # still to run


def test_dispatch_as_json_reports_the_host_error_in_the_document(cli, unreachable):
    _, refused = unreachable
    result = cli("dispatch", "--json")
    assert result.exit_code == 1
    assert result.json()["host_errors"] == {"node": refused}
    assert re.fullmatch(rf"\d{{4}}-\d\d-\d\dT\d\d:\d\d:\d\dZ {re.escape(refused)}\n", result.stderr)


@pytest.mark.slow
def test_train_gives_up_on_a_host_that_never_answers_and_says_why(cli, unreachable):
    # It retries the host with a back-off (2, 4, 8 s) before giving up: about 14 s.
    good, refused = unreachable
    result = cli("train")
    assert result.exit_code == 1 and result.stdout == ""
    lines = result.stderr.splitlines()
    assert refused in lines
    assert lines[-1].startswith("0 done, 0 failed of 2 tasks in ")
    assert {task["state"] for task in tasks_of(cli, good)} == {"queued"}


def test_a_host_error_that_does_not_name_its_host_is_prefixed(capsys):
    from datarun.cli.app import err_hosts

    err_hosts({"node": "host node: refused", "other": "timed out"})
    assert capsys.readouterr().err == "host node: refused\nhost other: timed out\n"
