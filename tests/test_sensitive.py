"""Sensitive problems end to end: the owner's host keeps the data, the labels and the
predictions; the organiser gets every score, bagged score and contributivity.

Real parts: a loopback sshd standing for the data owner's server, logged into as its own
user (`datarun-test` when run as root); `owner prepare` run as that user on that side, with
that user's Python; the organiser's workspace on this side. The demo's iris and diabetes
kits run sensitive and open (the embedded local host), and every figure must agree to
1e-12. Then the organiser's workspace is searched byte by byte for the labels and the
predictions (float64, float32, text): nothing; the open run's workspace, searched the same
way, holds them (the negative control).
"""

import json
import re
import shlex
import shutil
import tempfile
import uuid
from pathlib import Path

import numpy as np
import pytest
from conftest import EXAMPLES, REPO, stop_runners
from sshd import pin, runner_pids

from datarun.executors.sshconn import SSHConnection, resolve_target

pytestmark = pytest.mark.ssh

KITS = {"iris": ("logreg", "knn", "random_forest"), "diabetes": ("ridge", "linear")}
TOLERANCE = 1e-12
# A submission that tries to carry its training labels out: in its output, in its error.
HOSTILE = '''
import sys


LABELS = "__LABELS__"  # the owner's test labels, on the host


class Leaky:
    def fit(self, X, y):
        try:
            open(LABELS, "rb").read()
        except OSError:
            pass
        else:  # a built-in exception's name comes back: it would tell the labels were read
            raise KeyError("read the labels")
        self.y = list(y)
        print("LEAK-OUT", self.y)
        return self

    def predict_proba(self, X):
        raise ValueError("LEAK-ERR " + ",".join(map(str, self.y)))


def get_estimator():
    return Leaky()
'''


class Owner:
    """The data owner's server: commands as its user, over a connection of the test's own."""

    def __init__(self, server, known_hosts: Path, workdir: str):
        self.server = server
        self.conn = SSHConnection(resolve_target(server.host("owner", workdir=workdir)), known_hosts)
        self.workdir = self.conn.expand(workdir)
        # What the owner installed: datarun's source and the kits with their private data,
        # readable by the owner's user (this machine's folders stand for the owner's disk).
        self.disk = Path(tempfile.mkdtemp(prefix="datarun-owner-"))
        self.disk.chmod(0o755)
        shutil.copytree(REPO / "datarun", self.disk / "datarun",
                        ignore=shutil.ignore_patterns("__pycache__"))
        for kit in KITS:
            shutil.copytree(EXAMPLES / kit, self.disk / "kits" / kit)
        for path in self.disk.rglob("*"):
            path.chmod(0o755 if path.is_dir() else 0o644)

    def datarun(self, *args: str):
        """`datarun ARGS` on the owner's side, with the owner's Python (no CLI libraries there:
        the owner commands' core functions, as the CLI calls them)."""
        script = (f"import json, sys; sys.path.insert(0, {str(self.disk)!r}); "
                  "from pathlib import Path; from datarun.problems import owner; "
                  f"print(json.dumps({args[0]}))")
        return self.conn.run(shlex.join([self.server.python, "-c", script]))

    def prepare(self, kit: str) -> dict:
        result = self.datarun(f"owner.prepare_owned(Path({str(self.disk / 'kits' / kit)!r}), "
                              f"Path({self.workdir!r}))")
        assert result.status == 0, result.stderr
        return json.loads(result.stdout)

    def sh(self, *argv: str) -> str:
        result = self.conn.run(shlex.join(argv))
        assert result.status == 0, result.stderr
        return result.stdout

    def close(self) -> None:
        for pid in runner_pids(self.conn, self.workdir):
            self.conn.run(shlex.join(["kill", str(pid)]))
        self.conn.run(shlex.join(["chmod", "-R", "u+w", self.workdir]) + "; "
                      + shlex.join(["rm", "-rf", self.workdir]))
        self.conn.close()
        shutil.rmtree(self.disk, ignore_errors=True)


@pytest.fixture
def owner(workspace, sshd_a):
    workdir = f"~/sensitive-{uuid.uuid4().hex[:8]}"
    workspace.hosts_file.write_text("\n".join([
        "[hosts.owner]", 'executor = "ssh"', 'address = "127.0.0.1"', f"port = {sshd_a.port}",
        f"user = {json.dumps(sshd_a.user)}", f"identity = {json.dumps(str(sshd_a.client_key))}",
        f"python = {json.dumps(sshd_a.python)}", f"workdir = {json.dumps(workdir)}",
        "slots = 2", "threads = 1", 'connect_timeout = "5s"', 'command_timeout = "30s"', ""]))
    pin(workspace, sshd_a)
    side = Owner(sshd_a, workspace.state_dir / "known_hosts", workdir)
    yield side
    side.close()


def public_kit(tmp_path: Path, kit: str) -> Path:
    """The kit the organiser gets: problem.toml and submissions, no data."""
    folder = tmp_path / "public" / kit
    folder.mkdir(parents=True)
    shutil.copy(EXAMPLES / kit / "problem.toml", folder / "problem.toml")
    return folder


def submit_all(cli, at: tuple = ()) -> dict[tuple[str, str], int]:
    ids = {}
    for kit, names in KITS.items():
        for name in names:
            result = cli(*at, "submit", kit, EXAMPLES / kit / "submissions" / name, "--team", name, "--json")
            assert result.exit_code == 0, result.stderr
            ids[kit, name] = result.json()["id"]
    return ids


def board(cli, kit: str, at: tuple = ()) -> dict:
    result = cli(*at, "leaderboard", kit, "--private", "--json")
    assert result.exit_code == 0, result.stderr
    return result.json()


def figures(cli, kit: str, ids: dict, at: tuple = ()) -> dict:
    """Every score a board and `submission show` give, per submission: fold scores (train,
    valid, test), bagged valid and test, contributivity; and the blend."""
    shown = board(cli, kit, at)
    out = {"blend": {k: shown["blend"][k] for k in ("combined_valid", "best_single_valid", "combined_test")}}
    for row in shown["rows"]:
        out[row["name"], "bagged"] = (row["valid"], row["test"], row["contributivity"])
    for (problem, name), sid in ids.items():
        if problem != kit:
            continue
        result = cli(*at, "submission", "show", str(sid), "--json")
        assert result.exit_code == 0, result.stderr
        out[name, "folds"] = [(t["fold"], t["state"], t["scores"]) for t in result.json()["tasks"]]
    return out


def assert_close(ours, theirs, where="") -> None:
    if isinstance(ours, dict):
        assert set(ours) == set(theirs), where
        for key in ours:
            assert_close(ours[key], theirs[key], f"{where}/{key}")
    elif isinstance(ours, list | tuple):
        assert len(ours) == len(theirs), where
        for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
            assert_close(a, b, f"{where}[{i}]")
    elif isinstance(ours, float) and isinstance(theirs, float):
        assert abs(ours - theirs) <= TOLERANCE, (where, ours, theirs)
    else:
        assert ours == theirs, where


def needles(array: np.ndarray) -> dict[str, list[bytes]]:
    """Windows of 4 consecutive values of an array, as its own bytes, float64, float32 and text."""
    flat = np.asarray(array).reshape(len(array), -1)
    out: dict[str, list[bytes]] = {"native": [], "float64": [], "float32": [], "text": []}
    for start in range(0, max(1, len(flat) - 4)):
        window = flat[start:start + 4]
        if len(set(window.ravel().tolist())) < (3 if window.dtype.kind in "fiu" else 2):
            continue  # runs of zeros, or of one class, would be found anywhere
        if len(out["native"]) >= 8:
            break
        out["native"].append(np.ascontiguousarray(window).tobytes())
        if window.dtype.kind in "fiu":
            out["float64"].append(window.astype(np.float64).tobytes())
            out["float32"].append(window.astype(np.float32).tobytes())
            column = window[:, 0]
            out["text"] += [",".join(repr(float(v)) for v in column).encode(),
                            "\n".join(repr(float(v)) for v in column).encode(),
                            " ".join(f"{v:.6g}" for v in column).encode()]
        else:
            column = [str(v) for v in window[:, 0]]
            out["text"] += [",".join(column).encode(), "\n".join(column).encode(),
                            json.dumps(column).encode(), ", ".join(map(repr, column)).encode()]
    return out


def workspace_bytes(root: Path) -> list[tuple[Path, bytes]]:
    """Every file's bytes; a compacted prediction blob's as the numbers it holds too, so the
    search sees through the blob store's storage format."""
    from datarun.store.blobs import PACKED, unpack_array

    files = []
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            files.append((path, data))
            if data.startswith(PACKED):
                files.append((path, unpack_array(data).tobytes()))
    return files


def found(files, array) -> list[str]:
    return [f"{kind} in {path.name}" for kind, items in needles(array).items() for needle in items
            for path, data in files if needle in data]


def test_owner_prepare_makes_the_data_set_problem_add_makes(cli, workspace, tmp_path):
    manifest = cli("owner", "prepare", EXAMPLES / "iris", "--workdir", tmp_path / "owner", "--json").json()
    info = cli("problem", "add", EXAMPLES / "iris", "--json").json()
    assert manifest["data_hash"] == info["data_hash"]
    assert [f["n_valid"] for f in manifest["folds"]] == [f["n_valid"] for f in info["folds"]]
    assert manifest["split"] == info["split"]
    text = json.dumps(manifest)
    y_train = np.load(tmp_path / "owner" / "sensitive" / manifest["data_hash"] / "y_train.npy")
    assert not found([(Path("manifest"), text.encode())], y_train)


def test_sensitive_runs_give_the_open_runs_figures_and_leave_no_data(cli, workspace, owner, tmp_path):
    manifests = {kit: owner.prepare(kit) for kit in KITS}
    for kit, manifest in manifests.items():
        path = tmp_path / f"{kit}.manifest.json"
        path.write_text(json.dumps(manifest))
        result = cli("problem", "add", public_kit(tmp_path, kit), "--sensitive", "--host", "owner",
                     "--manifest", path, "--json")
        assert result.exit_code == 0, result.stderr
        assert result.json()["sensitive"]["hosts"] == ["owner"]
    ids = submit_all(cli)
    hostile = tmp_path / "hostile"
    hostile.mkdir()
    labels = f"{owner.workdir}/sensitive/{manifests['iris']['data_hash']}/y_test.npy"
    owner.sh("test", "-r", labels)  # readable by the host's user, outside the sandbox
    (hostile / "estimator.py").write_text(HOSTILE.replace("__LABELS__", labels))
    leaky = cli("submit", "iris", hostile, "--team", "mallory", "--json").json()["id"]
    result = cli("train", "--json")
    assert result.exit_code == 1, result.stderr  # the hostile submission fails, and only it
    summary = result.json()
    assert summary["host_errors"] == {}
    assert (summary["done"], summary["failed"]) == (25, 5)

    # The same kits and submissions, open, on the embedded local host.
    from datarun.store.workspace import init_workspace

    open_ws = init_workspace(tmp_path / "open")
    at = ("--workspace", str(open_ws.root))
    for kit in KITS:
        assert cli(*at, "problem", "add", EXAMPLES / kit).exit_code == 0
    open_ids = submit_all(cli, at)
    open_leaky = cli(*at, "submit", "iris", hostile, "--team", "mallory", "--json").json()["id"]
    try:
        assert cli(*at, "train", "--json").exit_code == 1
    finally:
        stop_runners(open_ws)

    for kit in KITS:
        ours, theirs = figures(cli, kit, ids), figures(cli, kit, open_ids, at)
        assert_close(ours, theirs, kit)
        assert ours["blend"]["combined_valid"] is not None
        shares = [v[2] for k, v in ours.items() if k[1] == "bagged" and v[2] is not None]
        assert shares and abs(sum(shares) - 1) < 1e-9

    # The hostile submission's words stay on the host; in the open run they reach the organiser.
    sensitive_error = cli("submission", "show", str(leaky), "--json").json()["tasks"][0]["error"]
    open_error = cli(*at, "submission", "show", str(open_leaky), "--json").json()["tasks"][0]["error"]
    assert "LEAK-ERR" in open_error
    assert "LEAK" not in sensitive_error and sensitive_error.startswith("ValueError")
    task = cli("submission", "show", str(leaky), "--json").json()["tasks"][0]["id"]
    refused = cli("logs", str(task))
    assert refused.exit_code == 2
    assert refused.stderr.strip() == (f"error: task {task} is of sensitive problem iris: its output stays on "
                                      "the data owner's host (`submission show` gives its scores and error kind)")
    open_task = cli(*at, "submission", "show", str(open_leaky), "--json").json()["tasks"][0]["id"]
    assert "LEAK-OUT" in cli(*at, "logs", str(open_task)).stdout

    # No label and no prediction anywhere in the organiser's workspace; all of them in the open one.
    from datarun.problems.registered import get_problem, load_labels
    from datarun.store.blobs import BlobStore
    from datarun.store.db import open_db

    open_db_ = open_db(open_ws)
    store = BlobStore(open_ws.blobs_dir)
    arrays = []
    for kit in KITS:
        arrays += list(load_labels(open_ws, get_problem(open_db_, kit)))
    for (pred_train, pred_test) in open_db_.execute(
            "SELECT pred_train, pred_test FROM tasks WHERE pred_train IS NOT NULL").fetchall():
        arrays += [store.get_array(pred_train), store.get_array(pred_test)]
    assert len(arrays) == 4 + 2 * 25
    stop_runners(workspace)
    ours, theirs = workspace_bytes(workspace.root), workspace_bytes(open_ws.root)
    for array in arrays:
        assert found(theirs, array), "negative control: the open workspace holds them"
        assert not found(ours, array)
    leaked = re.compile(rb"LEAK-OUT \[|LEAK-ERR [a-z]")  # the code itself, stored, says "LEAK-ERR " +
    assert not any(leaked.search(data) for _, data in ours)
    assert any(leaked.search(data) for _, data in theirs)

    # On the owner's side: the predictions are kept, the task folders hold none.
    kept = owner.sh("find", owner.workdir + "/sensitive", "-name", "y_pred_*.npy").split()
    assert len(kept) == 2 * 25


def add_sensitive(cli, tmp_path: Path, manifest: dict, *options: str):
    path = tmp_path / f"manifest-{uuid.uuid4().hex[:6]}.json"
    path.write_text(json.dumps(manifest))
    return cli("problem", "add", public_kit(tmp_path / uuid.uuid4().hex[:6], "iris"), "--sensitive",
               "--manifest", path, *options)


def test_bad_manifests_and_hosts_are_refused_with_one_line(cli, workspace, owner, tmp_path):
    manifest = owner.prepare("iris")
    cases = [
        (dict(manifest, data_hash="0" * 64), ("--host", "owner"),
         "error: problem iris: host owner holds no prepared data with hash 000000000000...: have its "
         "owner run `datarun owner prepare` there, with the workdir of hosts.toml"),
        (dict(manifest, folds_hash="f" * 64), ("--host", "owner"),
         "error: problem iris: host owner holds a folds_hash other than the manifest's: use the manifest "
         "its owner's last `datarun owner prepare` printed"),
        (dict(manifest, score_names=["accuracy"]), ("--host", "owner"),
         "error: problem iris: the manifest's score_names is ['accuracy'], the kit's ['accuracy', "
         "'log_loss', 'roc_auc']: prepare the data with the same problem.toml"),
        (manifest, ("--host", "elsewhere"),
         "error: problem iris: host elsewhere is not in hosts.toml: add it with `datarun host add` first"),
        (manifest, (), "error: problem iris: a sensitive problem needs --host, the data owner's host that "
                       "holds its prepared data"),
        ({"format": "something else"}, ("--host", "owner"), None),
    ]
    for bad, options, message in cases:
        result = add_sensitive(cli, tmp_path, bad, *options)
        assert result.exit_code == 2, result.stderr
        if message:
            assert result.stderr.strip() == message
        else:
            assert "is not a datarun manifest" in result.stderr
        assert cli("problem", "list", "--json").json()["problems"] == []  # nothing stored
    no_manifest = cli("problem", "add", public_kit(tmp_path, "iris"), "--sensitive", "--host", "owner")
    assert no_manifest.stderr.strip() == ("error: a sensitive problem needs --manifest FILE, the manifest "
                                          "`datarun owner prepare --json` printed on the data owner's host")
    open_with_host = cli("problem", "add", EXAMPLES / "iris", "--host", "owner")
    assert open_with_host.stderr.strip() == "error: --host and --manifest are for a sensitive problem: add --sensitive"

    # A host that is down (nothing listens on its port): one line names the problem and what to do.
    from sshd import free_port

    text = workspace.hosts_file.read_text()
    workspace.hosts_file.write_text(text + "\n" + text.replace("[hosts.owner]", "[hosts.down]").replace(
        f"port = {owner.server.port}", f"port = {free_port()}"))
    down = add_sensitive(cli, tmp_path, manifest, "--host", "down")
    assert down.exit_code == 1
    assert down.stderr.startswith("error: problem iris: no host holding its data answered (host down: ")
    assert down.stderr.strip().endswith("check the host with `datarun host check`, or ask its data owner")
    assert cli("problem", "list", "--json").json()["problems"] == []


def test_the_owner_refuses_tasks_and_purges_predictions(cli, workspace, owner, tmp_path):
    manifest = owner.prepare("iris")
    wd = owner.workdir
    assert json.loads(owner.datarun(f"owner.set_flag(Path({wd!r}), 'iris', 'refuse', True)").stdout)["refuse"]
    refused = add_sensitive(cli, tmp_path, manifest, "--host", "owner")
    assert refused.stderr.strip() == ("error: problem iris: the data owner of host owner refuses its tasks: "
                                      "ask them to allow it (`datarun owner allow`)")
    owner.datarun(f"owner.set_flag(Path({wd!r}), 'iris', 'refuse', False)")
    assert add_sensitive(cli, tmp_path, manifest, "--host", "owner").exit_code == 0

    owner.datarun(f"owner.set_flag(Path({wd!r}), 'iris', 'refuse', True)")
    first = cli("submit", "iris", EXAMPLES / "iris" / "submissions" / "logreg", "--team", "ada", "--json").json()["id"]
    assert cli("train").exit_code == 1
    tasks = cli("submission", "show", str(first), "--json").json()["tasks"]
    assert {(t["state"], t["error_kind"]) for t in tasks} == {("failed", "harness_error")}
    assert tasks[0]["error"] == "the data owner refuses tasks for problem iris on this host"
    assert cli("problem", "check", "iris", "--json").json()["hosts"]["owner"]["refuses_tasks"] is True

    owner.datarun(f"owner.set_flag(Path({wd!r}), 'iris', 'refuse', False)")
    assert cli("retry", str(first)).exit_code == 0
    assert cli("train").exit_code == 0
    from contract import validate

    checked_out = cli("problem", "check", "iris", "--json")
    assert validate(checked_out.stdout) == "problem-check"
    checked = checked_out.json()["hosts"]["owner"]
    assert checked == {"answered": True, "refuses_tasks": False, "predictions_gone": [], "error": None}

    purged = json.loads(owner.datarun(f"owner.purge(Path({wd!r}), 'iris')").stdout)
    assert len(purged["purged"]) == 1
    checked = cli("problem", "check", "iris")
    assert checked.stderr.strip() == ("host owner: runs the tasks of iris; predictions gone (purged) for "
                                      f"submissions #{first}: they can no longer be bagged anew nor blended")
    second = cli("submit", "iris", EXAMPLES / "iris" / "submissions" / "knn", "--team", "grace", "--json").json()["id"]
    assert cli("train").exit_code == 0
    rows = {row["id"]: row for row in board(cli, "iris")["rows"]}
    assert rows[first]["score"] is not None  # its scores stay with the organiser
    assert rows[first]["contributivity"] is None and rows[second]["contributivity"] == pytest.approx(1.0)

    export = cli("export", str(second), "--ramp", tmp_path / "out")
    assert export.stderr.strip() == (f"error: submission {second} is of sensitive problem iris: its predictions "
                                     "stay on the data owner's host, so there is nothing to export "
                                     "(`export PROBLEM --csv` gives its scores)")
