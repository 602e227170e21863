"""The SSH connection against real sshd on loopback: reuse, host keys, faults, timeouts."""

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from sshd import keygen

from datarun.errors import HostError
from datarun.executors.sshconn import (
    SSHConnection,
    load_ssh_config,
    pin_host_key,
    resolve_target,
)

pytestmark = pytest.mark.ssh


def connection(server, known_hosts: Path | None, **changes) -> SSHConnection:
    return SSHConnection(resolve_target(server.host("node", **changes)), known_hosts)


@pytest.fixture
def known_hosts(tmp_path, sshd_a, sshd_b):
    path = tmp_path / "known_hosts"
    path.write_text(sshd_a.known_hosts_line() + sshd_b.known_hosts_line())
    return path


def test_one_connection_serves_many_commands_with_nodelay(sshd_a, known_hosts):
    conn = connection(sshd_a, known_hosts)
    try:
        results = [conn.run(f"echo out{i}; echo err{i} >&2; exit {i}") for i in range(5)]
        assert [(r.status, r.stdout, r.stderr) for r in results] == [
            (i, f"out{i}\n", f"err{i}\n") for i in range(5)
        ]
        assert conn.stats.connects == 1
        sock = conn.transport().sock
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        # AES-GCM, which costs paramiko less CPU per byte than AES-CTR with an HMAC.
        assert conn.transport().local_cipher == "aes128-gcm@openssh.com"
        assert conn.transport().remote_cipher == "aes128-gcm@openssh.com"
        assert conn.expand("~/x y") == conn.home() + "/x y"
    finally:
        conn.close()


def test_unknown_host_key_is_refused_and_not_added(sshd_a, tmp_path):
    known = tmp_path / "known_hosts"
    known.write_text("")
    with pytest.raises(HostError, match=r"unknown host key ssh-ed25519 SHA256:\S+ for "
                       r"\[127.0.0.1\]:\d+: if it is right, pin it with `datarun host trust node`"):
        connection(sshd_a, known).connect()
    assert known.read_text() == ""


def test_changed_host_key_is_refused(sshd_a, sshd_b, tmp_path):
    known = tmp_path / "known_hosts"
    # The key of server b, recorded for server a's address: as if a's key had changed.
    known.write_text(f"[127.0.0.1]:{sshd_a.port} ssh-ed25519 {sshd_b.host_key_pub}\n")
    with pytest.raises(HostError, match=r"host key of \[127.0.0.1\]:\d+ has CHANGED: it is now "
                       r"ssh-ed25519 SHA256:\S+, ssh-ed25519 SHA256:\S+ is pinned: if the change is "
                       r"expected, run `datarun host trust node --replace`"):
        connection(sshd_a, known).connect()
    # Trusting does not overwrite the pin either.
    with pytest.raises(HostError, match="is pinned for it: if the change is expected, run "
                       "`datarun host trust node --replace`"):
        pin_host_key(resolve_target(sshd_a.host("node")), known)


def test_trust_pins_a_new_key_once(sshd_a, tmp_path):
    known = tmp_path / "ws_known_hosts"
    target = resolve_target(sshd_a.host("node"))
    first = pin_host_key(target, known)
    assert first.fingerprint.startswith("SHA256:") and first.replaced == []
    assert known.read_text() == sshd_a.known_hosts_line()
    assert pin_host_key(target, known) == first
    assert known.read_text() == sshd_a.known_hosts_line()  # not written twice
    conn = SSHConnection(target, known)
    try:
        assert conn.run("echo ok").stdout == "ok\n"
    finally:
        conn.close()


def test_wrong_port_is_refused(sshd_a, known_hosts):
    from sshd import free_port

    with pytest.raises(HostError, match=r"connection refused at 127.0.0.1:\d+: wrong port"):
        connection(sshd_a, known_hosts, port=free_port()).connect()


def test_a_port_without_ssh_times_out_on_the_banner(sshd_a, known_hosts):
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        started = time.monotonic()
        with pytest.raises(HostError, match=r"no SSH server answered at 127.0.0.1:\d+ within 0.5s"):
            connection(sshd_a, known_hosts, port=port, connect_timeout=0.5).connect()
        assert time.monotonic() - started < 3


def test_an_address_that_does_not_answer_is_unreachable(sshd_a, known_hosts):
    # A listener whose accept queue is full drops new SYNs: the connect hangs, as for a
    # host that is down, without a packet leaving loopback.
    with socket.socket() as full:
        full.bind(("127.0.0.1", 0))
        full.listen(0)
        port = full.getsockname()[1]
        fillers = []
        for _ in range(4):
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
            fillers.append(filler)
        try:
            with pytest.raises(HostError, match=r"is unreachable \(no answer within 0.5s\)"):
                connection(sshd_a, known_hosts, port=port, connect_timeout=0.5).connect()
        finally:
            for filler in fillers:
                filler.close()


def test_an_invalid_address_is_not_resolved(sshd_a, known_hosts):
    # glibc refuses a name with spaces before asking any DNS server.
    with pytest.raises(HostError, match="cannot resolve address 'bad host name'"):
        connection(sshd_a, known_hosts, address="bad host name").connect()


def test_authentication_refused_names_the_key(sshd_a, known_hosts, tmp_path):
    keygen(tmp_path / "stranger")
    with pytest.raises(HostError, match=r"authentication refused for \S+@127.0.0.1:\d+ \(key: "
                       r".*stranger\): add the public key"):
        connection(sshd_a, known_hosts, identity=str(tmp_path / "stranger")).connect()


def test_identity_file_problems(sshd_a, known_hosts, tmp_path):
    with pytest.raises(HostError, match=r"identity file \S+/nope does not exist"):
        connection(sshd_a, known_hosts, identity=str(tmp_path / "nope")).connect()
    (tmp_path / "folder").mkdir()
    with pytest.raises(HostError, match=r"cannot read identity file \S+/folder: Is a directory"):
        connection(sshd_a, known_hosts, identity=str(tmp_path / "folder")).connect()
    (tmp_path / "junk").write_text("not a key\n")
    with pytest.raises(HostError, match=r"identity file \S+/junk is not a private key"):
        connection(sshd_a, known_hosts, identity=str(tmp_path / "junk")).connect()
    keygen(tmp_path / "locked", passphrase="secret words")
    with pytest.raises(HostError, match=r"identity file \S+/locked needs a passphrase"):
        connection(sshd_a, known_hosts, identity=str(tmp_path / "locked")).connect()


def test_user_ssh_config_supplies_name_port_user_key_and_jump(sshd_a, sshd_b, known_hosts):
    # conftest points HOME at a temporary folder: this config is the test's own.
    ssh_dir = Path(os.path.expanduser("~/.ssh"))
    ssh_dir.mkdir(exist_ok=True)
    (ssh_dir / "config").write_text(
        f"Host jumpbox\n  HostName 127.0.0.1\n  Port {sshd_a.port}\n  User {sshd_a.user}\n"
        f"  IdentityFile {sshd_a.client_key}\n"
        f"Host inner\n  HostName 127.0.0.1\n  Port {sshd_b.port}\n  User {sshd_b.user}\n"
        f"  IdentityFile {sshd_b.client_key}\n  ProxyJump jumpbox\n"
        f"Host direct\n  HostName 127.0.0.1\n  Port {sshd_b.port}\n  User {sshd_b.user}\n"
        f"  IdentityFile {sshd_b.client_key}\n"
    )
    from datarun.executors.hosts import parse_host

    config = load_ssh_config()
    for alias in ("direct", "inner"):
        target = resolve_target(parse_host("n", {"address": alias}), config)
        assert (target.hostname, target.port, target.user) == ("127.0.0.1", sshd_b.port, sshd_b.user)
        conn = SSHConnection(target, known_hosts)
        try:
            assert conn.run("echo $SSH_CONNECTION").stdout.split()[2] == "127.0.0.1"
            assert bool(conn.fabric.gateway) == (alias == "inner")  # Fabric's gateway: the jump host
        finally:
            conn.close()


def _stop(processes, sig):
    for process in processes:
        try:
            process.send_signal(sig)
        except Exception:
            pass


def test_a_hung_host_times_out_within_the_command_timeout(sshd_fresh, tmp_path):
    known = tmp_path / "known_hosts"
    known.write_text(sshd_fresh.known_hosts_line())
    conn = connection(sshd_fresh, known, command_timeout=1.0)
    try:
        assert conn.run("echo up").stdout == "up\n"
        sessions = sshd_fresh.session_processes()
        assert sessions
        _stop(sessions, signal.SIGSTOP)
        started = time.monotonic()
        try:
            with pytest.raises(HostError, match="a command timed out after 1s"):
                conn.run("echo still there?")
        finally:
            _stop(sessions, signal.SIGCONT)
        assert time.monotonic() - started < 3
        # The next call opens a new connection and works again.
        assert conn.run("echo back").stdout == "back\n"
        assert conn.stats.connects == 2
    finally:
        conn.close()


def test_a_slow_command_times_out(sshd_a, known_hosts):
    conn = connection(sshd_a, known_hosts)
    try:
        started = time.monotonic()
        with pytest.raises(HostError, match="a command timed out after 0.3s"):
            conn.run("sleep 5", timeout=0.3)
        assert time.monotonic() - started < 2
    finally:
        conn.close()


def test_sftp_put_get_and_size_cap(sshd_a, known_hosts, tmp_path):
    conn = connection(sshd_a, known_hosts)
    try:
        local = tmp_path / "blob"
        local.write_bytes(os.urandom(100_000))
        remote = conn.expand("~/datarun-test-blob")
        assert conn.put(local, remote) == 100_000
        with open(tmp_path / "back", "wb") as out:
            assert conn.get(remote, out, 100_000, max_bytes=200_000) == 100_000
        assert (tmp_path / "back").read_bytes() == local.read_bytes()
        # Each write request fits one SSH packet: 2 MB go in about 2 MB / 32675 data packets
        # (requests of paramiko's 32768 bytes went as two packets each, ~128 here).
        big = tmp_path / "big"
        big.write_bytes(os.urandom(2_000_000))
        packetizer = conn.transport().packetizer
        before = packetizer._Packetizer__sent_packets
        assert conn.put(big, remote + "-big") == 2_000_000
        assert packetizer._Packetizer__sent_packets - before <= 2_000_000 // 32_675 + 8
        conn.remove(remote + "-big")
        with open(tmp_path / "capped", "wb") as out, pytest.raises(
                HostError, match="is announced as 100000 bytes, over the 1000-byte cap"):
            conn.get(remote, out, 100_000, max_bytes=1000)
        assert (tmp_path / "capped").read_bytes() == b""  # refused before a byte moved
        with open(tmp_path / "short", "wb") as out, pytest.raises(
                HostError, match="ended after 100000 of the 100001 bytes announced"):
            conn.get(remote, out, 100_001, max_bytes=200_000)
        conn.remove(remote)
        with open(tmp_path / "gone", "wb") as out, pytest.raises(
                HostError, match="datarun-test-blob does not exist"):
            conn.get(remote, out, 10, max_bytes=1000)
        with pytest.raises(HostError, match="cannot write /root/datarun: .*workdir writable"):
            conn.put(local, "/root/datarun")
        with pytest.raises(HostError, match="upload to /nonexistent/datarun failed: .*No such file"):
            conn.put(local, "/nonexistent/datarun")
    finally:
        conn.close()


def test_sshd_fixture_servers_have_distinct_keys(sshd_a, sshd_b):
    assert sshd_a.host_key_pub != sshd_b.host_key_pub
    assert sshd_a.port != sshd_b.port
    out = subprocess.run(["ssh-keygen", "-lf", str(sshd_a.folder / "host_ed25519.pub")],
                         capture_output=True, text=True).stdout
    assert "ED25519" in out


def test_a_large_output_is_read_to_its_end_though_the_exit_status_comes_first(sshd_a, tmp_path,
                                                                             monkeypatch):
    # Over a paced link the client's window fills; OpenSSH sends the exit status as soon as
    # the command exits, ahead of the output it still holds for the window.
    import shlex

    from test_hardening_downloads import SlowProxy

    import datarun.executors.sshconn as sshconn

    proxy = SlowProxy(sshd_a.port)
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{proxy.port} ssh-ed25519 {sshd_a.host_key_pub}\n")
    conn = connection(sshd_a, known, port=proxy.port)
    size = 6 * 1024**2
    command = shlex.join(["head", "-c", str(size), "/dev/zero"])
    try:
        conn.run("true")
        proxy.rate = 8_000_000
        assert [len(conn.run(command).stdout) for _ in range(3)] == [size] * 3
        # Negative control: stopping at the exit status once the buffers are empty (the
        # old rule) loses the end of the output. A slower link leaves the buffers empty
        # between packets for longer, so a busy client still meets the old rule's moment.
        monkeypatch.setattr(sshconn, "drained", lambda channel: not channel.recv_ready()
                            and not channel.recv_stderr_ready())
        proxy.rate = 2_000_000
        assert any(len(conn.run(command).stdout) < size for _ in range(10))
    finally:
        conn.close()
        proxy.close()
