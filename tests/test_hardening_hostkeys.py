"""`host trust` never pins a key beside a different known key of the host unless told to
replace it, and `--replace` replaces that host's pin only.

A real sshd is pinned, then restarted on the same port with another host key: of the same
type, and of another type (ed25519 -> ecdsa, where paramiko finds no pinned key of the type
shown and the old `trust` appended the new key beside the old one without a word). The
negative control runs `trust` with the old rule (only a key of the same type conflicts)
and shows the second pin appear.
"""

import re
import shutil

import pytest
from contract import validate
from sshd import _missing, start_sshd

import datarun.executors.hostkeys as hostkeys
from datarun.executors.hosts import add_host

pytestmark = pytest.mark.ssh

FINGERPRINT = r"SHA256:[A-Za-z0-9+/]+"


@pytest.fixture
def changing_host(tmp_path):
    """A server, and a way to give it a new host key on the same port (a reinstall)."""
    reason = _missing()
    if reason:
        pytest.skip(reason)
    servers = [start_sshd()]
    keep = tmp_path / "client"
    keep.mkdir()
    shutil.copy(servers[0].client_key, keep / "client_ed25519")
    shutil.copy(f"{servers[0].client_key}.pub", keep / "client_ed25519.pub")

    def change(key_type: str):
        old = servers[-1]
        old.stop()
        servers.append(start_sshd(port=old.port, key_type=key_type,
                                  client_key=keep / "client_ed25519"))
        return servers[-1]

    # The client key outlives the first server's folder: hosts.toml points at this copy.
    table = servers[0].host_table(identity=str(keep / "client_ed25519"))
    yield servers[0], change, table
    for server in servers:
        server.stop()


def fingerprint_of(server) -> str:
    import subprocess

    out = subprocess.run(["ssh-keygen", "-lf", str(server.folder / f"host_{server.key_type}.pub")],
                         capture_output=True, text=True, check=True).stdout
    return out.split()[1]


@pytest.mark.parametrize("new_type, new_name", [("ed25519", "ssh-ed25519"),
                                                ("ecdsa", "ecdsa-sha2-nistp256")])
def test_trust_refuses_a_changed_key_until_replace(workspace, cli, changing_host, sshd_b,
                                                   new_type, new_name):
    first, change, table = changing_host
    add_host(workspace.hosts_file, "node", table)
    assert cli("host", "trust", "node").exit_code == 0
    old_fp, old_pub = fingerprint_of(first), first.host_key_pub  # its folder goes with it
    known = workspace.state_dir / "known_hosts"
    # Another host's pin, and a line naming this host and another one, must survive.
    known.write_text(known.read_text() + sshd_b.known_hosts_line()
                     + f"[127.0.0.1]:{first.port},[10.9.8.7]:22 ssh-ed25519 {first.host_key_pub}\n")
    before = known.read_text()

    second = change(new_type)
    new_fp = fingerprint_of(second)
    # Connecting says CHANGED with both fingerprints, whichever type the host shows now.
    check = cli("host", "check", "node", "--json").json()["hosts"][0]
    assert check["ok"] is False
    assert re.fullmatch(
        rf"host node: the host key of \[127.0.0.1\]:{first.port} has CHANGED: it is now "
        rf"{new_name} {re.escape(new_fp)}, ssh-ed25519 {re.escape(old_fp)} is pinned: if the "
        rf"change is expected, run `datarun host trust node --replace`", check["problems"][0])

    result = cli("host", "trust", "node")
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr == (
        f"error: host node: the host key of [127.0.0.1]:{first.port} is now {new_name} {new_fp}, "
        f"but ssh-ed25519 {old_fp} is pinned for it: if the change is expected, run "
        "`datarun host trust node --replace`\n")
    assert known.read_text() == before  # nothing pinned beside it

    replaced = cli("host", "trust", "node", "--replace", "--json")
    assert replaced.exit_code == 0, replaced.stderr
    assert validate(replaced.stdout) == "host-trust"  # docs/schema/host-trust.json
    assert replaced.json() == {"schema": "datarun/host-trust/1", "name": "node", "host_key": new_fp,
                               "replaced": [f"ssh-ed25519 {old_fp}"]}
    lines = known.read_text().splitlines()
    assert lines == [sshd_b.known_hosts_line().strip(),
                     f"[10.9.8.7]:22 ssh-ed25519 {old_pub}",
                     f"[127.0.0.1]:{first.port} {new_name} {second.host_key_pub}"]
    assert cli("host", "check", "node", "--json").json()["hosts"][0]["connected"] is True
    again = cli("host", "trust", "node", "--replace", "--json").json()
    assert again["replaced"] == [] and known.read_text().splitlines() == lines


def test_negative_control_the_old_rule_pins_a_new_type_beside_the_old_key(workspace, cli,
                                                                          changing_host,
                                                                          monkeypatch):
    first, change, table = changing_host
    add_host(workspace.hosts_file, "node", table)
    assert cli("host", "trust", "node").exit_code == 0
    change("ecdsa")
    monkeypatch.setattr(hostkeys, "other_pins", lambda known, key: [
        k for k in known if k.get_name() == key.get_name() and k != key])
    result = cli("host", "trust", "node")
    assert result.exit_code == 0 and "replacing" not in result.stderr
    pins = (workspace.state_dir / "known_hosts").read_text().splitlines()
    assert [line.split()[1] for line in pins] == ["ssh-ed25519", "ecdsa-sha2-nistp256"]


def test_host_add_trust_refuses_beside_an_old_pin_and_replaces_with_replace(workspace, cli,
                                                                            changing_host):
    first, change, table = changing_host
    args = ["--address", "127.0.0.1", "--port", str(first.port), "--user", table["user"],
            "--identity", table["identity"]]
    assert cli("host", "add", "node", *args, "--trust").exit_code == 0
    assert cli("host", "remove", "node").exit_code == 0  # its pinned key stays
    change("ed25519")
    hosts = workspace.hosts_file.read_text()
    result = cli("host", "add", "node", *args, "--trust")
    assert result.exit_code == 1
    assert "is pinned for it: if the change is expected, run `datarun host trust node --replace`" \
        in result.stderr
    assert workspace.hosts_file.read_text() == hosts  # not added
    refused = cli("host", "add", "node", *args, "--replace")
    assert refused.exit_code == 2 and refused.stderr == (
        "error: host add node: --replace replaces a pinned key: give it with --trust\n")
    done = cli("host", "add", "node", *args, "--trust", "--replace")
    assert done.exit_code == 0, done.stderr
    assert re.search(rf"Pinned its host key {FINGERPRINT} \(replacing ssh-ed25519 {FINGERPRINT}\)\.",
                     done.stderr)


def test_a_stale_key_in_the_users_known_hosts_is_named_not_edited(workspace, cli, changing_host):
    import os

    first, change, table = changing_host
    old_line, old_fp = first.known_hosts_line(), fingerprint_of(first)
    user_file = os.path.expanduser("~/.ssh/known_hosts")  # HOME is the test's own
    os.makedirs(os.path.dirname(user_file), exist_ok=True)
    with open(user_file, "w") as handle:
        handle.write(old_line)
    add_host(workspace.hosts_file, "node", table)
    change("ed25519")
    result = cli("host", "trust", "node", "--replace")
    assert result.exit_code == 1
    assert result.stderr == (
        f"error: host node: the old key ssh-ed25519 {old_fp} of "
        f"[127.0.0.1]:{first.port} is in {user_file}, which datarun does not edit: remove it with "
        f"`ssh-keygen -R '[127.0.0.1]:{first.port}' -f {user_file}`, then run `datarun host trust node`\n")
    assert open(user_file).read() == old_line
