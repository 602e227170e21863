"""The small workspace the fault tests and bench/soak act on: a problem, submissions that
leave a trace of every run, and a cluster of loopback SSH hosts behind fault proxies
(faultproxy.py), each of which can be crashed, hung, woken or restarted.
"""

import json
import os
import shutil
import textwrap
import threading
from pathlib import Path

import psutil
from faultproxy import (
    LOOPBACK,
    FaultProxy,
    crash_host,
    hang_host,
    host_workdir,
    stop_host_runner,
    wake_host,
)

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

        from datarun.problems.registry import register_problem
        from datarun.store.db import open_db
        from datarun.store.workspace import init_workspace

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
                # isolation "none": the traced submissions mark their runs in a folder of
                # the host (the faults, not the sandbox, are what these tests are about).
                table = server.host_table(port=port, workdir=f"~/faults-{tag}-{name}",
                                          **{"isolation": "none", **settings})
                self.tables[name] = table
            if local_slots:
                self.tables = {"local": {"executor": "local", "slots": local_slots,
                                         "isolation": "none"}, **self.tables}
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

    def tasks(self, name: str) -> Path:
        """The workspace's task folders on host `name`."""
        from datarun.remote.common import Layout

        return Layout(self.folder(name), self.workspace.id).tasks

    def submit(self, n: int, sleep: float = 0.0) -> list[int]:
        from datarun.challenge.submissions import submit
        from datarun.store.db import open_db

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
            for workdir in [Path(os.environ["HOME"]) / ".datarun-host",
                            *(root.state_dir / "hosts").glob("*")]:
                stop_host_runner(workdir)


class Training:
    """`train` on a thread of its own (with its own database connection), for faults injected meanwhile."""

    def __init__(self, workspace, **options):
        self.summary: dict | None = None
        self.error: BaseException | None = None

        def run() -> None:
            from datarun.dispatch.train import train
            from datarun.store.db import open_db

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
