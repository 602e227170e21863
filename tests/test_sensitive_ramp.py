"""A RAMP kit as a sensitive problem: scored, bagged and blended with the kit's own code on
its owner's host, equal to the open run, and nothing of its data on the organiser's side.

Real parts, as tests/test_sensitive.py (whose helpers this reuses): a loopback sshd standing
for the data owner's server, logged into as its own user, with a Python that has
ramp-workflow; `owner prepare` of the RAMP kit run as that user there; the organiser's
workspace on this side; the same kit open on the embedded local host for the reference
figures and the negative controls.
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
from conftest import stop_runners
from sshd import pin
from test_ramp_hosts import python_with_rampwf
from test_sensitive import Owner, assert_close, figures, found, workspace_bytes

KITS = Path(__file__).resolve().parent / "ramp_kits"
KIT = "iris_classifier"
SUBMISSIONS = ("starting_kit", "knn", "float32")
# A Classifier submission that tries to read the owner's labels and to carry its training
# labels out, in its output and in its error (the RAMP twin of test_sensitive's HOSTILE).
HOSTILE = '''
from pathlib import Path

LABELS = "__LABELS__"  # the owner's test labels, on the host


class Classifier:
    def fit(self, X, y):
        try:
            Path(LABELS).read_bytes()  # ramp-workflow refuses the word o-p-e-n in a submission
        except OSError:
            pass
        else:  # a built-in exception's name comes back: it would tell the labels were read
            raise KeyError("read the labels")
        self.y = [str(v) for v in y]
        print("LEAK-OUT", self.y)
        return self

    def predict_proba(self, X):
        raise ValueError("LEAK-ERR " + ",".join(self.y))
'''


def public_kit(tmp_path: Path, kit: str = KIT) -> Path:
    """What the organiser gets of a RAMP kit: problem.py and the submissions, no data/."""
    folder = tmp_path / uuid.uuid4().hex[:6] / kit
    shutil.copytree(KITS / kit, folder, ignore=shutil.ignore_patterns("data", "__pycache__", "training_output"))
    return folder


class RampOwner(Owner):
    """The owner's server, its Python with ramp-workflow, the RAMP kit with its data on its disk."""

    def __init__(self, server, known_hosts: Path, workdir: str, python: str):
        super().__init__(server, known_hosts, workdir)
        self.python = python
        shutil.copytree(KITS / KIT, self.disk / "kits" / KIT,
                        ignore=shutil.ignore_patterns("__pycache__", "training_output"))
        for path in (self.disk / "kits").rglob("*"):
            path.chmod(0o755 if path.is_dir() else 0o644)

    def datarun(self, *args: str):
        script = (f"import json, sys; sys.path.insert(0, {str(self.disk)!r}); "
                  "from pathlib import Path; from datarun.problems import owner; "
                  f"print(json.dumps({args[0]}))")
        return self.conn.run(shlex.join([self.python, "-c", script]))

    def prepare_ramp(self) -> dict:
        result = self.datarun(f"owner.prepare_owned(Path({str(self.disk / 'kits' / KIT)!r}), "
                              f"Path({self.workdir!r}))")
        assert result.status == 0, result.stderr
        return json.loads(result.stdout)


def hosts_toml(sshd, workdir: str, python: str) -> str:
    table = sshd.host_table(workdir=workdir, python=python, command_timeout=30.0)
    return "[hosts.owner]\n" + "".join(f"{key} = {json.dumps(value)}\n" for key, value in table.items())


@pytest.fixture
def ramp_owner(workspace, sshd_a):
    wrapper = Path(tempfile.mkdtemp(prefix="datarun-rampwf-"))
    python = python_with_rampwf(wrapper, sshd_a.python)
    workdir = f"~/sensitive-ramp-{uuid.uuid4().hex[:8]}"
    workspace.hosts_file.write_text(hosts_toml(sshd_a, workdir, python))
    pin(workspace, sshd_a)
    side = RampOwner(sshd_a, workspace.state_dir / "known_hosts", workdir, python)
    yield side
    stop_runners(workspace)
    side.close()
    shutil.rmtree(wrapper, ignore_errors=True)


def add_sensitive(cli, tmp_path: Path, manifest: dict, *options):
    path = tmp_path / f"manifest-{uuid.uuid4().hex[:6]}.json"
    path.write_text(json.dumps(manifest))
    return cli("problem", "add", public_kit(tmp_path), "--sensitive", "--manifest", path, *options)


def submit_all(cli, at: tuple = ()) -> dict[tuple[str, str], int]:
    ids = {}
    for name in SUBMISSIONS:
        result = cli(*at, "submit", KIT, KITS / KIT / "submissions" / name, "--team", name, "--json")
        assert result.exit_code == 0, result.stderr
        ids[KIT, name] = result.json()["id"]
    return ids


def test_owner_prepare_reads_a_ramp_kit_as_problem_add_does(cli, workspace, tmp_path):
    manifest = cli("owner", "prepare", KITS / KIT, "--workdir", tmp_path / "owner", "--json").json()
    info = cli("problem", "add", KITS / KIT, "--json").json()
    assert manifest["data_hash"] == info["data_hash"]
    assert [(f["n_train"], f["n_valid"]) for f in manifest["folds"]] == [
        (f["n_train"], f["n_valid"]) for f in info["folds"]]
    assert manifest["split"] == info["split"]
    assert manifest["workflow"] == "ramp" and manifest["ramp"]["workflow"] == "Classifier"
    assert manifest["score_names"] == ["acc", "nll", "bal_acc"]
    kept = tmp_path / "owner" / "sensitive" / manifest["data_hash"]
    assert sorted(p.name for p in kept.iterdir()) == [
        "folds", "manifest.json", "y_test.npy", "y_test.pkl", "y_train.npy", "y_train.pkl"]
    # The labels are kept out of the data set a task is given (its y_test is nowhere there).
    data = tmp_path / "owner" / "data" / manifest["data_hash"]
    assert not (data / "y_test.pkl").exists()
    for labels in ("y_train.npy", "y_test.npy"):
        assert not found([(Path("manifest"), json.dumps(manifest).encode())], np.load(kept / labels))


def test_a_ramp_kit_whose_score_types_cannot_run_is_refused_at_prepare(cli, workspace, tmp_path):
    kit = tmp_path / "broken_scores"
    shutil.copytree(KITS / KIT, kit, ignore=shutil.ignore_patterns("__pycache__", "training_output"))
    problem = kit / "problem.py"
    problem.write_text(problem.read_text() + '''

class _Needs(rw.score_types.Accuracy):
    def __call__(self, y_true, y_pred):
        import a_library_not_installed_here  # noqa: F401


score_types = score_types + [_Needs(name='needs')]
''')
    result = cli("owner", "prepare", kit, "--workdir", tmp_path / "owner")
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        "error: problem.py: score type 'needs' cannot score the kit's own labels "
        "(ModuleNotFoundError: No module named 'a_library_not_installed_here'); the data owner's "
        "host scores every task with it: fix the score type, or install what it imports")
    assert not (tmp_path / "owner" / "sensitive").exists() or not any((tmp_path / "owner" / "sensitive").iterdir())


@pytest.mark.ssh
def test_sensitive_ramp_run_gives_the_open_runs_figures_and_leaves_no_data(cli, workspace, ramp_owner, tmp_path):
    owner = ramp_owner
    manifest = owner.prepare_ramp()
    result = add_sensitive(cli, tmp_path, manifest, "--host", "owner", "--json")
    assert result.exit_code == 0, result.stderr
    assert result.json()["sensitive"]["hosts"] == ["owner"]
    ids = submit_all(cli)
    hostile = tmp_path / "hostile"
    hostile.mkdir()
    labels = f"{owner.workdir}/sensitive/{manifest['data_hash']}/y_test.pkl"
    owner.sh("test", "-r", labels)  # readable by the host's user, outside the sandbox
    (hostile / "classifier.py").write_text(HOSTILE.replace("__LABELS__", labels))
    # Negative control: the same code, run on the host as its user but outside a task's sandbox,
    # reads the labels (and says so by raising KeyError).
    outside = owner.conn.run(shlex.join([owner.python, "-c", HOSTILE.replace("__LABELS__", labels)
                                         + "\nClassifier().fit(None, [])"]))
    assert outside.status != 0 and "KeyError: 'read the labels'" in outside.stderr
    leaky = cli("submit", KIT, hostile, "--team", "mallory", "--json").json()["id"]
    trained = cli("train", "--json")
    assert trained.exit_code == 1, trained.stderr  # the hostile submission fails, and only it
    summary = trained.json()
    assert summary["host_errors"] == {}
    n_folds = len(manifest["folds"])
    assert (summary["done"], summary["failed"]) == (len(SUBMISSIONS) * n_folds, n_folds)

    # The same kit and submissions, open, on the embedded local host.
    from datarun.store.workspace import init_workspace

    open_ws = init_workspace(tmp_path / "open")
    at = ("--workspace", str(open_ws.root))
    assert cli(*at, "problem", "add", KITS / KIT).exit_code == 0
    open_ids = submit_all(cli, at)
    open_leaky = cli(*at, "submit", KIT, hostile, "--team", "mallory", "--json").json()["id"]
    try:
        assert cli(*at, "train", "--json").exit_code == 1
    finally:
        stop_runners(open_ws)

    ours, theirs = figures(cli, KIT, ids), figures(cli, KIT, open_ids, at)
    assert_close(ours, theirs, KIT)
    assert ours["blend"]["combined_valid"] is not None and ours["blend"]["combined_test"] is not None
    shares = [v[2] for k, v in ours.items() if k[1] == "bagged" and v[2] is not None]
    assert shares and abs(sum(shares) - 1) < 1e-9
    assert all(v[0] is not None and v[1] is not None for k, v in ours.items() if k[1] == "bagged" and k[0] != "mallory")

    # The hostile submission's words stay on the host; in the open run they reach the organiser.
    sensitive_error = cli("submission", "show", str(leaky), "--json").json()["tasks"][0]["error"]
    open_error = cli(*at, "submission", "show", str(open_leaky), "--json").json()["tasks"][0]["error"]
    assert "LEAK-ERR" in open_error
    assert "LEAK" not in sensitive_error and sensitive_error.startswith("ValueError")
    open_task = cli(*at, "submission", "show", str(open_leaky), "--json").json()["tasks"][0]["id"]
    assert "LEAK-OUT" in cli(*at, "logs", str(open_task)).stdout

    # No label and no prediction anywhere in the organiser's workspace; all of them in the open one.
    from datarun.problems.registered import get_problem, load_labels
    from datarun.store.blobs import BlobStore
    from datarun.store.db import open_db

    open_db_ = open_db(open_ws)
    store = BlobStore(open_ws.blobs_dir)
    arrays = list(load_labels(open_ws, get_problem(open_db_, KIT)))
    for (pred_train, pred_test) in open_db_.execute(
            "SELECT pred_train, pred_test FROM tasks WHERE pred_train IS NOT NULL").fetchall():
        arrays += [store.get_array(pred_train), store.get_array(pred_test)]
    assert len(arrays) == 2 + 2 * len(SUBMISSIONS) * n_folds
    assert {a.dtype for a in arrays[2:]} == {np.dtype("float64"), np.dtype("float32")}
    stop_runners(workspace)
    mine, open_files = workspace_bytes(workspace.root), workspace_bytes(open_ws.root)
    for array in arrays:
        assert found(open_files, array), "negative control: the open workspace holds them"
        assert not found(mine, array)
    leaked = re.compile(rb"LEAK-OUT \[|LEAK-ERR [a-z]")  # the stored code itself says "LEAK-ERR " +
    assert not any(leaked.search(data) for _, data in mine)
    assert any(leaked.search(data) for _, data in open_files)

    # On the owner's side: the predictions are kept, the task folders hold none.
    kept = owner.sh("find", owner.workdir + "/sensitive", "-name", "y_pred_*.npy").split()
    assert len(kept) == 2 * len(SUBMISSIONS) * n_folds


@pytest.mark.ssh
def test_ramp_bad_input_folds_and_scoring_hosts_are_refused_in_one_line(cli, workspace, ramp_owner,
                                                                        sshd_a, tmp_path):
    owner = ramp_owner
    # The owner's kit draws its folds with a seed from a file of its data/ (not part of the
    # data set shipped to tasks): prepared again with another seed, the data set is the
    # same but its folds differ from the manifest the organiser holds.
    kit = owner.disk / "kits" / KIT
    (kit / "problem.py").write_text((kit / "problem.py").read_text().replace(
        "random_state=57", f"random_state=int(open({str(kit / 'data' / 'seed.txt')!r}).read())"))
    (kit / "data" / "seed.txt").write_text("57\n")
    for path in (kit / "problem.py", kit / "data" / "seed.txt"):
        path.chmod(0o644)
    manifest = owner.prepare_ramp()
    (kit / "data" / "seed.txt").write_text("58\n")
    again = owner.prepare_ramp()
    assert again["data_hash"] == manifest["data_hash"] and again["folds_hash"] != manifest["folds_hash"]
    stale = add_sensitive(cli, tmp_path, manifest, "--host", "owner")
    assert stale.exit_code == 2
    assert stale.stderr.strip() == (
        f"error: problem {KIT}: host owner holds a folds_hash other than the manifest's: use the manifest "
        "its owner's last `datarun owner prepare` printed")
    assert cli("problem", "list", "--json").json()["problems"] == []

    # A public kit that is not the owner's (another workflow) is refused before any host is asked.
    other = public_kit(tmp_path)
    (other / "problem.py").write_text((other / "problem.py").read_text().replace(
        "rw.workflows.Classifier()", "rw.workflows.Estimator()"))
    path = tmp_path / "again.json"
    path.write_text(json.dumps(again))
    mismatch = cli("problem", "add", other, "--sensitive", "--manifest", path, "--host", "owner")
    assert mismatch.exit_code == 2
    assert mismatch.stderr.strip() == (
        f"error: problem {KIT}: the manifest's RAMP workflow is 'Classifier', the kit's 'Estimator': "
        "prepare the data with the same problem.py")

    # The same host reached with a Python that has no ramp-workflow: the kit's score types
    # cannot run there, so its tasks could not be scored: refused, nothing stored.
    workspace.hosts_file.write_text(hosts_toml(sshd_a, owner.workdir, sshd_a.python))
    no_rampwf = owner.conn.run(f"{sshd_a.python} -c 'import rampwf'")
    if no_rampwf.status == 0:
        pytest.skip("the test host's own Python has ramp-workflow; this case needs one without")
    cannot = add_sensitive(cli, tmp_path, again, "--host", "owner")
    assert cannot.exit_code == 2
    assert cannot.stderr.strip() == (
        f"error: problem {KIT}: host owner cannot score its tasks: the RAMP kit of data set "
        f"{again['data_hash'][:12]} cannot score on this host (ModuleNotFoundError: No module named "
        "'rampwf'): install ramp-workflow and what the kit imports for the harness's Python")
    assert cli("problem", "list", "--json").json()["problems"] == []


def test_a_public_kit_of_the_other_kind_than_the_manifest_is_refused(cli, workspace, tmp_path):
    from conftest import EXAMPLES

    ramp = cli("owner", "prepare", KITS / KIT, "--workdir", tmp_path / "owner", "--json").json()
    native = cli("owner", "prepare", EXAMPLES / "iris", "--workdir", tmp_path / "owner", "--json").json()
    as_native = tmp_path / "native.json"
    as_native.write_text(json.dumps(native))
    as_ramp = tmp_path / "ramp.json"
    as_ramp.write_text(json.dumps(ramp))
    public = public_kit(tmp_path)
    wrong = cli("problem", "add", public, "--sensitive", "--manifest", as_native, "--host", "owner")
    assert wrong.exit_code == 2
    assert wrong.stderr.strip() == (
        f"error: problem iris: {public} is a RAMP kit but the manifest is of a native one (problem.toml): "
        "register the kit the owner prepared")
    native_kit = tmp_path / "public-native" / "iris"
    native_kit.mkdir(parents=True)
    shutil.copy(EXAMPLES / "iris" / "problem.toml", native_kit / "problem.toml")
    other = cli("problem", "add", native_kit, "--sensitive", "--manifest", as_ramp, "--host", "owner")
    assert other.exit_code == 2
    assert other.stderr.strip() == (
        f"error: problem {KIT}: the manifest is of a RAMP kit but {native_kit} holds problem.toml: register "
        "the RAMP kit's public folder (its problem.py)")
    assert cli("problem", "list", "--json").json()["problems"] == []


def test_the_host_says_which_score_type_cannot_run_there(workspace, tmp_path, monkeypatch):
    """A score type that ran at `owner prepare` (its library was there) but cannot run in the
    harness's Python: the host's check names it (what `problem add --sensitive` reports)."""
    import sys

    from datarun.problems.owner import prepare_owned
    from datarun.remote.sensitive import request

    library = tmp_path / "lib"
    library.mkdir()
    (library / "owner_metrics.py").write_text("def score(y_true, y_pred):\n    return 1.0\n")
    kit = tmp_path / "kit" / KIT
    shutil.copytree(KITS / KIT, kit, ignore=shutil.ignore_patterns("__pycache__", "training_output"))
    (kit / "problem.py").write_text((kit / "problem.py").read_text() + '''

class _Owned(rw.score_types.Accuracy):
    def __call__(self, y_true, y_pred):
        import owner_metrics

        return owner_metrics.score(y_true, y_pred)


score_types = score_types + [_Owned(name='owned')]
''')
    monkeypatch.syspath_prepend(str(library))
    manifest = prepare_owned(kit, tmp_path / "wd")
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != str(library)])
    monkeypatch.delitem(sys.modules, "owner_metrics", raising=False)
    answer = request(tmp_path / "wd", None, json.dumps({"op": "check", "data": manifest["data_hash"]}))
    assert answer["scoring_error"] == (
        "the RAMP kit's score type 'owned' cannot run on this host (ModuleNotFoundError: No module named "
        "'owner_metrics'): install what it imports for the harness's Python")
