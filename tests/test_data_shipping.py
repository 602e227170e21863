"""Data sets travel packed (gzip'd when that pays), resume when cut, and are checked on arrival.

A real sshd on loopback behind the tests' fault proxy: an upload cut half-way through
leaves a part on the host; the next attempt sends only the rest (at most the missing
bytes and a little more), and the harness checks the archive's SHA-256 and the data
set's content hash before using it. A part damaged on the host is caught by that check,
deleted, and the next attempt starts over. The archive itself is the same bytes each
time it is built (resuming depends on it); it is gzip'd, and smaller than the data, when
a sample of the data compresses well, and a plain tar otherwise.
"""

import dataclasses
import logging
import os
import shlex
import shutil
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from faultproxy import FaultProxy, remote_home
from test_ssh_e2e import Remote

from datarun.errors import DatarunError
from datarun.executors import shipsend, shipssh
from datarun.executors.shipping import GZIP_BELOW, compression_level, sample_ratio, write_archive
from datarun.executors.ssh import SSHExecutor
from datarun.executors.sshconn import SSHConnection
from datarun.store.blobs import tree_hash

pytestmark = pytest.mark.ssh


def data_set(folder, megabytes: int):
    """A data set of CSV text (compressible, as real ones are) with some random bytes."""
    folder.mkdir()
    rows = "\n".join(f"{i},{i * 0.37:.5f},{(i * 7919) % 1000},class_{i % 3}" for i in range(40_000))
    with open(folder / "train.csv", "w") as handle:
        while handle.tell() < megabytes * 1_000_000:
            handle.write(rows)
    (folder / "noise.bin").write_bytes(os.urandom(megabytes * 200_000))
    (folder / "meta.json").write_text('{"target": "y"}')
    return tree_hash(folder)


@pytest.fixture
def proxied(workspace, sshd_a):  # noqa: F811
    proxy = FaultProxy(sshd_a.port)
    workdir = f"~/ship-{uuid.uuid4().hex[:8]}"
    host = sshd_a.host("node", port=proxy.port, workdir=workdir, command_timeout=20.0)
    with open(workspace.known_hosts_path, "a") as handle:
        handle.write(sshd_a.known_hosts_line())  # the tests' own direct connection
        handle.write(f"[127.0.0.1]:{proxy.port} {sshd_a.host_key_name} {sshd_a.host_key_pub}\n")
    remote = Remote(sshd_a, workspace.known_hosts_path, workdir)
    yield workspace, host, proxy, remote
    proxy.close()
    remote.stop_runner_and_clean()


def test_the_archive_is_the_same_bytes_each_time_and_compressed(tmp_path):
    digest = data_set(tmp_path / "d", 2)
    write_archive(tmp_path / "d", f"data/{digest}", tmp_path / "one.tar.gz")
    os.utime(tmp_path / "d" / "train.csv", (1, 1))  # times are not in it
    write_archive(tmp_path / "d", f"data/{digest}", tmp_path / "two.tar.gz")
    assert (tmp_path / "one.tar.gz").read_bytes() == (tmp_path / "two.tar.gz").read_bytes()
    raw = sum(p.stat().st_size for p in (tmp_path / "d").iterdir())
    assert (tmp_path / "one.tar.gz").stat().st_size < 0.6 * raw


def repetitive_data_set(folder):
    """A data set gzip shrinks several-fold: few distinct rows, repeated."""
    folder.mkdir()
    rows = "".join(f"{i % 50},{(i % 7) * 0.5},class_{i % 3}\n" for i in range(2_000))
    (folder / "train.csv").write_text(rows * 200)
    (folder / "meta.json").write_text('{"target": "y"}')
    return tree_hash(folder)


def test_a_sample_decides_whether_the_data_set_is_compressed(tmp_path):
    data_set(tmp_path / "mixed", 2)  # CSV of varied numbers and random bytes: gzip keeps ~40 %
    repetitive_data_set(tmp_path / "repetitive")
    assert sample_ratio(tmp_path / "mixed") > GZIP_BELOW
    assert compression_level(tmp_path / "mixed") == 0
    assert sample_ratio(tmp_path / "repetitive") < GZIP_BELOW
    assert compression_level(tmp_path / "repetitive") == 1
    (tmp_path / "empty").mkdir()
    assert compression_level(tmp_path / "empty") == 0


def test_a_compressible_data_set_travels_gzipd_and_arrives_checked(proxied, tmp_path):
    workspace, host, proxy, remote = proxied
    digest = repetitive_data_set(tmp_path / "d")
    executor = SSHExecutor(workspace, host)
    executor.prepare({digest: tmp_path / "d"})
    executor.close()
    archive = workspace.state_dir / "ship" / f"{digest}.tar"
    assert archive.read_bytes()[:2] == b"\x1f\x8b"  # gzip's magic
    raw = sum(p.stat().st_size for p in (tmp_path / "d").iterdir())
    assert archive.stat().st_size < GZIP_BELOW * raw
    assert remote.listing("data") == [digest]
    assert "train.csv" in remote.listing(f"data/{digest}")


def without_ssh(monkeypatch, tmp_path):
    """PATH as it is less every folder holding `ssh`."""
    kept = [d for d in os.environ["PATH"].split(os.pathsep) if not (Path(d) / "ssh").exists()]
    monkeypatch.setenv("PATH", os.pathsep.join(kept))
    assert shutil.which("ssh") is None


def archive_data_set(folder):
    """A data set gzip shrinks several-fold yet large enough for its archive to be cut mid-way."""
    repetitive_data_set(folder)
    (folder / "noise.bin").write_bytes(os.urandom(3_000_000))
    (folder / "train.csv").write_text((folder / "train.csv").read_text() * 4)
    return tree_hash(folder)


@pytest.mark.parametrize("via, packed", [("lane", "files"), ("paramiko-process", "files"), ("ssh", "files"),
                                         ("lane", "archive")])
def test_a_cut_upload_resumes_and_the_hashes_check(proxied, tmp_path, monkeypatch, caplog, via, packed):
    workspace, host, proxy, remote = proxied
    caplog.set_level(logging.INFO, logger="datarun.ship")
    if via != "lane":  # sent by a process of its own, as data sets of PROCESS_FROM bytes and more are
        monkeypatch.setattr(shipsend, "PROCESS_FROM", 0)
    if via == "paramiko-process":  # no OpenSSH client: the paramiko process, and the log says why
        without_ssh(monkeypatch, tmp_path)
    elif via == "ssh":
        assert shutil.which("ssh"), "the ssh path's test needs OpenSSH's client"
    if packed == "files":
        digest = data_set(tmp_path / "d", 6)  # gzip keeps ~40 % of it: it travels as its files
    else:
        digest = archive_data_set(tmp_path / "d")  # gzip shrinks it several-fold: an archive
    executor = SSHExecutor(workspace, host)
    executor.prepare({})  # the harness first, so the cut falls in the data set's upload
    proxy.cut_after_sent(1_500_000 if packed == "files" else 1_000_000)
    with pytest.raises((DatarunError, OSError, EOFError)):
        executor.prepare({digest: tmp_path / "d"})
    executor.close()
    incoming = f"{remote.workdir}/data/.incoming-{digest}"
    if packed == "files":
        assert not (workspace.state_dir / "ship").exists()  # nothing packed
        size = sum(p.stat().st_size for p in (tmp_path / "d").iterdir())
        part = sum(int(n) for n in remote.sh("sh", "-c", f"find {shlex.quote(incoming)} -type f "
                                              "-exec stat -c %s {} +").split())
    else:
        size = (workspace.state_dir / "ship" / f"{digest}.tar").stat().st_size
        part = int(remote.sh("stat", "-c", "%s", f"{incoming}.tar"))
    assert 0 < part < size

    again = SSHExecutor(workspace, host)
    before = again.conn.stats.bytes_sent if isinstance(again.conn, SSHConnection) else 0
    again.prepare({digest: tmp_path / "d"})
    sent = again.conn.stats.bytes_sent - before
    again.close()
    # The host's SFTP server may still write what it had received when the cut came.
    kept = again.data_resumed_from
    assert part <= kept < size
    assert sent <= 1.1 * (size - kept) + 64_000  # the rest, and the harness's commands
    assert remote.listing("data") == [digest]  # hash checked, the incoming part renamed or unpacked
    if packed == "archive":
        return
    assert remote.listing(f"data/{digest}") == [".complete", "meta.json", "noise.bin", "train.csv"]
    assert again.data_shipped_by == via.replace("lane", "paramiko")
    if via == "paramiko-process":
        assert "sent by paramiko in a process of its own: no `ssh` on PATH" in caplog.text
    elif via == "ssh":
        assert "sent by OpenSSH's ssh" in caplog.text


@pytest.mark.parametrize("kind", ["files", "archive"])
def test_a_part_damaged_on_the_host_is_refused_and_sent_again(proxied, tmp_path, kind):
    workspace, host, proxy, remote = proxied
    digest = data_set(tmp_path / "d", 2) if kind == "files" else repetitive_data_set(tmp_path / "d")
    executor = SSHExecutor(workspace, host)
    executor.prepare({})
    incoming = f"{remote.workdir}/data/.incoming-{digest}"
    if kind == "files":  # a part of train.csv that is not its start
        remote.sh("sh", "-c", f"mkdir -p {shlex.quote(incoming)} && "
                  f"head -c 300000 /dev/urandom > {shlex.quote(incoming)}/train.csv")
    else:
        remote.sh("sh", "-c", f"head -c 3000 /dev/urandom > {shlex.quote(incoming)}.tar")
    with pytest.raises(DatarunError) as error:
        executor.prepare({digest: tmp_path / "d"})
    if kind == "files":
        assert f"the files of data set {digest} arrived damaged" in str(error.value)
        assert "they are sent again from the start" in str(error.value)
    else:
        assert f"the archive of data set {digest} arrived damaged" in str(error.value)
        assert "it is sent again from the start" in str(error.value)
    assert remote.listing("data") == []  # the damaged part is gone
    executor.prepare({digest: tmp_path / "d"})
    executor.close()
    assert executor.data_resumed_from == 0
    assert remote.listing("data") == [digest]


def prepared_target(proxied, tmp_path):
    """The host's resolved target, the harness there, and where data set `d` would go."""
    workspace, host, proxy, remote = proxied
    digest = data_set(tmp_path / "d", 1)
    executor = SSHExecutor(workspace, host)
    executor.prepare({})
    target, where = executor.conn.target, f"{executor.layout.data}/.incoming-{digest}"
    executor.close()
    return target, where


def test_the_child_process_checks_the_host_key_as_the_lane_does(proxied, tmp_path):
    workspace, host, proxy, remote = proxied
    target, where = prepared_target(proxied, tmp_path)
    stranger = tmp_path / "known_hosts"
    stranger.write_text("")  # the host's key pinned nowhere: refused, nothing written
    with pytest.raises(DatarunError, match="host node: .*unknown"):
        shipsend.send_from_child(target, stranger, "files", tmp_path / "d", where, 30.0)
    assert remote.listing("data") == []
    # The control: the same child with the workspace's pins sends it all.
    have, sent = shipsend.send_from_child(target, workspace.known_hosts_path, "files", tmp_path / "d",
                                          where, 30.0)
    assert have == 0 and sent == sum(p.stat().st_size for p in (tmp_path / "d").iterdir())


def test_the_ssh_path_refuses_a_host_whose_key_differs_from_the_pinned_one(proxied, tmp_path, monkeypatch):
    workspace, host, proxy, remote = proxied
    target, where = prepared_target(proxied, tmp_path)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "other")], check=True)
    kind, key = (tmp_path / "other.pub").read_text().split()[:2]
    pinned = tmp_path / "known_hosts"
    pinned.write_text(f"{target.known_hosts_name} {kind} {key}\n")  # another key of the host's type
    assert shipssh.unusable(target, pinned) is None  # a key is pinned: the ssh path is taken
    with pytest.raises(DatarunError, match=r"host node: the host key of \[127\.0\.0\.1\]:\d+ is not the one "
                       r"pinned for it \(ssh: Host key verification failed\); nothing was sent: if the "
                       r"change is expected, run `datarun host trust node --replace`"):
        shipssh.send_by_ssh(target, pinned, "files", tmp_path / "d", where, 30.0)
    assert remote.listing("data") == []  # nothing written, not even the folder
    # The control: the same ssh with strict host key checking off logs in and writes it all.
    monkeypatch.setattr(shipssh, "STRICT_HOST_KEY_CHECKING", "no")
    have, sent = shipssh.send_by_ssh(target, pinned, "files", tmp_path / "d", where, 30.0)
    assert have == 0 and sent == sum(p.stat().st_size for p in (tmp_path / "d").iterdir())
    assert remote.listing("data/" + where.rsplit("/", 1)[1]) == ["meta.json", "noise.bin", "train.csv"]


def test_the_ssh_paths_errors_are_one_line(proxied, tmp_path, sshd_a):  # noqa: F811
    workspace, host, proxy, remote = proxied
    target, where = prepared_target(proxied, tmp_path)
    known = workspace.known_hosts_path
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "stranger")], check=True)
    stranger = dataclasses.replace(target, identities=(str(tmp_path / "stranger"),))
    with pytest.raises(DatarunError, match=r"host node: authentication refused for datarun-test@127\.0\.0\.1:\d+ "
                       r"\(key: .*stranger\): add the public key"):
        shipssh.send_by_ssh(stranger, known, "files", tmp_path / "d", where, 30.0)
    with pytest.raises(DatarunError, match=r"host node: upload to /proc/datarun-nowhere failed: mkdir: "):
        shipssh.send_by_ssh(target, known, "files", tmp_path / "d", "/proc/datarun-nowhere", 30.0)
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    with open(known, "a") as handle:
        handle.write(f"[127.0.0.1]:{port} {sshd_a.host_key_name} {sshd_a.host_key_pub}\n")
    with pytest.raises(DatarunError, match=rf"host node: ssh to 127\.0\.0\.1:{port} failed: .*Connection refused"):
        shipssh.send_by_ssh(dataclasses.replace(target, port=port), known, "files", tmp_path / "d", where, 30.0)
    proxy.stall()
    started = time.monotonic()
    with pytest.raises(DatarunError, match=r"host node: an upload timed out after 2s \(the host hangs or is "
                       r"overloaded\)"):
        shipssh.send_by_ssh(target, known, "files", tmp_path / "d", where, 2.0)
    assert time.monotonic() - started < 10
    proxy.resume()


def test_hosts_the_ssh_path_cannot_reach_as_paramiko_does_fall_back(tmp_path, monkeypatch):
    from datarun.executors.sshtarget import Target

    target = Target(name="node", hostname="127.0.0.1", port=2222, user="someone")
    known = tmp_path / "known_hosts"
    known.write_text("")
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.ssh/known_hosts either
    assert shipssh.unusable(target, known) == "no host key pinned for [127.0.0.1]:2222"
    known.write_text("[127.0.0.1]:2222 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFtHsNQDMMLwDnxnHXO3Vr2EHqqXvwdt7iH3UZ7HwKXh\n")
    assert shipssh.unusable(target, known) is None
    jumped = dataclasses.replace(target, jump=dataclasses.replace(target, name="node (jump host)", port=2200))
    assert shipssh.unusable(jumped, known) == "no host key pinned for [127.0.0.1]:2200"
    assert shipssh.unusable(target, known, files=65) == "65 files, more than 64 (one ssh connection each)"
    without_ssh(monkeypatch, tmp_path)
    assert shipssh.unusable(target, known) == "no `ssh` on PATH"


def test_the_ssh_path_goes_through_the_jump_host_with_each_hops_key_checked(sshd_a, sshd_b, tmp_path):  # noqa: F811
    from datarun.executors.sshtarget import Target

    data_set(tmp_path / "d", 1)
    jump = Target(name="inner (jump host 127.0.0.1)", hostname="127.0.0.1", port=sshd_a.port, user=sshd_a.user,
                  identities=(str(sshd_a.client_key),))
    target = Target(name="inner", hostname="127.0.0.1", port=sshd_b.port, user=sshd_b.user,
                    identities=(str(sshd_b.client_key),), jump=jump)
    folder = remote_home(sshd_b.user) / f"ship-jump-{uuid.uuid4().hex[:8]}"
    known = tmp_path / "known_hosts"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "other")], check=True)
    kind, key = (tmp_path / "other.pub").read_text().split()[:2]
    try:
        # The jump host's pin is another key: refused at the first hop, nothing written.
        known.write_text(f"[127.0.0.1]:{sshd_a.port} {kind} {key}\n" + sshd_b.known_hosts_line())
        with pytest.raises(DatarunError, match=rf"host inner: the host key of \[127\.0\.0\.1\]:{sshd_a.port} \(its "
                           r"jump host\) is not the one pinned for it \(ssh: Host key verification failed\)"):
            shipssh.send_by_ssh(target, known, "files", tmp_path / "d", str(folder), 30.0)
        assert not folder.exists()
        known.write_text(sshd_a.known_hosts_line() + sshd_b.known_hosts_line())
        have, sent = shipssh.send_by_ssh(target, known, "files", tmp_path / "d", str(folder), 30.0)
        assert have == 0 and sent == sum(p.stat().st_size for p in (tmp_path / "d").iterdir())
        assert (folder / "train.csv").read_bytes() == (tmp_path / "d" / "train.csv").read_bytes()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
