"""The attack suite: hostile submissions (tests/attacks/) run for real against the harness.

Each attack runs in three settings, each a real runner serving a WORKDIR under a folder
anyone may enter (so nothing but the sandbox stands between a task and the host):

- `root`: the runner is root (the local host as CI runs it), on the organiser's venv;
- `user`: the runner is the unprivileged `datarun-test` user (started with setpriv);
- `ssh`: the runner is started over SSH as `datarun-test` by a real sshd on loopback.

The shell that starts each runner holds MY_SECRET_TOKEN and SSH_AUTH_SOCK. Beside the
WORKDIR lie what a participant wants: a workspace's datarun.db and test labels, a kit's
test.csv, an SSH key in the runner's home, another team's finished task.

Every attack is run sandboxed (the default) and, as its negative control, with
`isolation = "none"`, where it succeeds; where a protection applies to both (the runner's
environment, the output cap, a cgroup's process cap as root), the test says so. After
the attacks a plain task still runs to the end on the same runner.
"""

import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import psutil
import pytest
from harness_helpers import (
    DATA_IRIS,
    LOGISTIC,
    alive_named,
    stop_runner,
    task_files,
    write_dataset,
)
from sshd import IS_ROOT, TEST_PYTHON, TEST_USER

from datarun.remote.common import make_read_only

REPO = Path(__file__).resolve().parent.parent
ATTACKS = Path(__file__).resolve().parent / "attacks"
TOKEN = "tok-5d1e0c2a9b"
SHM_KEY = 0x0DA7A5E7

pytestmark = pytest.mark.skipif(
    not IS_ROOT or not os.access(TEST_PYTHON, os.X_OK),
    reason="the attack suite runs runners as root and as the datarun-test user (made by "
    "scripts/setup-test-env.sh); CI runs as root")


@dataclass
class Setting:
    name: str
    base: Path
    workdir: Path
    harness: Path  # the folder holding datarun_remote/
    home: Path  # the runner's HOME
    uid: int
    gid: int
    python: str
    start_command: list = field(default_factory=list)
    runner: int = 0
    meta: dict = field(default_factory=dict)
    planted: dict = field(default_factory=dict)

    def own(self, *paths: Path) -> None:
        for top in paths:
            for path in [top, *top.rglob("*")] if top.is_dir() else [top]:
                os.chown(path, self.uid, self.gid, follow_symlinks=False)

    def start(self, workdir: Path) -> int:
        """Start a runner on WORKDIR as this setting does; its pid."""
        command = [str(part).replace("{workdir}", str(workdir)) for part in self.start_command]
        env = {"PATH": os.environ["PATH"], "HOME": str(self.home), "MY_SECRET_TOKEN": TOKEN,
               "SSH_AUTH_SOCK": "/tmp/agent-socket-of-the-organiser"}
        out = subprocess.run(command, cwd=self.harness, env=env, capture_output=True, text=True,
                             timeout=60, check=True).stdout
        return json.loads(out.strip().splitlines()[-1])["pid"]

    def ship(self, key: str, code: str, isolation: str = "sandbox", targets: dict | None = None,
             workdir: Path | None = None, **limits) -> None:
        workdir = workdir or self.workdir
        files = {"targets.json": json.dumps(targets or {})}
        members = task_files(key, code, self.meta, DATA_IRIS, limits={"wall_time": 60.0, **limits},
                             files=files)
        task = json.loads(members["task.json"])
        task["isolation"] = isolation
        members["task.json"] = json.dumps(task).encode()
        # Written as the runner's user, the marker last (as the local executor places a
        # bundle): the runner may take the task the moment its marker appears.
        folder = workdir / "tasks" / key
        for name, data in members.items():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_bytes(data)
        self.own(folder)
        marker = workdir / "inbox" / f".{key}"
        marker.touch()
        os.chown(marker, self.uid, self.gid)
        os.replace(marker, workdir / "inbox" / key)

    def results(self, keys: list[str], timeout: float = 90, workdir: Path | None = None) -> dict:
        workdir = workdir or self.workdir
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all((workdir / "tasks" / key / "result.json").exists() for key in keys):
                break
            time.sleep(0.05)
        found = {}
        for key in keys:
            folder = workdir / "tasks" / key
            assert (folder / "result.json").exists(), f"{self.name}: task {key} did not finish"
            found[key] = json.loads((folder / "result.json").read_text())
            log = folder / "output.log"
            found[key]["log"] = log.read_text() if log.exists() else ""
        return found

    def run(self, key: str, attack: str, isolation: str = "sandbox", **options) -> dict:
        self.ship(key, (ATTACKS / f"{attack}.py").read_text(), isolation, **options)
        return self.results([key])[key]

    def next_task_runs(self, key: str) -> None:
        self.ship(key, LOGISTIC)
        result = self.results([key])[key]
        assert result["state"] == "done", (self.name, result["error"])


def _make_setting(name: str, request) -> Setting:
    base = Path(tempfile.mkdtemp(prefix=f"datarun-attacks-{name}-", dir="/var/lib"))
    base.chmod(0o755)
    test_user = pwd.getpwnam(TEST_USER)
    if name == "root":
        uid, gid, python, home = 0, 0, sys.executable, base / "home"
    elif name == "user":
        uid, gid, python, home = test_user.pw_uid, test_user.pw_gid, TEST_PYTHON, base / "home"
    else:
        uid, gid, python, home = test_user.pw_uid, test_user.pw_gid, TEST_PYTHON, Path(test_user.pw_dir)
    harness = base / "harness"
    shutil.copytree(REPO / "datarun" / "remote", harness / "datarun_remote",
                    ignore=shutil.ignore_patterns("__pycache__"))
    target = harness / "datarun_remote" / "attack_target.py"
    target.write_text("# a harness file no task may rewrite\n")
    setting = Setting(name, base, base / "work", harness, home, uid, gid, python)
    setting.meta = write_dataset(setting.workdir, DATA_IRIS, "classification")
    fake = write_dataset(setting.workdir, "spare0001", "classification")
    assert fake
    make_read_only(setting.workdir / "data" / DATA_IRIS)
    make_read_only(setting.workdir / "data" / "spare0001")
    make_read_only(harness)
    # What a participant wants, readable by the runner's user.
    labels = base / "ws" / ".datarun" / "blobs" / "ab" / "cdef" / "y_test.npy"
    labels.parent.mkdir(parents=True)
    np.save(labels, np.array(["setosa", "virginica"] * 15), allow_pickle=False)
    (base / "ws" / ".datarun" / "datarun.db").write_bytes(b"SQLite format 3\x00 the organiser's")
    (base / "kit" / "data").mkdir(parents=True)
    (base / "kit" / "data" / "test.csv").write_text("sepal_length,species\n5.1,setosa\n")
    home.mkdir(exist_ok=True)
    ssh_dir = home / ".ssh"
    ssh_dir.mkdir(exist_ok=True)
    key = ssh_dir / "attack_id_ed25519"
    key.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nsecret\n")
    key.chmod(0o600)
    for path in (base / "ws", base / "kit"):
        for item in [path, *path.rglob("*")]:
            item.chmod(0o755 if item.is_dir() else 0o644)
    setting.planted = {"labels": labels, "db": base / "ws" / ".datarun" / "datarun.db",
                       "test_csv": base / "kit" / "data" / "test.csv", "ssh_key": key,
                       "harness_file": target,
                       "data_file": setting.workdir / "data" / "spare0001" / "X_train.csv"}
    if name != "root":
        setting.own(base / "work", base / "home" if name == "user" else ssh_dir, harness)
    serve = ["-m", "datarun_remote", "start", "{workdir}", "--slots", "2", "--threads", "1",
             "--idle", "600"]
    if name == "root":
        setting.start_command = [python, *serve]
    elif name == "user":
        setting.start_command = ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups",
                                 python, *serve]
    else:
        server = request.getfixturevalue("sshd_a")
        known = base / "known_hosts"
        known.write_text(server.known_hosts_line())
        import shlex

        remote = (f"cd {shlex.quote(str(harness))} && MY_SECRET_TOKEN={TOKEN} "
                  "SSH_AUTH_SOCK=/tmp/agent-socket-of-the-organiser "
                  + shlex.join([python, *serve]))
        setting.start_command = [
            "ssh", "-i", str(server.client_key), "-p", str(server.port), "-o", "BatchMode=yes",
            "-o", f"UserKnownHostsFile={known}", "-o", "StrictHostKeyChecking=yes",
            f"{server.user}@127.0.0.1", remote]
    setting.runner = setting.start(setting.workdir)
    return setting


@pytest.fixture(scope="module", params=["root", "user", "ssh"])
def setting(request):
    made = _make_setting(request.param, request)
    try:
        # "Another team's" finished task, beside which every attack runs.
        made.ship("other", LOGISTIC)
        assert made.results(["other"])["other"]["state"] == "done"
        yield made
    finally:
        stop_runner(made.runner)
        if request.param == "ssh":
            shutil.rmtree(made.home / ".ssh" / "attack_id_ed25519", ignore_errors=True)
            (made.home / ".ssh" / "attack_id_ed25519").unlink(missing_ok=True)
        for path in [made.base, *made.base.rglob("*")]:
            try:
                if path.is_dir() and not path.is_symlink():
                    path.chmod(0o755)
            except OSError:
                pass
        shutil.rmtree(made.base, ignore_errors=True)


def _refused(result: dict, path) -> bool:
    return f"refused {path}" in result["log"] and f"read {path}" not in result["log"]


# --- reading and writing the host ------------------------------------------------------

def test_files_outside_the_task_cannot_be_read(setting):
    other = setting.workdir / "tasks" / "other"
    targets = {
        "labels": setting.planted["labels"], "test_csv": setting.planted["test_csv"],
        "other_code": other / "submission" / "estimator.py", "other_result": other / "result.json",
        "database": setting.planted["db"], "ssh_key": setting.planted["ssh_key"],
        "data_labels": setting.workdir / "data" / DATA_IRIS / "y_train.npy",
    }
    keys = []
    for what, path in targets.items():
        for isolation in ("sandbox", "none"):
            key = f"read-{what}-{isolation}"
            setting.ship(key, (ATTACKS / "read_files.py").read_text(), isolation,
                         targets={"paths": [str(path)]})
            keys.append(key)
    found = setting.results(keys)
    for what, path in targets.items():
        boxed, open_ = found[f"read-{what}-sandbox"], found[f"read-{what}-none"]
        assert boxed["error_kind"] == "fit_error" and _refused(boxed, path), (what, boxed["log"])
        assert boxed["error"].splitlines()[-1].startswith("FileNotFoundError"), boxed["error"]
        assert open_["state"] == "done" and f"read {path}" in open_["log"], (what, open_["log"])
    setting.next_task_runs("after-read")


def test_the_harness_and_the_data_sets_cannot_be_rewritten(setting):
    paths = [setting.planted["harness_file"], setting.planted["data_file"]]
    before = [path.read_bytes() for path in paths]
    code = (ATTACKS / "write_files.py").read_text()
    for path in paths:
        setting.ship(f"write-{path.name}", code, targets={"paths": [str(path)]})
    found = setting.results([f"write-{path.name}" for path in paths])
    for path, content in zip(paths, before, strict=True):
        result = found[f"write-{path.name}"]
        assert result["error_kind"] == "fit_error" and f"refused {path}" in result["log"]
        assert path.read_bytes() == content
        assert path.stat().st_mode & 0o777 == 0o444  # read-only once shipped
    # Without the sandbox the host's user rewrites them (it owns them: read-only bits
    # stop nobody who may chmod).
    result = setting.run("write-open", "write_files", "none", targets={"paths": [str(p) for p in paths]})
    assert result["state"] == "done", result["error"]
    assert all(path.read_bytes().endswith(b"# rewritten by a submission\n") for path in paths)
    for path, content in zip(paths, before, strict=True):
        path.write_bytes(content)
        path.chmod(0o444)


def test_another_tasks_result_cannot_be_forged(setting):
    path = setting.workdir / "tasks" / "other" / "result.json"
    genuine = path.read_bytes()
    result = setting.run("forge", "forge", targets={"path": str(path), "key": "other"})
    assert result["error_kind"] == "fit_error" and "FileNotFoundError" in result["error"]
    assert path.read_bytes() == genuine
    result = setting.run("forge-open", "forge", "none", targets={"path": str(path), "key": "other"})
    assert result["state"] == "done" and json.loads(path.read_text())["forged"] is True
    path.write_bytes(genuine)


# --- secrets, network, neighbours -------------------------------------------------------

def test_the_secrets_of_the_shell_that_started_the_runner_reach_no_task(setting):
    runner_environ = f"/proc/{setting.runner}/environ"
    targets = {"runner": setting.runner, "token": TOKEN}
    setting.ship("secrets", (ATTACKS / "secrets.py").read_text(), targets=targets)
    setting.ship("secrets-open", (ATTACKS / "secrets.py").read_text(), "none", targets=targets)
    found = setting.results(["secrets", "secrets-open"])
    boxed, open_ = found["secrets"], found["secrets-open"]
    assert boxed["state"] == "done" and open_["state"] == "done"
    # The runner's environment is whitelisted when it starts, so even without the
    # sandbox no task finds them; unsandboxed it can read the runner's environ, though.
    for result in (boxed, open_):
        assert "found" not in result["log"], result["log"]
        assert "read /proc/self/environ" in result["log"]
    assert f"read {runner_environ}" in open_["log"]
    assert f"refused {runner_environ}" in boxed["log"]
    with open(runner_environ, "rb") as handle:  # and the secret was in the starting shell
        assert TOKEN.encode() not in handle.read()


def test_no_network_not_even_loopback(setting):
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    try:
        port = server.getsockname()[1]
        boxed = setting.run("connect", "connect", targets={"port": port})
        assert boxed["error_kind"] == "fit_error"
        assert "OSError: [Errno 101] Network is unreachable" in boxed["error"]
        with pytest.raises(TimeoutError):
            server.accept()
        open_ = setting.run("connect-open", "connect", "none", targets={"port": port})
        assert open_["state"] == "done" and "connected" in open_["log"]
        conn, _ = server.accept()
        conn.close()
    finally:
        server.close()


def test_a_task_cannot_see_signal_or_trace_another_task(setting):
    for isolation in ("sandbox", "none"):
        suffix = "" if isolation == "sandbox" else "-open"
        setting.ship(f"victim{suffix}", (ATTACKS / "victim.py").read_text(), isolation)
        setting.ship(f"neighbour{suffix}", (ATTACKS / "neighbour.py").read_text(), isolation)
        found = setting.results([f"victim{suffix}", f"neighbour{suffix}"])
        victim, neighbour = found[f"victim{suffix}"], found[f"neighbour{suffix}"]
        if isolation == "sandbox":
            assert "no victim in sight" in neighbour["log"], neighbour["log"]
            assert victim["state"] == "done", victim["error"]
        else:
            assert "killed" in neighbour["log"], neighbour["log"]
            assert victim["state"] == "failed" and "SIGKILL" in victim["error"]


def test_the_validation_labels_are_nowhere_in_the_tasks_memory(setting):
    y = np.load(setting.workdir / "data" / DATA_IRIS / "y_train.npy")
    n = setting.meta["n_train"]
    valid = y[n * 3 // 4:]  # task_files' validation rows: the last quarter
    pattern = valid.tobytes()
    half = len(pattern) // 2
    mask = 0x5A
    targets = {"mask": mask, "first": bytes(b ^ mask for b in pattern[:half]).hex(),
               "second": bytes(b ^ mask for b in pattern[half:]).hex()}
    setting.ship("labels", (ATTACKS / "labels_in_memory.py").read_text(), targets=targets)
    setting.ship("labels-open", (ATTACKS / "labels_in_memory.py").read_text(), "none",
                 targets=targets)
    found = setting.results(["labels", "labels-open"])
    boxed, open_ = found["labels"], found["labels-open"]
    assert boxed["state"] == "done", boxed["error"]
    assert "memory matches 0" in boxed["log"] and "object matches 0" in boxed["log"], boxed["log"]
    # Unsandboxed, nothing is scrubbed: the runner's copy of y_train is right there.
    assert open_["state"] == "done"
    assert "memory matches 0" not in open_["log"] and "object matches 0" not in open_["log"]


# --- limits and leftovers ---------------------------------------------------------------

def test_a_fork_bomb_is_contained_and_the_runner_goes_on(setting):
    boxed = setting.run("bomb", "fork_bomb", processes=40, wall_time=30.0)
    assert boxed["error_kind"] == "fit_error", boxed["error"]
    assert "BlockingIOError: [Errno 11] Resource temporarily unavailable" in boxed["error"]
    assert 0 < int(boxed["log"].split("forked ")[1].split()[0]) < 40
    open_ = setting.run("bomb-open", "fork_bomb", "none", processes=40, wall_time=30.0)
    forked = int(open_["log"].split("forked ")[1].split()[0])
    if setting.name == "root":  # the cgroup's pids.max caps it without the sandbox too
        assert open_["error_kind"] == "fit_error" and forked < 40
    else:
        assert open_["state"] == "done" and forked == 200
    setting.next_task_runs("after-bomb")


def test_filling_the_disk_stops_at_the_tasks_cap(setting):
    cap = 20 * 1024**2
    boxed = setting.run("fill", "fill_disk", disk=cap)
    assert boxed["error_kind"] == "fit_error"
    assert "OSError: [Errno 28] No space left on device" in boxed["error"], boxed["error"]
    assert int(boxed["log"].split("wrote ")[1].split()[0]) <= cap
    # Unsandboxed only a single file is capped (RLIMIT_FSIZE): many small ones go on.
    open_ = setting.run("fill-open", "fill_disk", "none", disk=cap)
    assert open_["state"] == "done" and int(open_["log"].split("wrote ")[1].split()[0]) > cap
    setting.next_task_runs("after-fill")


def test_flooding_the_output_is_capped(setting):
    # The output cap is the runner's, so it holds without the sandbox too.
    for isolation in ("sandbox", "none"):
        key = f"flood-{isolation}"
        result = setting.run(key, "flood", isolation)
        assert result["state"] == "done", result["error"]
        size = (setting.workdir / "tasks" / key / "output.log").stat().st_size
        assert size < 1.1 * 1024**2 and "bytes of output skipped" in result["log"]


def test_killing_the_parent_or_the_runner_fails(setting):
    boxed = setting.run("kill", "kill_parent", targets={"runner": setting.runner, "first": "runner"})
    # Its parent is outside its namespace: getppid() is 0, and kill(0, ...) reaches its own
    # session only, so it kills itself; the runner is not in sight.
    assert boxed["error_kind"] == "fit_error", boxed
    assert boxed["error"].startswith("the task process was killed by SIGKILL during train")
    assert psutil.pid_exists(setting.runner)
    setting.next_task_runs("after-kill")
    # Unsandboxed, on a runner of its own: the task kills it.
    workdir = setting.base / "work-kill"
    write_dataset(workdir, DATA_IRIS, "classification")
    setting.own(workdir)
    pid = setting.start(workdir)
    try:
        setting.ship("kill-open", (ATTACKS / "kill_parent.py").read_text(), "none",
                     targets={"runner": pid}, workdir=workdir)
        psutil.Process(pid).wait(30)
    finally:
        stop_runner(pid)
    assert not (workdir / "tasks" / "kill-open" / "result.json").exists()


def test_a_double_forked_setsid_grandchild_is_counted_and_dies_with_the_task(setting):
    name = f"dr-esc-{setting.name}"
    result = setting.run("escape", "escape", targets={"name": name, "spin": 2.0, "wait": 60.0})
    assert result["state"] == "done", result["error"]
    assert result["cpu_time"] >= 2.0, result  # the grandchild's CPU is the task's
    assert alive_named(name) == []
    # It dies even when the task ends first, and the CPU limit sees it while it spins.
    result = setting.run("escape-first", "escape", targets={"name": name, "spin": 30.0, "wait": 0.2})
    assert result["state"] == "done"
    assert alive_named(name) == []
    result = setting.run("escape-cpu", "escape", targets={"name": name, "spin": 30.0, "wait": 30.0},
                         cpu_time=2.0)
    assert result["error_kind"] == "cpu_limit" and result["cpu_time"] >= 2.0, result
    assert alive_named(name) == []


def _host_leftovers(mark: str) -> list[str]:
    found = [folder for folder in ("/tmp", "/dev/shm", "/run/lock", "/var/tmp")
             if os.path.exists(os.path.join(folder, mark))]
    with open("/proc/sysvipc/shm") as handle:
        if any(line.split()[0] == str(SHM_KEY) for line in handle.readlines()[1:]):
            found.append("shm")
    return found


def _remove_leftovers(mark: str) -> None:
    for folder in ("/tmp", "/dev/shm", "/run/lock", "/var/tmp"):
        try:
            os.unlink(os.path.join(folder, mark))
        except FileNotFoundError:
            pass
    subprocess.run(["ipcrm", "-M", str(SHM_KEY)], capture_output=True)


def test_shared_memory_and_scratch_files_die_with_the_task(setting):
    mark = f"dr-left-{setting.name}"
    targets = {"key": SHM_KEY, "mark": mark, "leave": True}
    _remove_leftovers(mark)
    try:
        first = setting.run("leave", "leftovers", targets=targets)
        assert first["state"] == "done" and "left file /tmp" in first["log"]
        second = setting.run("look", "leftovers", targets=dict(targets, leave=False))
        assert "saw" not in second["log"], second["log"]
        assert _host_leftovers(mark) == []
        # Unsandboxed, they stay on the host for the next task to find.
        setting.run("leave-open", "leftovers", "none", targets=targets)
        assert "shm" in _host_leftovers(mark) and "/tmp" in _host_leftovers(mark)
        second = setting.run("look-open", "leftovers", "none", targets=dict(targets, leave=False))
        assert "saw segment" in second["log"] and "saw file /tmp" in second["log"]
    finally:
        _remove_leftovers(mark)


NAMESPACE = """import os
from sklearn.linear_model import LogisticRegression

print("namespace", os.readlink("/proc/self/ns/pid"), flush=True)


def get_estimator():
    return LogisticRegression(max_iter=200)
"""


def test_processes_of_a_sandboxed_task_are_gone_by_pid_after_it(setting):
    """Nothing of a finished task is left in the runner's process tree: at most the
    sandbox made ahead for the next task (the runner's copy that made it, the process
    waiting in it for its task, its init), none in the finished task's PID namespace."""
    setting.ship("tree", NAMESPACE)
    result = setting.results(["tree"])["tree"]
    assert result["state"] == "done", result["error"]
    namespace = result["log"].split("namespace ", 1)[1].split()[0]
    children = psutil.Process(setting.runner).children(recursive=True)
    left = [p.pid for p in children if p.status() != psutil.STATUS_ZOMBIE]
    namespaces = {os.readlink(f"/proc/{pid}/ns/pid") for pid in left}
    assert namespace.startswith("pid:[") and namespace not in namespaces
    names = [psutil.Process(pid).name() for pid in left]
    assert len(left) <= 3 and names.count("sleep") <= 1, names


def test_an_unknown_isolation_is_refused(setting):
    setting.ship("odd", LOGISTIC, "chroot")
    result = setting.results(["odd"])["odd"]
    assert result["error_kind"] == "harness_error"
    assert result["error"] == "task.json isolation must be one of sandbox, none, got 'chroot'"


def test_a_task_runs_as_uid_0_of_its_own_namespace_and_as_its_seat_outside(setting):
    code = '''
import os
from sklearn.linear_model import LogisticRegression

class Who(LogisticRegression):
    def fit(self, X, y):
        print("uid", os.getuid(), "cwd", os.getcwd(), "pid", os.getpid(), "host", os.uname().nodename)
        print("root", sorted(os.listdir("/")))
        return super().fit(X, y)

def get_estimator():
    return Who(max_iter=500)
'''
    setting.ship("who", code)
    result = setting.results(["who"])["who"]
    assert result["state"] == "done", result["error"]
    assert "uid 0 cwd /task pid 2 host sandbox" in result["log"], result["log"]
    shown = result["log"].split("root ")[1].splitlines()[0]
    assert "'home'" not in shown and "'run'" not in shown and "'root'" not in shown or \
        setting.name == "root"  # a root venv lives under /root: only its folder is there
    assert result["measured_by"] == ("cgroup-v1" if setting.name == "root" else "procfs")
