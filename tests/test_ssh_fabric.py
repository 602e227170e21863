"""What the SSH layer takes from Fabric, and where it overrides Fabric's defaults.

Fabric's configuration loads ssh_config and its `Connection` applies it and connects; each
default datarun overrides is shown here against a plain `fabric.Connection` doing the
wrong thing (the negative control): auto-adding an unknown host key, forwarding the
organiser's agent, no TCP_NODELAY, ProxyJump hops in reverse, jump hosts left open.
"""

import os
import signal
import socket
import threading
import time
from pathlib import Path

import fabric
import pytest

import datarun.executors.sshtarget as sshtarget
from datarun.errors import HostError
from datarun.executors.hosts import parse_host
from datarun.executors.sshconn import (
    HostConnection,
    SSHConnection,
    load_ssh_config,
    resolve_target,
)


def ssh_config(text: str) -> Path:
    # conftest points HOME at a temporary folder: this ~/.ssh/config is the test's own.
    path = Path(os.path.expanduser("~/.ssh/config"))
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def no_system_ssh_config(tmp_path, monkeypatch):
    """A system ssh_config of the test's own (empty until written), not the machine's."""
    path = tmp_path / "system_ssh_config"
    monkeypatch.setattr(sshtarget, "SYSTEM_SSH_CONFIG", str(path))
    return path


def plain_fabric(server, **kwargs) -> fabric.Connection:
    """Fabric as it comes, given the same server, user and key datarun would use."""
    return fabric.Connection("127.0.0.1", port=server.port, user=server.user, connect_kwargs={
        "key_filename": str(server.client_key), "look_for_keys": False, "allow_agent": False},
        **kwargs)


# --- configuration: Fabric's lookup, hosts.toml's settings win ----------------------------


def test_the_proxyjump_hops_are_visited_in_ssh_order(no_system_ssh_config):
    ssh_config("Host target\n  HostName 10.0.0.9\n  ProxyJump first,second\n"
               "Host first\n  HostName 10.0.0.1\n  User alice\n  ProxyJump zero\n"
               "Host second\n  HostName 10.0.0.2\n  Port 2222\n  ProxyJump never\n"
               "Host zero\n  HostName 10.0.0.0\n")
    target = resolve_target(parse_host("node", {"address": "target"}), load_ssh_config())
    # ssh connects to `first` (through `zero`, its own ProxyJump), then `second` through
    # it, then the target through `second`; `second`'s own ProxyJump is not used.
    assert [(hop.name, hop.hostname, hop.port) for hop in target.hops()] == [
        ("node (jump host first) (jump host zero)", "10.0.0.0", 22),
        ("node (jump host first)", "10.0.0.1", 22),
        ("node (jump host second)", "10.0.0.2", 2222),
    ]
    assert target.hops()[1].user == "alice"
    # The connection is a chain of Fabric gateways in that order, each one of datarun's.
    conn = HostConnection(target)
    chain = []
    gateway = conn.gateway
    while gateway:
        assert isinstance(gateway, HostConnection)
        chain.append(gateway.host)
        gateway = gateway.gateway
    assert chain == ["10.0.0.2", "10.0.0.1", "10.0.0.0"]

    # Negative control: Fabric's own ProxyJump handling puts `second` first.
    plain = fabric.Connection("target", config=load_ssh_config())
    assert (plain.gateway.host, plain.gateway.gateway.host) == ("10.0.0.1", "10.0.0.2")


def test_a_jump_hop_written_as_v6_address_and_port_is_split(no_system_ssh_config):
    ssh_config("Host target\n  ProxyJump carol@[::1]:2201\n")
    [hop] = resolve_target(parse_host("node", {"address": "target"}), load_ssh_config()).hops()
    assert (hop.user, hop.hostname, hop.port) == ("carol", "::1", 2201)


def test_hosts_toml_wins_over_ssh_config_and_the_users_file_over_the_systems(
        no_system_ssh_config):
    ssh_config("Host alias\n  HostName 10.0.0.5\n  User fromuser\n  IdentityFile ~/.ssh/k1\n")
    no_system_ssh_config.write_text("Host *\n  User fromsystem\n  Port 2200\n"
                                    "  IdentityFile ~/.ssh/k2\n")
    config = load_ssh_config()
    target = resolve_target(parse_host("n", {"address": "alias"}), config)
    home = os.path.expanduser("~")
    assert (target.hostname, target.user, target.port) == ("10.0.0.5", "fromuser", 2200)
    assert target.identities == (f"{home}/.ssh/k1", f"{home}/.ssh/k2")  # as ssh tries them
    assert target.identity_required is False
    target = resolve_target(parse_host("n", {"address": "alias", "user": "u", "port": 22,
                                             "identity": "~/mine"}), config)
    assert (target.hostname, target.user, target.port) == ("10.0.0.5", "u", 22)
    assert target.identities == (f"{home}/mine",) and target.identity_required is True


def test_fabrics_own_configuration_files_are_not_read(no_system_ssh_config):
    Path(os.path.expanduser("~/.fabric.yaml")).write_text("user: fromfabric\nport: 2022\n")
    target = resolve_target(parse_host("n", {"address": "10.0.0.5"}), load_ssh_config())
    assert (target.user, target.port) != ("fromfabric", 2022)
    # Negative control: Fabric, left to itself, takes them.
    assert (fabric.Connection("10.0.0.5").user, fabric.Connection("10.0.0.5").port) == (
        "fromfabric", 2022)


def test_a_system_ssh_config_that_does_not_parse_is_named(workspace, cli, no_system_ssh_config):
    no_system_ssh_config.write_text("Host a\n  HostName\n")
    workspace.hosts_file.write_text('[hosts.node]\naddress = "a"\n')
    result = cli("host", "trust", "node")
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr == (f"error: cannot read {no_system_ssh_config}: Unparsable line "
                             "HostName: fix the file, or move it aside\n")


@pytest.mark.parametrize("table, spec", [
    ('address = "bob@a"\nuser = "alice"\n', "bob@a"),
    ('address = "a:2200"\nport = 22\n', "a:2200"),
    ('address = "a:ssh"\n', "a:ssh"),
])
def test_an_address_that_gives_a_user_or_port_twice_is_named(workspace, cli, table, spec):
    workspace.hosts_file.write_text(f"[hosts.node]\n{table}")
    result = cli("host", "trust", "node")
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr == (
        f"error: hosts.toml: [hosts.node] address {spec!r} is not a host name with at most a "
        "user@ and a :port: give the host's name alone as `address`, and its user and port as "
        "`user` and `port`\n")
    assert not (workspace.state_dir / "known_hosts").exists()


def test_a_proxyjump_with_a_port_that_is_not_a_number_is_named(workspace, cli,
                                                               no_system_ssh_config):
    ssh_config("Host a\n  ProxyJump jump:ssh\n")
    workspace.hosts_file.write_text('[hosts.node]\naddress = "a"\n')
    result = cli("host", "trust", "node")
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr == ("error: host node: ProxyJump 'jump:ssh' in ssh_config is not "
                             "[user@]host[:port]: fix the file, or move it aside\n")


def test_an_ssh_config_that_cannot_be_applied_to_the_address_is_named(workspace, cli,
                                                                      no_system_ssh_config):
    # glibc refuses a name with a space before asking any DNS server: nothing leaves the machine.
    ssh_config("Host *\n  CanonicalizeHostname yes\n  CanonicalDomains example.invalid\n"
               "  CanonicalizeFallbackLocal no\n")
    workspace.hosts_file.write_text('[hosts.node]\naddress = "bad name"\n')
    result = cli("host", "trust", "node")
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr == ("error: host node: ssh_config cannot be applied to 'bad name' "
                             "(CanonicalizeHostname found no name for it): fix the file, or move "
                             "it aside\n")


def test_agent_forwarding_stays_off_whatever_ssh_config_says(no_system_ssh_config):
    ssh_config("Host *\n  ForwardAgent yes\n")
    config = load_ssh_config()
    target = resolve_target(parse_host("n", {"address": "10.0.0.5"}), config)
    assert HostConnection(target).forward_agent is False
    # Negative control: Fabric follows ssh_config and would hand the host the agent.
    assert fabric.Connection("10.0.0.5", config=config).forward_agent is True


# --- connecting: strict keys, datarun's socket, hops closed with the host ----------------


@pytest.mark.ssh
def test_an_unknown_key_is_refused_where_fabric_would_add_it(sshd_a, tmp_path):
    target = resolve_target(sshd_a.host("node"))
    with pytest.raises(HostError, match=r"unknown host key ssh-ed25519 SHA256:\S+ for "
                       r"\[127.0.0.1\]:\d+: if it is right, pin it"):
        SSHConnection(target, tmp_path / "none").connect()
    # Negative control: Fabric's AutoAddPolicy takes the key nobody pinned, and logs in.
    plain = plain_fabric(sshd_a)
    try:
        assert plain.run("echo in", hide=True, in_stream=False).stdout == "in\n"
    finally:
        plain.close()


@pytest.mark.ssh
def test_tcp_nodelay_is_set_on_the_socket_fabric_connects_with(sshd_a, tmp_path):
    known = tmp_path / "known_hosts"
    known.write_text(sshd_a.known_hosts_line())
    conn = SSHConnection(resolve_target(sshd_a.host("node")), known)
    plain = plain_fabric(sshd_a)
    try:
        conn.connect()
        sock = conn.fabric.transport.sock  # the socket Fabric's client.connect runs on
        assert isinstance(sock, socket.socket)
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        assert conn.transport() is conn.fabric.transport  # the one commands and syncs use
        # Negative control: the socket Fabric makes by itself has neither.
        plain.open()
        assert plain.transport.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 0
        assert plain.transport.sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 0
    finally:
        conn.close()
        plain.close()


@pytest.mark.ssh
def test_closing_a_connection_closes_its_jump_host(sshd_a, sshd_b, tmp_path,
                                                  no_system_ssh_config):
    known = tmp_path / "known_hosts"
    known.write_text(sshd_a.known_hosts_line() + sshd_b.known_hosts_line())
    ssh_config(f"Host jumpbox\n  HostName 127.0.0.1\n  Port {sshd_a.port}\n  User {sshd_a.user}\n"
               f"  IdentityFile {sshd_a.client_key}\n"
               f"Host inner\n  HostName 127.0.0.1\n  Port {sshd_b.port}\n  User {sshd_b.user}\n"
               f"  IdentityFile {sshd_b.client_key}\n  ProxyJump jumpbox\n")
    conn = SSHConnection(resolve_target(parse_host("n", {"address": "inner"}), load_ssh_config()),
                         known)
    assert conn.run("echo through").stdout == "through\n"
    jump = conn.fabric.gateway
    assert jump.is_connected
    conn.close()
    assert not jump.is_connected

    # Negative control: Fabric's close leaves the jump host's connection open.
    plain = plain_fabric(sshd_b, gateway=plain_fabric(sshd_a))
    plain.open()
    plain.close()
    try:
        assert plain.gateway.is_connected
    finally:
        plain.gateway.close()


@pytest.mark.ssh
def test_a_connection_whose_transport_died_gets_a_new_sftp_session(sshd_a, tmp_path):
    known = tmp_path / "known_hosts"
    known.write_text(sshd_a.known_hosts_line())
    conn = SSHConnection(resolve_target(sshd_a.host("node")), known)
    try:
        first = conn.sftp()
        conn.fabric.transport.close()  # the link dies under it
        assert conn.home().startswith("/")  # Fabric would hand back the dead session
        assert conn.sftp() is not first and conn.stats.connects == 2
    finally:
        conn.close()


@pytest.mark.ssh
def test_a_hung_host_outlives_the_timeout_of_fabrics_run_not_datarun_s(sshd_fresh,
                                                                      tmp_path):
    """Why commands do not go through Fabric's `run`: its timeout starts only once the
    command is under way, so a host that hangs before answering holds it past it."""
    known = tmp_path / "known_hosts"
    known.write_text(sshd_fresh.known_hosts_line())
    conn = SSHConnection(resolve_target(sshd_fresh.host("node", connect_timeout=30.0,
                                                        command_timeout=1.0)), known)
    try:
        assert conn.run("echo up").stdout == "up\n"
        sessions = sshd_fresh.session_processes()
        for process in sessions:
            process.send_signal(signal.SIGSTOP)
        try:
            started = time.monotonic()
            with pytest.raises(HostError, match="a command timed out after 1s"):
                conn.run("echo still there?")
            assert time.monotonic() - started < 3
            # Negative control: the same hang through Fabric's run, told to give up after 1 s.
            # A new connection, hung in turn once its session process serves it.
            assert conn.run("echo again").stdout == "again\n"
            for process in sshd_fresh.session_processes():
                process.send_signal(signal.SIGSTOP)
            outcome: list = []
            runner = threading.Thread(target=lambda: outcome.append(
                conn.fabric.run("echo late", hide=True, in_stream=False, timeout=1, warn=True)),
                daemon=True)
            runner.start()
            runner.join(3)
            assert runner.is_alive() and not outcome  # still waiting, 3 s after its 1 s
        finally:
            for process in sshd_fresh.session_processes():
                process.send_signal(signal.SIGCONT)
        runner.join(10)
        assert not runner.is_alive()
    finally:
        conn.close()
