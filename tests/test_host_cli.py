"""`datarun host add / trust / list / remove / check`, through the CLI."""

import json
import os
import shutil
import subprocess
import uuid
from io import StringIO

import pytest
from rich.console import Console
from sshd import needs_root, pin

from datarun.errors import UsageError
from datarun.executors.hosts import add_host, register_host
from datarun.store.db import open_db

ORIGINAL_KEYS = {"name", "executor", "address", "port", "user", "identity", "workdir", "python",
                 "slots", "threads", "memory", "gpus", "tags", "isolation", "connect_timeout",
                 "command_timeout", "checked_at", "ok"}


def test_add_list_and_remove_keep_the_files_comments(workspace, cli):
    original = workspace.hosts_file.read_text()
    result = cli("host", "add", "node1", "--address", "node1.example.org", "--user", "dr",
                 "--slots", "4", "--threads", "2", "--memory", "16GB", "--tags", "cpu, big",
                 "--json")
    assert result.exit_code == 0, result.stderr
    assert result.json()["host_key"] is None  # nothing contacted without --trust
    rows = {row["name"]: row for row in cli("host", "list", "--json").json()["hosts"]}
    assert set(rows) == {"local", "node1"} and set(rows["node1"]) == ORIGINAL_KEYS
    assert (rows["node1"]["slots"], rows["node1"]["memory"], rows["node1"]["tags"]) == (
        4, 16_000_000_000, ["cpu", "big"])
    assert workspace.hosts_file.read_text().startswith(original)
    assert cli("host", "remove", "node1").exit_code == 0
    assert workspace.hosts_file.read_text() == original


def test_host_list_prints_a_table(workspace, cli):
    result = cli("host", "list")
    assert result.exit_code == 0 and "local" in result.stdout


@pytest.mark.parametrize("args, message", [
    (["--address", "a", "--memory", "12XB"], "unknown size unit 'xb'"),
    (["--address", "a", "--slots", "0"], "slots must be at least 1"),
])
def test_bad_host_settings_are_refused(workspace, cli, args, message):
    before = workspace.hosts_file.read_text()
    result = cli("host", "add", "node1", *args)
    assert result.exit_code == 2 and message in result.stderr
    assert workspace.hosts_file.read_text() == before


def test_a_duplicate_name_is_refused(workspace, cli):
    assert cli("host", "add", "node1", "--address", "a").exit_code == 0
    result = cli("host", "add", "node1", "--address", "b")
    assert result.exit_code == 2
    assert "host 'node1' is already in hosts.toml: pick another name" in result.stderr


def test_remove_refuses_what_it_cannot_remove(workspace, cli):
    result = cli("host", "remove", "ghost")
    assert result.exit_code == 2 and "unknown host 'ghost'" in result.stderr
    workspace.hosts_file.write_text('hosts.local = {executor = "local"}\n')
    result = cli("host", "remove", "local")
    assert result.exit_code == 2 and "cannot find a [hosts.local] header" in result.stderr
    workspace.hosts_file.unlink()
    result = cli("host", "remove", "local")
    assert result.exit_code == 2 and "host 'local' is built in" in result.stderr


def test_adding_to_a_workspace_without_hosts_toml_keeps_the_local_host(workspace, cli):
    workspace.hosts_file.unlink()
    assert cli("host", "add", "n", "--address", "a").exit_code == 0
    assert {row["name"] for row in cli("host", "list", "--json").json()["hosts"]} == {"local", "n"}


@pytest.mark.parametrize("text, message", [
    ("[hosts.a]\naddress = \n", "TOML syntax error"),
    ("[hosts.a]\naddress = 'x'\ncolour = 'red'\n", "unknown key 'colour'"),
    ("[hosts.a]\naddress = 'x'\nslots = 0\n", "slots must be at least 1"),
    ("[hosts.a]\naddress = 'x'\nmemory = 'lots'\n", "expected a size like"),
])
def test_a_broken_hosts_toml_is_named(workspace, cli, text, message):
    workspace.hosts_file.write_text(text)
    result = cli("host", "list")
    assert result.exit_code == 2 and message in result.stderr
    if "syntax" in message:
        assert "line 2" in result.stderr


def test_only_ssh_hosts_have_keys_to_trust(workspace, cli):
    result = cli("host", "trust", "local")
    assert result.exit_code == 2 and "host 'local' is not an ssh host" in result.stderr
    with pytest.raises(UsageError, match="--trust needs an ssh host"):
        register_host(workspace, "box", {"executor": "local"}, trust=True)


def test_the_local_host_is_checked_in_process_and_recorded(workspace, cli):
    result = cli("host", "check", "local", "--json")
    assert result.exit_code == 0, result.stderr
    [report] = result.json()["hosts"]
    assert report["ok"] and report["problems"] == []
    assert all(entry["same"] for entry in report["libraries"].values())
    assert report["cpus"] == os.cpu_count() and report["harness"]
    db = open_db(workspace)
    row = db.execute("SELECT ok, report FROM hosts WHERE name = 'local'").fetchone()
    assert row[0] == 1 and json.loads(row[1])["python"] == report["python"]
    table = cli("host", "check", "local")
    assert table.exit_code == 0 and "ok" in table.stdout
    # Its working folder is the workspace's own: no other workspace there.
    workspace_id = cli("status", "--json").json()["workspace"]["id"]
    sharing = report["sharing"]
    from datarun.executors.local import local_layout

    workdir = local_layout(workspace).root  # ~/.datarun-host: outside the workspace
    assert (sharing["workdir"], sharing["workspace"]) == (str(workdir), workspace_id)
    assert (sharing["own_tasks"], sharing["other_workspaces"], sharing["other_bytes"]) == (0, 0, 0)
    assert set(sharing) == {"workdir", "workspace", "own_bytes", "own_tasks", "other_workspaces",
                            "other_bytes", "cache_bytes"}
    assert f"local: workdir {workdir} used by no other workspace; this " \
           f"workspace ({workspace_id}): 0 task folders" in table.stdout


def test_host_clean_on_a_host_with_nothing_of_this_workspace(workspace, cli):
    result = cli("host", "clean", "local", "--json")
    assert result.exit_code == 0, result.stderr
    assert result.json() == {"schema": "datarun/host-clean/1", "host": "local",
                             "workspace_id": cli("status", "--json").json()["workspace"]["id"],
                             "removed": [], "running": [], "kept": [], "freed": 0}
    text = cli("host", "clean", "local")
    assert text.stderr == "host local: removed 0 task folders of this workspace (0 B); kept 0 running\n"


def render(table) -> str:
    out = StringIO()
    Console(file=out, width=200, color_system=None).print(table)
    return out.getvalue()


def test_check_table_flags_missing_and_differing_libraries():
    from datarun.cli.host import check_table

    report = {
        "name": "n1", "ok": False, "python": "3.11.2", "cpus": 8, "memory": 16e9,
        "disk_free": 5e9, "gpus": 0, "harness": "0.1.0", "warnings": [],
        "problems": ["missing psutil: run `python3 -m pip install psutil` there"],
        "libraries": {"numpy": {"host": "2.0.0", "organiser": "2.4.6", "same": False},
                      "psutil": {"host": None, "organiser": "7.2.2", "same": False}},
    }
    text = render(check_table([report]))
    assert "NOT OK" in text and "2.0.0 (differs)" in text and "MISSING" in text
    assert "pip install psutil" in text


# --- against real sshd ---------------------------------------------------------------


@pytest.fixture
def workdir(sshd_a):
    """A workdir of the test's own in the test user's home, removed afterwards."""
    name = f"wd-{uuid.uuid4().hex[:8]}"
    yield f"~/{name}"
    shutil.rmtree(os.path.join(os.path.expanduser(f"~{sshd_a.user}"), name), ignore_errors=True)


def test_add_trust_pins_the_key_and_check_passes(workspace, cli, sshd_a, workdir):
    result = cli("host", "add", "a", "--address", "127.0.0.1", "--port", sshd_a.port,
                 "--user", sshd_a.user, "--identity", sshd_a.client_key, "--python", sshd_a.python,
                 "--workdir", workdir, "--trust", "--json")
    assert result.exit_code == 0, result.stderr
    expected = subprocess.run(["ssh-keygen", "-lf", str(sshd_a.folder / "host_ed25519.pub")],
                              capture_output=True, text=True).stdout.split()[1]
    assert result.json()["host_key"] == expected
    assert (workspace.state_dir / "known_hosts").read_text() == sshd_a.known_hosts_line()
    assert f"# host key {expected}" in workspace.hosts_file.read_text()
    check = cli("host", "check", "a", "--json")
    assert check.exit_code == 0, check.stdout
    [report] = check.json()["hosts"]
    assert report["ok"] and report["connected"] and report["host_key"] == f"ssh-ed25519 {expected}"
    assert report["harness"] and report["cpus"] and report["disk_free"] > 0
    assert set(report["libraries"]) == {"numpy", "pandas", "sklearn", "psutil", "rampwf"}
    # The test host's Python has no ramp-workflow: a warning, not a fault.
    assert report["libraries"]["rampwf"]["host"] is None
    assert any("no ramp-workflow: RAMP problems' tasks will fail here" in w for w in report["warnings"])
    assert {row["name"]: row["ok"] for row in cli("host", "list", "--json").json()["hosts"]}["a"] is True


def test_an_unknown_key_fails_the_check_until_trusted(workspace, cli, sshd_a, workdir):
    add_host(workspace.hosts_file, "a", sshd_a.host_table(workdir=workdir))
    result = cli("host", "check", "a", "--json")
    assert result.exit_code == 1
    [report] = result.json()["hosts"]
    assert not report["ok"] and "unknown host key" in report["problems"][0]
    assert "datarun host trust a" in report["problems"][0]
    assert cli("host", "trust", "a").exit_code == 0
    assert cli("host", "check", "a").exit_code == 0


def test_one_bad_host_fails_only_its_own_check(workspace, cli, sshd_a, sshd_b, workdir):
    pin(workspace, sshd_a, sshd_b)
    add_host(workspace.hosts_file, "good", sshd_a.host_table(workdir=workdir))
    add_host(workspace.hosts_file, "nopython", sshd_b.host_table(python="/nonexistent/python3",
                                                                workdir=workdir))
    add_host(workspace.hosts_file, "nolibs", sshd_a.host_table(python="/usr/bin/python3",
                                                              workdir=workdir))
    result = cli("host", "check")
    assert result.exit_code == 1
    assert "nopython: host nopython: '/nonexistent/python3' was not found" in result.stderr
    assert "nolibs: missing numpy, pandas, scikit-learn, psutil: run `/usr/bin/python3 -m pip " \
           "install numpy pandas scikit-learn psutil` there" in result.stderr
    reports = {r["name"]: r for r in cli("host", "check", "--json").json()["hosts"]}
    assert {name: r["ok"] for name, r in reports.items()} == {
        "local": True, "good": True, "nopython": False, "nolibs": False}
    assert reports["nolibs"]["install"] == "/usr/bin/python3 -m pip install numpy pandas " \
                                           "scikit-learn psutil"
    assert "NOT OK" in cli("host", "check").stdout


@needs_root
def test_a_full_disk_is_reported(workspace, sshd_a):
    import pwd
    import tempfile
    from pathlib import Path

    from datarun.errors import HostError
    from datarun.executors.ssh import SSHExecutor

    user = pwd.getpwnam(sshd_a.user)
    # pytest's tmp_path is 0700: the test user could not reach a mount inside it.
    mount = Path(tempfile.mkdtemp(prefix="datarun-tiny-"))
    mount.chmod(0o755)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size=256k,uid={user.pw_uid},mode=0755",
                    "tmpfs", str(mount)], check=True)
    try:
        pin(workspace, sshd_a)
        executor = SSHExecutor(workspace, sshd_a.host("node", workdir=str(mount)))
        try:
            with pytest.raises(HostError, match=rf"host node: the disk of {mount} is full "
                               r"\(0 MiB free, 16 MiB needed\): free some space"):
                executor.info()
        finally:
            executor.close()
    finally:
        subprocess.run(["umount", str(mount)], check=True)
        mount.rmdir()


@pytest.mark.parametrize("answer", [
    {"workdir": "/w"}, [], {"workdir": "/w", "workspace": None, "other_workspaces": -1,
                             "other_bytes": 0, "shared_bytes": 0},
    {"workdir": 7, "workspace": None, "other_workspaces": 1, "other_bytes": 0, "shared_bytes": 0},
])
def test_a_usage_answer_that_is_not_one_leaves_the_sharing_unknown(workspace, cli, monkeypatch, answer):
    from datarun.executors.local import LocalExecutor

    monkeypatch.setattr(LocalExecutor, "usage", lambda self: answer)
    [report] = cli("host", "check", "local", "--json").json()["hosts"]
    assert report["ok"] and report["sharing"] is None
    assert ("how its workdir is shared is unknown: the harness's usage answer was not "
            "understood") in report["warnings"]


def test_a_usage_request_that_fails_is_a_warning_not_a_fault(workspace, cli, monkeypatch):
    from datarun.errors import HostError
    from datarun.executors.local import LocalExecutor

    def fails(self):
        raise HostError("host local: harness usage failed: no space")

    monkeypatch.setattr(LocalExecutor, "usage", fails)
    [report] = cli("host", "check", "local", "--json").json()["hosts"]
    assert report["ok"] and report["sharing"] is None
    assert "how its workdir is shared is unknown: host local: harness usage failed: no space" in report["warnings"]
