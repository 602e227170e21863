"""Fault injection for the fault tests and bench/soak: a loopback TCP proxy, crashed and
hung SSH hosts, and the small workspace they act on.

`FaultProxy` sits between datarun and an sshd, both on 127.0.0.1, and on command stalls
(holds every byte), drops (swallows bytes, so the SSH stream breaks as on a corrupting
link), cuts (resets every open connection, or one after N bytes), refuses new
connections, or points at another upstream port (an sshd restarted elsewhere keeps its
address). `tc netem` is not available here and links must never go down (packets would
leave the machine), so faults are made in user space on loopback only.

A host crash kills the sshd, its session processes and the harness runner with its task
processes (SIGKILL, as power loss would); a hang SIGSTOPs the same processes. Both find
the runner by the PID it records in the host's runner.json, read directly: the tests run
as root on the machine that plays every host.
"""

import json
import os
import pwd
import shutil
import signal
import socket
import struct
import textwrap
import threading
from pathlib import Path

import psutil

LOOPBACK = "127.0.0.1"
CHUNK = 1 << 16


class FaultProxy:
    """A TCP proxy on 127.0.0.1 whose connections can be stalled, broken and cut on command."""

    def __init__(self, upstream_port: int, port: int = 0):
        self.upstream_port = upstream_port
        self._listener = socket.create_server((LOOPBACK, port))
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._flowing = threading.Event()  # cleared while stalled
        self._flowing.set()
        self.dropping = False
        self.refusing = False
        self._cut_after: int | None = None  # bytes towards the client before a one-shot cut
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self.accepted = 0
        self.cuts = 0
        self._closed = False
        self._thread = threading.Thread(target=self._accept_loop, daemon=True,
                                        name=f"faultproxy-{self.port}")
        self._thread.start()

    # --- commands -----------------------------------------------------------------

    def stall(self) -> None:
        """Hold every byte in both directions, on open and new connections, until resume()."""
        self._flowing.clear()

    def drop(self) -> None:
        """Swallow every byte from now on, as a link that loses data would."""
        self.dropping = True

    def refuse(self) -> None:
        """Close every new connection as soon as it is accepted."""
        self.refusing = True

    def resume(self) -> None:
        self.dropping = False
        self.refusing = False
        self._flowing.set()

    def cut(self) -> int:
        """Reset every open connection; return how many were cut."""
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for pair in pairs:
            self._reset(pair)
        self.cuts += len(pairs)
        return len(pairs)

    def cut_after(self, n_bytes: int) -> None:
        """Reset the first connection that sends more than n_bytes more towards the client."""
        self._cut_after = n_bytes

    def set_upstream(self, port: int) -> None:
        """Send new connections to another port (a restarted server); open ones are cut."""
        self.upstream_port = port
        self.cut()

    def close(self) -> None:
        self._closed = True
        self._flowing.set()
        try:
            self._listener.close()
        except OSError:
            pass
        self.cut()

    # --- plumbing -----------------------------------------------------------------

    @staticmethod
    def _reset(pair: tuple[socket.socket, socket.socket]) -> None:
        for sock in pair:
            try:
                # Linger 0: close sends RST, as a broken path or a rebooted peer does. The
                # shutdown first wakes the pump blocked in recv(), which would otherwise
                # keep the socket open (and the bytes flowing) past close().
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                sock.close()
            except OSError:
                pass

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self.accepted += 1
            if self.refusing:
                self._reset((client,))
                continue
            try:
                upstream = socket.create_connection((LOOPBACK, self.upstream_port), timeout=5)
                upstream.settimeout(None)
            except OSError:
                self._reset((client,))
                continue
            pair = (client, upstream)
            with self._lock:
                self._pairs.append(pair)
            threading.Thread(target=self._pump, args=(client, upstream, pair, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, pair, True), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, pair, downstream: bool) -> None:
        sent = 0
        try:
            while True:
                data = source.recv(CHUNK)
                if not data:
                    sink.shutdown(socket.SHUT_WR)
                    return
                self._flowing.wait()
                if self._closed:
                    return
                if self.dropping:
                    continue
                if downstream and self._cut_after is not None:
                    sent += len(data)
                    if sent > self._cut_after:
                        self._cut_after = None
                        with self._lock:
                            if pair in self._pairs:
                                self._pairs.remove(pair)
                        self.cuts += 1
                        self._reset(pair)
                        return
                sink.sendall(data)
        except OSError:
            with self._lock:
                if pair in self._pairs:
                    self._pairs.remove(pair)
            self._reset(pair)


# --- hosts ------------------------------------------------------------------------------

def remote_home(user: str) -> Path:
    return Path(pwd.getpwnam(user).pw_dir)


def host_workdir(server, workdir: str) -> Path:
    """The local path of a test host's workdir (every test host is this machine)."""
    if workdir.startswith("~/"):
        return remote_home(server.user) / workdir[2:]
    return Path(workdir)


def runner_tree(folder: Path) -> list[psutil.Process]:
    """The harness runner serving this workdir (by runner.json) and every process under it."""
    try:
        pid = int(json.loads((folder / "runner.json").read_text())["pid"])
        runner = psutil.Process(pid)
        if not any("serve" in part for part in runner.cmdline()):
            return []  # the PID was reused: not a runner of ours
        return [runner, *runner.children(recursive=True)]
    except (OSError, ValueError, KeyError, TypeError, psutil.Error):
        return []


def _signal_all(processes: list[psutil.Process], sig: int) -> None:
    for process in processes:
        try:
            process.send_signal(sig)
        except psutil.Error:
            pass


def host_processes(server, folder: Path, with_sshd: bool = True) -> list[psutil.Process]:
    processes = list(server.session_processes())
    if with_sshd and server.process is not None:
        try:
            processes.insert(0, psutil.Process(server.process.pid))
        except psutil.Error:
            pass
    # Tasks live in their own sessions under the runner; collect them after the sessions.
    return processes + [p for p in runner_tree(folder) if p not in processes]


def crash_host(server, folder: Path) -> None:
    """Kill the host as a power cut would: its sshd, sessions, runner and task processes."""
    processes = host_processes(server, folder)
    _signal_all(processes, signal.SIGKILL)
    psutil.wait_procs(processes, timeout=5)
    if server.process is not None:
        server.process.wait(timeout=5)
        server.process = None


def hang_host(server, folder: Path, with_sshd: bool = False) -> list[psutil.Process]:
    """Freeze the host: its sshd sessions, its runner and its tasks (and the sshd if asked)."""
    processes = host_processes(server, folder, with_sshd=with_sshd)
    _signal_all(processes, signal.SIGSTOP)
    return processes


def wake_host(processes: list[psutil.Process]) -> None:
    _signal_all(processes, signal.SIGCONT)


def stop_host_runner(folder: Path) -> None:
    """SIGTERM then SIGKILL the runner of a test workdir, thaw it first, and remove the folder."""
    processes = runner_tree(folder)
    _signal_all(processes, signal.SIGCONT)
    if processes:
        _signal_all(processes[:1], signal.SIGTERM)
        _, alive = psutil.wait_procs(processes[:1], timeout=5)
        _signal_all(alive, signal.SIGKILL)
    shutil.rmtree(folder, ignore_errors=True)


# --- a small problem, and submissions that leave a trace of every run ---------------------

PROBLEM_TOML = """\
name = "{name}"
title = "Fault tests"
kind = "classification"

[data]
train = "data/train.csv"
test = "data/test.csv"
target = "species"

[cv]
strategy = "stratified-kfold"
n_splits = {folds}
seed = 0

[workflow]
kind = "estimator"

[scores]
names = ["accuracy"]

[limits]
wall_time = "{wall_time}s"
memory = "1GB"
"""

# A DummyClassifier that sleeps in fit and marks, in a folder any user may write, when each
# task key started and when it finished. The key is the task folder's name (the harness
# runs each task from its own folder), so a test can tell attempts and hosts apart.
TRACED = """\
import os
import time

from sklearn.dummy import DummyClassifier

TRACE = {trace!r}
SLEEP = {sleep!r}
TAG = {tag!r}


class Traced(DummyClassifier):
    def fit(self, X, y):
        key = os.path.basename(os.getcwd())
        open(os.path.join(TRACE, key + ".start"), "w").close()
        time.sleep(SLEEP)
        super().fit(X, y)
        open(os.path.join(TRACE, key + ".fit"), "w").close()
        return self


def get_estimator():
    return Traced(strategy="prior")
"""


def make_kit(root: Path, examples: Path, name: str = "faults", folds: int = 2,
             wall_time: int = 60) -> Path:
    kit = root / f"kit-{name}"
    (kit / "data").mkdir(parents=True)
    for part in ("train.csv", "test.csv"):
        shutil.copyfile(examples / "iris" / "data" / part, kit / "data" / part)
    (kit / "problem.toml").write_text(PROBLEM_TOML.format(name=name, folds=folds, wall_time=wall_time))
    return kit


def trace_folder() -> Path:
    """A folder every host user can write its run marks to.

    Not under pytest's tmp_path: pytest resets its base folder to 0700 whenever a session
    starts, which would lock the host user out mid-test.
    """
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="datarun-trace-"))
    folder.chmod(0o1777)
    return folder


def make_submission(root: Path, trace: Path, tag: str, sleep: float = 0.0) -> Path:
    folder = root / "subs" / tag
    folder.mkdir(parents=True)
    (folder / "estimator.py").write_text(textwrap.dedent(TRACED.format(trace=str(trace), sleep=sleep, tag=tag)))
    return folder


def runs(trace: Path) -> dict[str, dict[str, list[int]]]:
    """{task id: {"start": [attempts], "fit": [attempts]}} from the trace marks."""
    found: dict[str, dict[str, list[int]]] = {}
    for mark in trace.iterdir():
        key, _, what = mark.name.rpartition(".")
        task, _, attempt = key.partition("-a")
        found.setdefault(task.lstrip("t"), {"start": [], "fit": []})[what].append(int(attempt))
    return found


def hosts_toml(hosts: dict[str, dict]) -> str:
    """hosts.toml text for {name: settings}."""
    lines = []
    for name, table in hosts.items():
        lines.append(f"[hosts.{name}]")
        for key, value in table.items():
            lines.append(f"{key} = {json.dumps(value)}")
        lines.append("")
    return "\n".join(lines)


def pin_keys(workspace, entries: list[tuple[int, str]]) -> None:
    """Pin host keys for loopback ports in the workspace's known_hosts: [(port, key)]."""
    with open(workspace.state_dir / "known_hosts", "a") as handle:
        for port, key in entries:
            handle.write(f"[{LOOPBACK}]:{port} ssh-ed25519 {key}\n")


# --- a workspace over several loopback SSH hosts ------------------------------------------

class Cluster:
    """A workspace whose hosts are loopback sshd servers, each optionally behind a FaultProxy.

    Every host logs in as the test user with its own workdir. `crash`, `hang`, `wake` and
    `restart` act on one host; `close` stops every runner, server and proxy it started.
    """

    def __init__(self, root: Path, examples: Path, names=("a", "b"), folds: int = 2,
                 wall_time: int = 60, proxied: bool = False, local_slots: int = 0, **settings):
        from sshd import start_sshd

        from datarun.db import open_db
        from datarun.problems import register_problem
        from datarun.workspace import init_workspace

        self.root = Path(root)
        self.servers: dict = {}
        self.proxies: dict[str, FaultProxy] = {}
        self.tables: dict[str, dict] = {}
        self.frozen: dict[str, list[psutil.Process]] = {}
        self.trace: Path | None = None
        try:
            self.workspace = init_workspace(self.root / "ws")
            tag = self.root.name[-8:].replace("_", "-")
            for name in names:
                server = start_sshd()
                self.servers[name] = server
                port = server.port
                if proxied:
                    self.proxies[name] = FaultProxy(server.port)
                    port = self.proxies[name].port
                table = server.host_table(port=port, workdir=f"~/faults-{tag}-{name}", **settings)
                self.tables[name] = table
            if local_slots:
                self.tables = {"local": {"executor": "local", "slots": local_slots}, **self.tables}
            self.workspace.hosts_file.write_text(hosts_toml(self.tables))
            pin_keys(self.workspace, [(self.tables[n]["port"], s.host_key_pub) for n, s in self.servers.items()])
            db = open_db(self.workspace)
            register_problem(self.workspace, db, make_kit(self.root, examples, folds=folds, wall_time=wall_time))
            db.conn.close()
            self.trace = trace_folder()
        except BaseException:
            self.close()
            raise
        self._count = 0

    def folder(self, name: str) -> Path:
        return host_workdir(self.servers[name], self.tables[name]["workdir"])

    def submit(self, n: int, sleep: float = 0.0) -> list[int]:
        from datarun.db import open_db
        from datarun.submissions import submit

        db = open_db(self.workspace)
        try:
            ids = []
            for _ in range(n):
                self._count += 1
                tag = f"s{self._count}"
                folder = make_submission(self.root, self.trace, tag, sleep)
                ids.append(submit(self.workspace, db, "faults", folder, team=f"team-{tag}")["id"])
            return ids
        finally:
            db.conn.close()

    def crash(self, name: str) -> None:
        crash_host(self.servers[name], self.folder(name))

    def hang(self, name: str, with_sshd: bool = False) -> None:
        self.frozen[name] = hang_host(self.servers[name], self.folder(name), with_sshd=with_sshd)

    def wake(self, name: str) -> None:
        wake_host(self.frozen.pop(name, []))

    def restart(self, name: str) -> None:
        """Start the host's sshd again with its host key and client key; the proxy follows it."""
        from sshd import start_sshd

        old = self.servers[name]
        if old.process is not None:
            self.crash(name)
        server = start_sshd(host_key=old.folder / "host_ed25519")
        with open(server.folder / "authorized_keys", "a") as handle:
            handle.write((old.folder / "client_ed25519.pub").read_text())
        server.extra["previous"] = old
        self.servers[name] = server
        self.proxies[name].set_upstream(server.port)

    def close(self) -> None:
        for processes in self.frozen.values():
            wake_host(processes)
        for name, server in self.servers.items():
            if name in self.tables:
                stop_host_runner(self.folder(name))
            while server is not None:
                previous = server.extra.get("previous")
                if server.process is not None:
                    server.stop()
                else:
                    shutil.rmtree(server.folder, ignore_errors=True)
                server = previous
        for proxy in self.proxies.values():
            proxy.close()
        if self.trace is not None:
            shutil.rmtree(self.trace, ignore_errors=True)
        root = getattr(self, "workspace", None)
        if root is not None:
            for runner_json in (root.state_dir / "hosts").glob("*/runner.json"):
                stop_host_runner(runner_json.parent)


class Training:
    """`train` on a thread of its own (with its own database connection), for faults injected meanwhile."""

    def __init__(self, workspace, **options):
        self.summary: dict | None = None
        self.error: BaseException | None = None

        def run() -> None:
            from datarun.db import open_db
            from datarun.train import train

            db = open_db(workspace)
            try:
                self.summary = train(workspace, db, **options)
            except BaseException as error:  # handed to the test by join()
                self.error = error
            finally:
                db.conn.close()

        self._thread = threading.Thread(target=run, daemon=True, name="training")
        self._thread.start()

    def join(self, timeout: float) -> dict:
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise AssertionError(f"train did not finish within {timeout}s")
        if self.error is not None:
            raise self.error
        return self.summary


def wait_until(predicate, timeout: float, what: str, interval: float = 0.05):
    """Poll until predicate() is true (returns its value); fail naming what was awaited."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def task_rows(workspace) -> dict[int, dict]:
    """Every task row by id, read with a connection of its own."""
    import sqlite3

    conn = sqlite3.connect(workspace.db_path, timeout=60)
    conn.row_factory = sqlite3.Row
    try:
        return {row["id"]: dict(row) for row in conn.execute("SELECT * FROM tasks")}
    finally:
        conn.close()


def started_on(cluster: "Cluster", host: str) -> list[int]:
    """Tasks running on a host whose submission has started fitting there."""
    marks = runs(cluster.trace)
    return [task_id for task_id, row in task_rows(cluster.workspace).items()
            if row["state"] == "running" and row["host"] == host
            and row["attempt"] in marks.get(str(task_id), {}).get("start", [])]


def datarun_process(workspace, *args: str, **popen) :
    """`datarun ARGS...` as a real subprocess of this test, on this workspace."""
    import subprocess
    import sys

    env = dict(os.environ, DATARUN_HOME=str(workspace.root))
    return subprocess.Popen([sys.executable, "-m", "datarun", *map(str, args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)
