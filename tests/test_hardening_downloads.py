"""Downloads from a host read the announced size and no more, into a private file of an
unpredictable name, within a time limit from that size.

The attack of the issue: something on the host (a task running beside the one whose
results are fetched) appends to the results archive while the organiser downloads it;
the old download read to EOF, and 545 MB landed in `.datarun/tmp`. Here the remote file
really grows in the middle of a download from a real sshd (the local writer appends to it
on the host after the first chunk has arrived), and the organiser keeps exactly the bytes
announced. The negative control downloads the same growing file the old way (paramiko's
get, to EOF) and gets all of it. A download that crawls (a loopback proxy pacing the link)
ends at the limit its announced size gives, not at the one of the 4 GiB cap.
"""

import os
import shlex
import socket
import stat
import time
import uuid

import pytest
from faultproxy import FaultProxy
from harness_helpers import DATA_IRIS, LOGISTIC
from sshd import pin
from test_ssh_executor import datasets, make_bundle, stop_remote_runner, wait_finished  # noqa: F401

from datarun.errors import HostError
from datarun.executors.ssh import MAX_RESULT_ARCHIVE, SSHExecutor
from datarun.executors.sshconn import SSHConnection, resolve_target

pytestmark = pytest.mark.ssh

MB = 1 << 20


class Growing:
    """A download's destination that, once the first chunk has arrived, makes the remote
    file grow by `extra` bytes (appended on the host, as a task there would)."""

    def __init__(self, out, remote_path: str, extra: int, conn: SSHConnection):
        self.out, self.remote_path, self.extra, self.conn = out, remote_path, extra, conn
        self.written = 0
        self.grown_at: int | None = None

    def write(self, data: bytes) -> int:
        if self.grown_at is None:
            self.grown_at = self.written
            grow = self.conn.run(shlex.join(
                ["sh", "-c", f"head -c {self.extra} /dev/zero >> {shlex.quote(self.remote_path)}"]))
            assert grow.status == 0, grow.stderr
        self.written += len(data)
        return self.out.write(data)


@pytest.fixture
def host(sshd_a, tmp_path):
    known = tmp_path / "known_hosts"
    known.write_text(sshd_a.known_hosts_line())

    def connect(**changes) -> SSHConnection:
        return SSHConnection(resolve_target(sshd_a.host("node", **changes)), known)

    conns = [connect(), connect()]  # one downloads, the other plays the appender on the host
    yield conns
    for conn in conns:
        conn.close()


def _upload(conn, tmp_path, size: int) -> tuple[str, bytes]:
    content = os.urandom(size)
    local = tmp_path / f"src-{uuid.uuid4().hex[:6]}"
    local.write_bytes(content)
    remote = conn.expand(f"~/datarun-grow-{uuid.uuid4().hex[:8]}.tar")
    conn.put(local, remote)
    return remote, content


def test_a_file_that_grows_during_the_download_is_read_to_its_announced_size(host, tmp_path):
    conn, appender = host
    size = 8 * MB
    remote, content = _upload(conn, tmp_path, size)
    try:
        with open(tmp_path / "got", "wb") as out:
            growing = Growing(out, remote, 64 * MB, appender)
            assert conn.get(remote, growing, size, MAX_RESULT_ARCHIVE) == size
        assert growing.grown_at == 0 and growing.written == size  # it grew after the first chunk
        assert appender.run(shlex.join(["stat", "-c", "%s", remote])).stdout.strip() == str(
            size + 64 * MB)
        assert (tmp_path / "got").read_bytes() == content  # exactly what was announced

        # Negative control: the old download (paramiko's get: stat, then read to EOF; get
        # raises "size mismatch" only once every byte has landed).
        remote2, _ = _upload(conn, tmp_path, size)
        with open(tmp_path / "old", "wb") as out:
            conn.sftp().getfo(remote2, Growing(out, remote2, 64 * MB, appender))
        assert (tmp_path / "old").stat().st_size == size + 64 * MB  # all of it landed
        conn.remove(remote2)
    finally:
        conn.remove(remote)


def test_a_sync_keeps_exactly_the_announced_archive_in_a_private_file(workspace, sshd_a,
                                                                      datasets, tmp_path,  # noqa: F811
                                                                      monkeypatch):
    pin(workspace, sshd_a)
    workdir = f"~/wd-{uuid.uuid4().hex[:8]}"
    node = SSHExecutor(workspace, sshd_a.host("node", workdir=workdir))
    appender = SSHConnection(resolve_target(sshd_a.host("appender")),
                             workspace.state_dir / "known_hosts")
    data, meta = datasets
    dest = workspace.state_dir / "tmp" / "results"  # where the dispatcher fetches
    seen = []
    real_get = SSHConnection.get

    def get_while_it_grows(self, remote, out, size, max_bytes):
        # A task beside the finished one appends 32 MB to the pack as it is fetched.
        seen.append({"path": os.readlink(f"/proc/self/fd/{out.fileno()}"), "size": size,
                     "mode": stat.S_IMODE(os.fstat(out.fileno()).st_mode)})
        return real_get(self, remote, Growing(out, remote, 32 * MB, appender), size, max_bytes)

    try:
        node.prepare({DATA_IRIS: data / DATA_IRIS})
        node.launch([make_bundle(tmp_path / "b", "t1-a1", LOGISTIC, meta[DATA_IRIS], DATA_IRIS)])
        wait_finished(node, ["t1-a1"])
        monkeypatch.setattr(SSHConnection, "get", get_while_it_grows)
        result = node.sync([], [], ["t1-a1"], dest)
        assert result.fetched == ["t1-a1"]
        [download] = seen
        assert download["mode"] == 0o600 and os.path.dirname(download["path"]) == str(dest)
        assert os.path.basename(download["path"]) != ".results-.tar"  # mkstemp's random part
        assert not os.path.exists(download["path"])  # removed once unpacked
        assert sorted(os.listdir(dest)) == ["t1-a1"]
        assert (dest / "t1-a1" / "result.json").exists()
        pack = node._pack_path
        grown = int(appender.run(shlex.join(["stat", "-c", "%s", pack])).stdout)
        assert grown == download["size"] + 32 * MB

        # Negative control: the old get (to EOF) takes the 32 MB too, and the digest fails.
        def old_get(self, remote, out, size, max_bytes):
            self.sftp().getfo(remote, Growing(out, remote, 32 * MB, appender))
            return out.tell()

        monkeypatch.setattr(SSHConnection, "get", old_get)
        node.cleanup(["t1-a1"])
        node.launch([make_bundle(tmp_path / "c", "t2-a1", LOGISTIC, meta[DATA_IRIS], DATA_IRIS)])
        wait_finished(node, ["t2-a1"])
        with pytest.raises((HostError, OSError)):
            node.sync([], [], ["t2-a1"], tmp_path / "old")
    finally:
        appender.close()
        node.close()
        stop_remote_runner(sshd_a, workdir, workspace.state_dir / "known_hosts")


def test_an_announced_size_over_the_cap_is_refused_before_a_byte_moves(host, tmp_path):
    conn, _ = host
    remote, _ = _upload(conn, tmp_path, 1000)
    try:
        with open(tmp_path / "got", "wb") as out:
            with pytest.raises(HostError, match=rf"is announced as {MAX_RESULT_ARCHIVE + 1} bytes, "
                               rf"over the {MAX_RESULT_ARCHIVE}-byte cap"):
                conn.get(remote, out, MAX_RESULT_ARCHIVE + 1, MAX_RESULT_ARCHIVE)
            for bad in (-1, "10", None, True):
                with pytest.raises(HostError, match="is not a byte count"):
                    conn.get(remote, out, bad, MAX_RESULT_ARCHIVE)
        assert (tmp_path / "got").stat().st_size == 0
        assert conn.stats.bytes_received == 0  # not a byte downloaded
    finally:
        conn.remove(remote)


class SlowProxy(FaultProxy):
    """The test's loopback proxy, pacing what flows towards the client once `rate` is set:
    a host (or a link) that sends a download slowly but never stops."""

    rate: float | None = None  # bytes per second

    def _pump(self, source, sink, pair, downstream: bool) -> None:
        if not downstream:
            return super()._pump(source, sink, pair, downstream)
        try:
            while True:
                data = source.recv(4096)
                if not data:
                    sink.shutdown(socket.SHUT_WR)
                    return
                if self.rate:
                    time.sleep(len(data) / self.rate)  # pacing the link, not waiting for it
                sink.sendall(data)
        except OSError:
            self._reset(pair)


def test_a_slow_download_ends_at_the_limit_of_its_announced_size(sshd_a, tmp_path):
    proxy = SlowProxy(sshd_a.port)
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{proxy.port} ssh-ed25519 {sshd_a.host_key_pub}\n")
    target = resolve_target(sshd_a.host("node", port=proxy.port, command_timeout=1.0))
    conns = [SSHConnection(target, known), SSHConnection(target, known)]
    remote, _ = _upload(conns[0], tmp_path, 1_000_000)
    try:
        for conn in conns:
            conn.sftp()  # connected and open before the link slows down
        proxy.rate = 250_000  # 1 MB takes ~4 s
        started = time.monotonic()
        with open(tmp_path / "got", "wb") as out:
            with pytest.raises(HostError, match=r"a download timed out after 2s \(the host hangs"):
                conns[0].get(remote, out, 1_000_000, MAX_RESULT_ARCHIVE)  # 1 s + 1 MB at 1 MB/s
        assert time.monotonic() - started < 3.5

        # Negative control: with the limit of the 4 GiB cap (the old one, 1 s + 4295 s), the
        # same crawl is let run to its end, as a host dripping a file for an hour would be.
        started = time.monotonic()
        with conns[1]._watchdog(conns[1]._transfer_timeout(MAX_RESULT_ARCHIVE), "a download"):
            conns[1].sftp().get(remote, str(tmp_path / "old"))
        assert time.monotonic() - started > 2.0
        assert (tmp_path / "old").stat().st_size == 1_000_000
    finally:
        proxy.rate = None
        for conn in conns:
            conn.close()
        cleanup = SSHConnection(resolve_target(sshd_a.host("node")), tmp_path / "direct")
        (tmp_path / "direct").write_text(sshd_a.known_hosts_line())
        cleanup.remove(remote)
        cleanup.close()
        proxy.close()



def test_a_command_that_floods_its_answer_is_cut_off(host, monkeypatch):
    import datarun.executors.sshconn as sshconn

    conn, _ = host
    flood = shlex.join(["head", "-c", str(sshconn.MAX_COMMAND_OUTPUT + 8 * MB), "/dev/zero"])
    with pytest.raises(HostError) as error:
        conn.run(flood)
    assert str(error.value) == (
        f"host node: a command printed more than {sshconn.MAX_COMMAND_OUTPUT} bytes (datarun's "
        "commands print a few kB): is `python` in hosts.toml the host's Python?")
    assert conn.run("echo still here").stdout == "still here\n"  # a new connection serves on
    # Negative control: without the cap, all of it is held in the organiser's memory.
    monkeypatch.setattr(sshconn, "MAX_COMMAND_OUTPUT", 1 << 40)
    assert len(conn.run(flood).stdout) == (64 + 8) * MB
