"""Isolation mode in the harness, for real: a root runner, tasks as users of their own.

One runner (as root, on the host Python that task users may execute) serves the module.
Its WORKDIR sits under a world-readable folder, so nothing but the isolation keeps a task
out of it; every attack is also run without isolation, where it succeeds, so each check
can fail. The attacks: reading other tasks' files, the harness's files, the training
labels and the organiser's keys; connecting to a server on 127.0.0.1; forking without
end; filling the disk. Each fails and is recorded as the submission's error, while a
well-behaved task beside them runs to the end.
"""

import json
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import textwrap
from pathlib import Path

import numpy as np
import psutil
import pytest
from harness_helpers import (
    DATA_IRIS,
    LOGISTIC,
    make_archive,
    stop_runner,
    task_files,
    wait_finished,
    write_dataset,
)
from sshd import IS_ROOT, TEST_PYTHON, TEST_USER

from datarun.remote import ops
from datarun.remote.common import Layout
from datarun.remote.isolation import TASK_UID_BASE

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(
    not IS_ROOT or not os.access(TEST_PYTHON, os.X_OK),
    reason="isolation needs root and the host Python of scripts/setup-test-env.sh; CI runs as root")

WHOAMI = """
import os
from joblib import Parallel, delayed
from sklearn.linear_model import LogisticRegression

def uid(_):
    return os.getuid()

class Who(LogisticRegression):
    def fit(self, X, y):
        print("uid", os.getuid(), "gid", os.getgid(), "groups", os.getgroups(), "cwd", os.getcwd())
        print("workers", sorted(set(Parallel(n_jobs=2)(delayed(uid)(i) for i in range(4)))))
        return super().fit(X, y)

def get_estimator():
    return Who(max_iter=500)
"""

SNOOP = """
from sklearn.linear_model import LogisticRegression

PATHS = {paths!r}

class Snoop(LogisticRegression):
    def fit(self, X, y):
        last = None
        for path in PATHS:
            try:
                with open(path, "rb") as f:
                    f.read()
                print("read", path)
            except OSError as error:
                print("refused", path)
                last = error
        if last is not None:
            raise last
        return super().fit(X, y)

def get_estimator():
    return Snoop(max_iter=500)
"""

CONNECT = """
import socket
from sklearn.linear_model import LogisticRegression

class Caller(LogisticRegression):
    def fit(self, X, y):
        with socket.create_connection(("127.0.0.1", {port}), timeout=5) as conn:
            conn.sendall(b"labels please")
        return super().fit(X, y)

def get_estimator():
    return Caller(max_iter=500)
"""

FORK_BOMB = """
import os, time

class Bomb:
    def fit(self, X, y):
        children = 0
        try:
            while True:
                if os.fork() == 0:
                    time.sleep(60)
                    os._exit(0)
                children += 1
        finally:
            print("forked", children)

def get_estimator():
    return Bomb()
"""

FILL_DISK = """
import os

class Filler:
    def fit(self, X, y):
        block = b"x" * 1024**2
        written = 0
        try:
            for folder in {folders!r}:
                for n in range(1000):
                    with open(os.path.join(folder, f"fill-{{n}}"), "wb") as f:
                        f.write(block)
                    written += len(block)
        finally:
            print("wrote", written)

def get_estimator():
    return Filler()
"""

FILL_ONE_FILE = """
class Filler:
    def fit(self, X, y):
        block = b"x" * 1024**2
        written = 0
        try:
            with open("big", "wb") as f:
                for n in range(1000):
                    f.write(block)
                    f.flush()
                    written += len(block)
        finally:
            print("wrote", written)

def get_estimator():
    return Filler()
"""


@pytest.fixture(scope="module")
def world():
    """A WORKDIR under a folder every user may enter, an organiser's key, a live runner
    serving workspace `ws1` there (a second workspace, `ws2`, has a task waiting there)."""
    base = Path(tempfile.mkdtemp(prefix="datarun-isolation-", dir="/var/lib"))
    base.chmod(0o755)
    workdir = base / "work"
    meta = write_dataset(workdir, DATA_IRIS, "classification")
    for folder in (workdir, workdir / "data", workdir / "data" / DATA_IRIS):
        folder.chmod(0o755)
    keys = base / "organiser-ssh"
    keys.mkdir(mode=0o755)
    (keys / "id_ed25519").write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nsecret\n")
    (keys / "id_ed25519").chmod(0o600)
    runner = ops.start_runner(workdir, slots=2, threads=1, idle=60, python=TEST_PYTHON, space="ws1")
    yield {"base": base, "workdir": workdir, "meta": meta, "key": keys / "id_ed25519", "space": "ws1",
           "layout": Layout(workdir, "ws1")}
    stop_runner(runner["pid"])
    shutil.rmtree(base, ignore_errors=True)


def ship(world, key: str, code: str, isolation: str = "user", space: str | None = None, **limits) -> None:
    files = task_files(key, textwrap.dedent(code), world["meta"], DATA_IRIS, limits=limits)
    task = json.loads(files["task.json"])
    task["isolation"] = isolation
    files["task.json"] = json.dumps(task).encode()
    archive = make_archive(world["base"] / f"{key}.tar",
                           {f"tasks/{key}/{name}": data for name, data in files.items()})
    assert ops.accept(world["workdir"], archive, space=space or world.get("space"))["tasks"] == [key]


def results(world, keys: list[str], timeout: float = 60) -> dict[str, dict]:
    found = wait_finished(world["workdir"], keys, timeout, space=world.get("space"))
    for key in keys:
        log = Layout(world["workdir"], world.get("space")).task(key) / "output.log"
        found[key]["log"] = log.read_text() if log.exists() else ""
    return found


def test_an_isolated_task_runs_as_a_user_of_its_own_and_its_predictions_come_back(world):
    ship(world, "who", WHOAMI)
    result = results(world, ["who"])["who"]
    assert result["state"] == "done", result["error"]
    uid = TASK_UID_BASE  # the first free seat
    assert f"uid {uid} gid {uid} groups [] cwd /tmp" in result["log"]
    assert f"workers [{uid}]" in result["log"]  # joblib's workers are that user too
    folder = world["layout"].task("who")
    assert np.load(folder / "y_pred_test.npy").shape == (world["meta"]["n_test"], 3)
    assert not (world["layout"].jails / "who").exists()  # the jail goes with the task
    assert (world["workdir"].stat().st_mode & 0o777) == 0o700


def test_an_isolated_task_reads_no_other_task_no_harness_file_no_label_and_no_key(world):
    ship(world, "victim", LOGISTIC, isolation="none")
    ship(world, "theirs", LOGISTIC, isolation="none", space="ws2")  # another workspace's
    results(world, ["victim"])
    workdir, layout, other = world["workdir"], world["layout"], Layout(world["workdir"], "ws2")
    paths = [
        str(layout.task("victim") / "submission" / "estimator.py"),       # another submission
        str(other.task("theirs") / "submission" / "estimator.py"),        # another workspace's
        str(layout.runner_json), str(layout.runner_log),                  # the harness's files
        str(workdir / "data" / DATA_IRIS / "y_train.npy"),                # a label file
        str(world["key"]),                                                # the organiser's key
    ]
    for path in paths[:2]:
        for folder in Path(path).parents:
            if folder == workdir:
                break
            folder.chmod(0o755)
    snoop = SNOOP.format(paths=paths)
    ship(world, "snoop-open", snoop, isolation="none")
    ship(world, "snoop", snoop)
    ship(world, "bystander", LOGISTIC)
    found = results(world, ["snoop-open", "snoop", "bystander"])
    assert found["snoop-open"]["state"] == "done"  # without isolation, all of it is readable
    assert all(f"read {path}" in found["snoop-open"]["log"] for path in paths)
    snooped = found["snoop"]
    assert snooped["state"] == "failed" and snooped["error_kind"] == "fit_error"
    assert all(f"refused {path}" in snooped["log"] for path in paths), snooped["log"]
    assert "read " not in snooped["log"]
    assert snooped["error"].splitlines()[-1].startswith(("PermissionError", "FileNotFoundError"))
    assert found["bystander"]["state"] == "done"


def test_an_isolated_task_has_no_network_not_even_loopback(world):
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    port = server.getsockname()[1]
    try:
        ship(world, "call-open", CONNECT.format(port=port), isolation="none")
        ship(world, "call", CONNECT.format(port=port))
        found = results(world, ["call-open", "call"])
        assert found["call-open"]["state"] == "done"
        conn, _ = server.accept()  # the one connection: the task without isolation
        conn.close()
        with pytest.raises(TimeoutError):
            server.accept()
    finally:
        server.close()
    called = found["call"]
    assert called["error_kind"] == "fit_error"
    assert "OSError: [Errno 101] Network is unreachable" in called["error"]


def _alive_as(uid: int) -> list[int]:
    alive = []
    for proc in psutil.process_iter(["uids", "status"]):
        if proc.info["uids"] and proc.info["uids"].real == uid and proc.info["status"] != psutil.STATUS_ZOMBIE:
            alive.append(proc.pid)
    return alive


def test_a_fork_bomb_hits_the_process_cap_and_its_processes_die(world):
    ship(world, "bomb", FORK_BOMB, processes=40, wall_time=30.0)
    ship(world, "beside-bomb", LOGISTIC)
    found = results(world, ["bomb", "beside-bomb"])
    bomb = found["bomb"]
    assert bomb["error_kind"] == "fit_error"
    assert "BlockingIOError: [Errno 11] Resource temporarily unavailable" in bomb["error"]
    forked = int(bomb["log"].split("forked ")[1].split()[0])
    assert 0 < forked < 40
    assert found["beside-bomb"]["state"] == "done"
    for seat in range(2):
        assert _alive_as(TASK_UID_BASE + seat) == []


def test_filling_the_disk_stops_at_the_task_cap_in_every_scratch_folder(world):
    cap = 20 * 1024**2
    folders = {"fill-cwd": ".", "fill-var-tmp": "/var/tmp", "fill-dev-shm": "/dev/shm"}
    for key, folder in folders.items():
        ship(world, key, FILL_DISK.format(folders=[folder]), disk=cap)
    for key, result in results(world, list(folders)).items():
        assert result["error_kind"] == "fit_error", key
        assert "OSError: [Errno 28] No space left on device" in result["error"], result["error"]
        written = int(result["log"].split("wrote ")[1].split()[0])
        assert written <= cap
    assert not list(world["layout"].jails.iterdir())
    # Without isolation the disk limit still caps each file (RLIMIT_FSIZE).
    ship(world, "fill-open", FILL_ONE_FILE, isolation="none", disk=cap // 4)
    result = results(world, ["fill-open"])["fill-open"]
    assert "OSError: [Errno 27] File too large" in result["error"]
    assert int(result["log"].split("wrote ")[1].split()[0]) <= cap // 4


def test_an_unknown_isolation_mode_is_refused(world):
    ship(world, "odd", LOGISTIC, isolation="chroot")
    result = results(world, ["odd"])["odd"]
    assert result["error_kind"] == "harness_error"
    assert result["error"] == "task.json isolation must be one of none, user, got 'chroot'"


def test_isolation_without_root_fails_the_task_with_what_to_fix(tmp_path):
    base = Path(tempfile.mkdtemp(prefix="datarun-isolation-", dir="/var/lib"))
    try:
        base.chmod(0o755)
        workdir = base / "work"
        meta = write_dataset(workdir, DATA_IRIS, "classification")
        harness = base / "harness"
        shutil.copytree(REPO / "datarun" / "remote", harness / "datarun_remote",
                        ignore=shutil.ignore_patterns("__pycache__"))
        user = pwd.getpwnam(TEST_USER)
        world = {"base": base, "workdir": workdir, "meta": meta}
        ship(world, "as-user", LOGISTIC)  # as root, in root's folder; then it is given away
        for path in [base, *base.rglob("*")]:
            os.chown(path, user.pw_uid, user.pw_gid, follow_symlinks=False)
        subprocess.run(
            ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups",
             TEST_PYTHON, "-m", "datarun_remote", "serve", str(workdir), "--slots", "1",
             "--threads", "1", "--idle", "0.5"],
            cwd=harness, check=True, capture_output=True, timeout=60)
        result = json.loads((workdir / "tasks" / "as-user" / "result.json").read_text())
        assert result["error_kind"] == "harness_error"
        assert result["error"] == (
            f'isolation = "user" needs the harness to run as root on the host (it runs as uid '
            f'{user.pw_uid}): log in as root there, or set isolation = "none" in hosts.toml')
    finally:
        shutil.rmtree(base, ignore_errors=True)
