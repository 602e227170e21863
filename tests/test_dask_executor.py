"""Dask hosts for real: a `dask scheduler` and two `dask worker` processes on loopback.

Nothing is mocked: datarun's Dask executor submits one Dask task per datarun task, which
runs the harness's runner on a worker (sandbox, limits, measurement), and the results
come back as bytes the dispatcher checks as it checks an SSH host's.
"""

from __future__ import annotations

import os
import time

import pytest
from conftest import EXAMPLES, stop_runners

pytest.importorskip("distributed", reason="the Dask tests need `distributed` (pip install '.[cluster]')")

from daskcluster import DaskCluster, hosts_toml  # noqa: E402

SUBS = EXAMPLES / "iris" / "submissions"
LOCAL = '[hosts.local]\nexecutor = "local"\nslots = 2\n'


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    made = DaskCluster(tmp_path_factory.mktemp("dask"), workers=2)
    yield made
    made.stop()


@pytest.fixture
def iris5(workspace, cli):
    """The demo's iris kit as it is (5 folds)."""
    assert cli("problem", "add", EXAMPLES / "iris").exit_code == 0
    yield workspace
    stop_runners(workspace)


@pytest.fixture
def iris(workspace, cli, tmp_path):
    """The demo's iris kit with 2 folds: the fault tests need a few tasks, not many."""
    import shutil

    kit = tmp_path / "iris2"
    shutil.copytree(EXAMPLES / "iris", kit)
    toml = kit / "problem.toml"
    toml.write_text(toml.read_text().replace("n_splits = 5", "n_splits = 2"))
    assert cli("problem", "add", kit).exit_code == 0
    yield workspace
    stop_runners(workspace)


def use_hosts(workspace, text: str) -> None:
    workspace.hosts_file.write_text(text)


def submit(cli, name, team):
    result = cli("submit", "iris", SUBS / name, "--team", team, "--json")
    assert result.exit_code == 0, result.stderr
    return result.json()["id"]


def fold_scores(cli, submission):
    shown = cli("submission", "show", str(submission), "--json").json()
    return shown, {task["fold"]: task["scores"] for task in shown["tasks"]}


def test_iris_on_dask_gives_the_local_scores(iris5, cli, cluster):
    iris = iris5
    use_hosts(iris, LOCAL)
    here = submit(cli, "logreg", "ada")
    assert cli("train", "--json").exit_code == 0
    use_hosts(iris, hosts_toml("cluster", cluster.address, cluster.root / "hostdir"))
    there = submit(cli, "logreg", "grace")
    result = cli("train", "--json")
    assert result.exit_code == 0, result.stderr
    assert (result.json()["done"], result.json()["failed"]) == (5, 0)
    local_show, local_scores = fold_scores(cli, here)
    dask_show, dask_scores = fold_scores(cli, there)
    assert dask_scores == local_scores
    assert {task["host"] for task in dask_show["tasks"]} == {"cluster"}
    for task in dask_show["tasks"]:
        assert task["cpu_time"] > 0 and task["peak_memory"] > 0 and task["attempt"] == 1
        assert task["environment"]["isolation"] == "sandbox" if "isolation" in task["environment"] else True
    board = {row["id"]: row for row in cli("leaderboard", "iris", "--json").json()["rows"]}
    assert board[here]["score"] == board[there]["score"]


SLEEPER = '''import time

from sklearn.linear_model import LogisticRegression


class Slow(LogisticRegression):
    def fit(self, X, y):
        time.sleep({seconds})
        return super().fit(X, y)


def get_estimator():
    return Slow(max_iter=1000)
'''


def sleeper(tmp_path, seconds: float):
    folder = tmp_path / f"sleep{seconds}"
    folder.mkdir()
    (folder / "estimator.py").write_text(SLEEPER.format(seconds=seconds))
    return folder


class Training:
    """`datarun train` in a process of its own (the CLI runner is not thread-safe)."""

    def __init__(self, *args: str):
        import subprocess
        import sys

        self.process = subprocess.Popen([sys.executable, "-m", "datarun", "train", "--json", *args],
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                        env=dict(os.environ))

    def join(self, timeout: float):
        import json

        out, err = self.process.communicate(timeout=timeout)
        return self.process.returncode, (json.loads(out) if out.strip() else None), err


def wait_for(predicate, timeout: float = 60.0, what: str = "a condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def busy_worker(cluster, name: str | None, timeout: float = 120.0):
    """The address of worker `name` (None: any) once it runs a task."""
    with cluster.client() as client:
        def running():
            for address, info in client.scheduler_info(n_workers=-1)["workers"].items():
                if name in (None, info.get("name")) and client.processing().get(address):
                    return address
            return None
        return wait_for(running, timeout=timeout, what=f"worker {name or ''} to run a task")


def test_a_worker_killed_mid_task_is_a_host_loss_requeued_and_counted_once(iris, cli, cluster, tmp_path):
    import psutil

    use_hosts(iris, hosts_toml("cluster", cluster.address, cluster.root / "hostdir"))
    sub = cli("submit", "iris", sleeper(tmp_path, 4), "--team", "ada", "--json").json()["id"]
    training = Training()
    try:
        busy_worker(cluster, "w1")
        killed = cluster.workers["w1"].pid
        runners = wait_for(lambda: [json_pid(path) for path in (cluster.root / "hostdir" / "workspaces")
                                    .glob(f"*-w{killed}/runner.json")], what="the worker's runner")
        cluster.kill_worker("w1")
        code, summary, err = training.join(180)
    finally:
        cluster.start_worker("w1")
        cluster.wait_for_workers(2)
    assert code == 0, err
    assert (summary["done"], summary["failed"]) == (2, 0)
    shown = cli("submission", "show", str(sub), "--json").json()
    attempts = sorted(task["attempt"] for task in shown["tasks"])
    assert attempts.count(2) >= 1 and max(attempts) == 2  # the killed worker's task, run again once
    assert all(task["state"] == "done" and task["scores"] for task in shown["tasks"])
    # The runner that served the killed worker stopped with it: nothing of it runs on.
    for pid in runners:
        if pid is not None:
            wait_for(lambda pid=pid: not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie",
                     timeout=15, what=f"runner {pid} to stop")
    from datarun.store.db import open_db

    db = open_db(iris)
    rows = db.conn.execute("SELECT attempt, lost FROM tasks WHERE submission = ?", [sub]).fetchall()
    # Each loss counted once, on the attempt it cut short; nothing scored twice.
    assert sum(lost for _, lost in rows) == sum(attempt - 1 for attempt, _ in rows) >= 1
    assert db.conn.execute("SELECT COUNT(*) FROM scores s JOIN tasks t ON s.task = t.id "
                           "WHERE t.submission = ?", [sub]).fetchone()[0] == \
        2 * db.conn.execute("SELECT COUNT(*) FROM scores s JOIN tasks t ON s.task = t.id "
                            "WHERE t.id = (SELECT MIN(id) FROM tasks WHERE submission = ?)", [sub]).fetchone()[0]


def json_pid(path):
    import json

    try:
        return json.loads(path.read_text())["pid"]
    except (OSError, ValueError, KeyError):
        return None


def test_cancel_kills_the_task_on_its_worker(iris, cli, cluster, tmp_path):
    use_hosts(iris, hosts_toml("cluster", cluster.address, cluster.root / "hostdir"))
    sub = cli("submit", "iris", sleeper(tmp_path, 60), "--team", "ada", "--json").json()["id"]
    started = time.monotonic()
    training = Training()
    busy_worker(cluster, "w1")
    cancelled = cli("cancel", str(sub), "--json")
    assert cancelled.exit_code == 0, cancelled.stderr
    training.join(60)
    assert time.monotonic() - started < 50
    shown = cli("submission", "show", str(sub), "--json").json()
    assert {task["state"] for task in shown["tasks"]} == {"cancelled"}
    # The workers are free again at once: their sleeping tasks were killed, not left to run.
    with cluster.client() as client:
        wait_for(lambda: not any(client.processing().values()), timeout=15, what="the workers to be free")


TALKER = '''import time

from sklearn.dummy import DummyClassifier


class Talker(DummyClassifier):
    def fit(self, X, y):
        print("fitting on the worker now", flush=True)
        time.sleep(30)
        return super().fit(X, y)


def get_estimator():
    return Talker()
'''


def test_a_running_tasks_output_is_read_from_its_worker(iris, cli, cluster, tmp_path):
    use_hosts(iris, hosts_toml("cluster", cluster.address, cluster.root / "hostdir"))
    folder = tmp_path / "talker"
    folder.mkdir()
    (folder / "estimator.py").write_text(TALKER)
    sub = cli("submit", "iris", folder, "--team", "ada", "--json").json()["id"]
    training = Training()
    try:
        busy_worker(cluster, None)
        task = next(task["id"] for task in cli("submission", "show", str(sub), "--json").json()["tasks"]
                    if task["state"] == "running")

        def printed():
            shown = cli("logs", str(task), "--json")
            assert shown.exit_code == 0, shown.stderr
            answer = shown.json()
            return answer if "fitting on the worker now" in answer["log"] else None

        answer = wait_for(printed, timeout=60, what="the task's output while it runs")
        assert answer["source"] == "host" and answer["state"] == "running"
    finally:
        assert cli("cancel", str(sub), "--json").exit_code == 0
        training.join(60)


def test_a_submission_over_its_memory_limit_on_a_worker(iris, cli, cluster):
    use_hosts(iris, hosts_toml("cluster", cluster.address, cluster.root / "hostdir"))
    sub = submit(cli, "memory_hog", "ada")
    result = cli("train", "--json", "--memory", "300MB")
    assert result.exit_code in (0, 1), result.stderr
    shown = cli("submission", "show", str(sub), "--json").json()
    kinds = {task["error_kind"] for task in shown["tasks"]}
    assert kinds == {"memory_limit"}, shown["tasks"][0]


def test_a_scheduler_that_does_not_answer_is_one_line_and_other_hosts_work(iris, cli, tmp_path):
    use_hosts(iris, LOCAL + "\n" + hosts_toml("cluster", "tcp://127.0.0.1:1", tmp_path / "hostdir"))
    check = cli("host", "check", "cluster", "--json")
    report = check.json()
    report = report[0] if isinstance(report, list) else report
    report = report.get("hosts", [report])[0] if isinstance(report, dict) and "hosts" in report else report
    assert report["ok"] is False
    assert report["problems"] == [
        "host cluster: cannot reach the Dask scheduler at tcp://127.0.0.1:1: "
        "OSError: Timed out trying to connect to tcp://127.0.0.1:1 after 5 s"]
    plain = cli("host", "check", "cluster")
    assert plain.exit_code != 0
    assert "cannot reach the Dask scheduler at tcp://127.0.0.1:1" in plain.stdout + plain.stderr
    sub = submit(cli, "logreg", "ada")
    result = cli("train", "--json")
    assert result.json()["done"] == 2
    shown = cli("submission", "show", str(sub), "--json").json()
    assert {task["host"] for task in shown["tasks"]} == {"local"}


def test_a_hung_worker_costs_the_command_timeout_not_a_stall(iris, cli, tmp_path):
    """A worker stopped (SIGSTOP) answers nothing and Dask would wait for it for ever: each
    ask of the workers gives up after the host's command_timeout with one line, and the other
    hosts go on. (The stopped worker is this test's own cluster's.)"""
    import signal

    from datarun.errors import HostError
    from datarun.executors import open_executor
    from datarun.executors.hosts import load_hosts

    own = DaskCluster(tmp_path / "hung", workers=2)
    frozen = own.workers["w1"]
    try:
        use_hosts(iris, LOCAL + "\n" + hosts_toml("cluster", own.address, tmp_path / "hostdir",
                                                    extra='command_timeout = "5s"\n'))
        executor = open_executor(iris, load_hosts(iris.hosts_file)["cluster"])
        try:
            executor.connect()  # connected while every worker answers
            os.kill(frozen.pid, signal.SIGSTOP)
            start = time.monotonic()
            with pytest.raises(HostError, match=r"^host cluster: could not reach its Dask workers for the task's "
                                                r"output: "
                                                r"TimeoutError: not every worker answered within 5 s \(command_timeout\): a worker stopped or hung\?$"):
                executor.log("t1-a1")
            with pytest.raises(HostError, match=r"^host cluster: could not reach its Dask workers to cancel: "
                                                r"TimeoutError: not every worker answered within 5 s \(command_timeout\): a worker stopped or hung\?$"):
                executor.cancel(["t1-a1"])
            assert time.monotonic() - start < 30
        finally:
            executor.close()

        start = time.monotonic()
        check = cli("host", "check", "cluster", "--json")
        assert time.monotonic() - start < 40, check.stdout
        report = first_report(check)
        assert report["ok"] is False
        assert any("not every worker answered within 5 s" in problem for problem in report["problems"]), report["problems"]
        sub = submit(cli, "logreg", "ada")
        result = cli("train", "--json")
        assert result.json()["done"] == 2, result.stdout + result.stderr
        shown = cli("submission", "show", str(sub), "--json").json()
        assert {task["host"] for task in shown["tasks"]} == {"local"}
    finally:
        os.kill(frozen.pid, signal.SIGCONT)
        own.stop()


def test_host_check_reports_each_worker(iris, cli, cluster):
    use_hosts(iris, hosts_toml("cluster", cluster.address, cluster.root / "hostdir"))
    result = cli("host", "check", "cluster", "--json")
    assert result.exit_code == 0, result.stdout + result.stderr
    report = result.json()
    report = report[0] if isinstance(report, list) else report
    report = report.get("hosts", [report])[0] if "hosts" in report else report
    assert report["ok"] is True, report["problems"]
    assert report["address"] == cluster.address
    assert len(report["workers"]) == 2
    for worker in report["workers"].values():
        assert worker["sandbox"] is True and worker["missing"] == [] and worker["harness"]


def test_status_shows_the_workers_of_a_dask_host(iris, cli, cluster):
    use_hosts(iris, hosts_toml("cluster", cluster.address, cluster.root / "hostdir"))
    status = cli("status", "--json").json()
    workers = status["hosts"]["cluster"]["cluster"]["workers"]
    assert sorted(worker["name"] for worker in workers) == ["w1", "w2"]
    assert all(worker["threads"] == 1 and worker["tasks"] == 0 for worker in workers)
    table = cli("status")
    assert "cluster workers" in table.stdout and "w1 tcp://127.0.0.1:" in table.stdout


def test_host_add_dask_writes_the_host(iris, cli):
    added = cli("host", "add", "lab", "--dask", "tcp://10.0.0.5:8786", "--slots", "8", "--json")
    assert added.exit_code == 0, added.stderr
    text = iris.hosts_file.read_text()
    assert '[hosts.lab]\nexecutor = "dask"\nscheduler = "tcp://10.0.0.5:8786"\nslots = 8\n' in text
    bad = cli("host", "add", "lab2", "--dask", "10.0.0.5:8786")
    assert bad.exit_code == 2
    assert bad.stderr.strip() == ("error: host add lab2: --dask must be a scheduler address, tcp://HOST:PORT "
                                  "or tls://HOST:PORT, got '10.0.0.5:8786'")
    setup = cli("host", "setup", "lab")
    assert setup.exit_code == 1
    assert setup.stderr.strip().splitlines()[-1] == (
        "error: host lab is a dask host: datarun makes no environment on its workers; install the "
        "problems' requirements in the workers' Python environment")
    neither = cli("host", "add", "lab3")
    assert neither.exit_code == 2
    assert neither.stderr.strip() == ("error: host add lab3: give --address (an SSH host) or --dask (a Dask "
                                      "scheduler), one of them")


def make_certificates(folder):
    """A CA, scheduler/worker/client certificates it signed, and a rogue CA's client pair."""
    import subprocess

    folder.mkdir()

    def run(*args):
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    for ca in ("ca", "rogue-ca"):
        run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", f"{ca}.key", "-out", f"{ca}.pem",
            "-days", "30", "-subj", f"/CN=datarun-test-{ca}", "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    (folder / "leaf.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n"
                                     "extendedKeyUsage=serverAuth,clientAuth\n")
    for role, ca in (("scheduler", "ca"), ("worker", "ca"), ("client", "ca"), ("rogue", "rogue-ca")):
        run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", f"{role}.key", "-out", f"{role}.csr",
            "-subj", f"/CN=dask-{role}")
        run("x509", "-req", "-in", f"{role}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
            "-CAcreateserial", "-out", f"{role}.pem", "-days", "30", "-extfile", "leaf.ext")
    return {"ca": folder / "ca.pem", **{f"{role}_cert": folder / f"{role}.pem" for role in
                                        ("scheduler", "worker", "client", "rogue")},
            **{f"{role}_key": folder / f"{role}.key" for role in ("scheduler", "worker", "client", "rogue")}}


def tls_extra(certs, role: str) -> str:
    return (f'tls_ca = "{certs["ca"]}"\ntls_cert = "{certs[role + "_cert"]}"\n'
            f'tls_key = "{certs[role + "_key"]}"\n')


def first_report(result):
    report = result.json()
    report = report[0] if isinstance(report, list) else report
    return report.get("hosts", [report])[0] if "hosts" in report else report


def test_tls_scheduler_takes_the_right_certificate_and_refuses_another(iris, cli, tmp_path, cluster):
    certs = make_certificates(tmp_path / "certs")
    secure = DaskCluster(tmp_path / "tls", workers=1, tls=certs)
    try:
        assert secure.address.startswith("tls://127.0.0.1:")
        hostdir = tmp_path / "hostdir"
        use_hosts(iris, hosts_toml("secure", secure.address, hostdir, extra=tls_extra(certs, "client")))
        good = first_report(cli("host", "check", "secure", "--json"))
        assert good["ok"] is True and len(good["workers"]) == 1, good["problems"]
        # A client whose certificate another CA signed is refused, in one line.
        use_hosts(iris, hosts_toml("secure", secure.address, hostdir, extra=tls_extra(certs, "rogue")))
        rogue = first_report(cli("host", "check", "secure", "--json"))
        assert rogue["ok"] is False and len(rogue["problems"]) == 1
        assert rogue["problems"][0].startswith(
            f"host secure: cannot reach the Dask scheduler at {secure.address}: ")
        assert "\n" not in rogue["problems"][0]
        # No certificate at all: said before anything is sent.
        use_hosts(iris, hosts_toml("secure", secure.address, hostdir))
        bare = first_report(cli("host", "check", "secure", "--json"))
        assert bare["problems"] == [f"host secure: scheduler {secure.address} speaks TLS: give tls_ca, "
                                    "tls_cert and tls_key in hosts.toml"]
        # Negative control: the same certificate-less client is taken by a scheduler without TLS.
        use_hosts(iris, hosts_toml("plain", cluster.address, hostdir))
        assert first_report(cli("host", "check", "plain", "--json"))["ok"] is True
    finally:
        secure.stop()


def test_a_dispatcher_that_dies_leaves_its_tasks_running_and_the_next_collects_them(iris, cli, cluster, tmp_path):
    import signal

    use_hosts(iris, hosts_toml("cluster", cluster.address, cluster.root / "hostdir"))
    sub = cli("submit", "iris", sleeper(tmp_path, 2), "--team", "ada", "--json").json()["id"]
    with cluster.client() as client:
        before = set(client.list_datasets())
        first = Training()
        busy_worker(cluster, "w1")
        # Killed once both tasks' names are on the scheduler: one killed within a round trip
        # of a launch may not have published them, and that task runs again (README).
        wait_for(lambda: len(set(client.list_datasets()) - before) == 2, timeout=60,
                 what="both tasks' names on the scheduler")
        first.process.send_signal(signal.SIGKILL)
    first.process.communicate(timeout=30)
    result = cli("train", "--json")
    assert result.exit_code == 0, result.stderr
    shown = cli("submission", "show", str(sub), "--json").json()
    assert all(task["state"] == "done" for task in shown["tasks"])
    # The tasks the dead dispatcher had sent ran on and were collected: none was run twice.
    assert [task["attempt"] for task in shown["tasks"]] == [1] * 2


def test_a_scheduler_killed_mid_train_its_tasks_are_requeued_and_finish_once_it_is_back(
        iris, cli, cluster, tmp_path):
    import signal

    use_hosts(iris, hosts_toml("cluster", cluster.address, cluster.root / "hostdir"))
    sub = cli("submit", "iris", sleeper(tmp_path, 4), "--team", "ada", "--json").json()["id"]
    training = Training()
    busy_worker(cluster, None)
    port = int(cluster.address.rsplit(":", 1)[1])
    try:
        cluster.scheduler.send_signal(signal.SIGKILL)
        cluster.scheduler.wait(10)
        for worker in cluster.workers.values():  # a Dask worker exits with its scheduler
            worker.wait(60)
        # With its only host down, this train stops (or waits); its tasks went back to the queue.
        code, summary, err = training.join(180)
    finally:
        cluster.start_scheduler(port)
        for name in ("w1", "w2"):
            cluster.start_worker(name)
        cluster.wait_for_workers(2)
    assert summary is not None and summary["done"] == 0, err
    result = cli("train", "--json")
    assert result.exit_code == 0, result.stderr
    shown = cli("submission", "show", str(sub), "--json").json()
    assert all(task["state"] == "done" and task["scores"] for task in shown["tasks"])
    from datarun.store.db import open_db

    rows = open_db(iris).conn.execute("SELECT attempt, lost FROM tasks WHERE submission = ?", [sub]).fetchall()
    # The tasks the scheduler held were lost with it, each loss counted once (a launch whose
    # sync failed while the scheduler was down goes back unclaimed: a new attempt, no loss).
    assert max(attempt for attempt, _ in rows) >= 2 and sum(lost for _, lost in rows) >= 1, rows
    assert all(lost <= 1 and lost <= attempt - 1 for attempt, lost in rows), rows
