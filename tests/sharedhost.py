"""The shared host of tests/test_shared_hosts*.py: one sshd account and workdir that any
number of workspaces register as `node`, a penguins-like kit whose task keys are the same in
every workspace, and the submissions that tell whose result is whose."""

import json
import os
import shutil
import textwrap
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from faultcluster import trace_folder, wait_until
from faultproxy import host_workdir, stop_host_runner
from sshd import pin

from datarun.remote.common import Layout
from datarun.store.workspace import Workspace

FAILURE = "penguin-specific failure 7731"
N_TRAIN, N_TEST, N_FOLDS = 120, 30, 4
SPECIES = ("Adelie", "Chinstrap", "Gentoo")

KIT_TOML = """
name = "penguins"
title = "Palmer-like penguins"
kind = "classification"

[data]
train = "data/train.csv"
test = "data/test.csv"
target = "species"

[cv]
strategy = "stratified-kfold"
n_splits = 4
seed = 3

[workflow]
kind = "estimator"

[scores]
names = ["accuracy"]

[limits]
wall_time = "120s"
memory = "2GB"
"""

# Waits for a gate file (so a test acts while the task is surely running), then fails.
FAILS = """
import os
import time

GATE = {gate!r}


class PenguinModel:
    def fit(self, X, y):
        deadline = time.time() + 120
        while GATE and not os.path.exists(GATE) and time.time() < deadline:
            time.sleep(0.05)
        raise ValueError("penguin-specific failure 7731")


def get_estimator():
    return PenguinModel()
"""

LOGREG = """
import os
import time

from sklearn.linear_model import LogisticRegression

GATE = {gate!r}


class Gated(LogisticRegression):
    def fit(self, X, y):
        deadline = time.time() + 120
        while GATE and not os.path.exists(GATE) and time.time() < deadline:
            time.sleep(0.05)
        return super().fit(X, y)


def get_estimator():
    return Gated(max_iter=1000)
"""

REFUSED = ("result from host node refused: result.json carries another attempt's nonce: "
           "it is not this attempt's result")


def make_penguins_kit(root: Path) -> Path:
    """Three species told apart by bill, flipper and mass, like Palmer's penguins."""
    kit = root / "kit-penguins"
    (kit / "data").mkdir(parents=True)
    (kit / "problem.toml").write_text(KIT_TOML)
    rng = np.random.default_rng(7)
    means = {"Adelie": (38.8, 18.3, 190.0, 3700.0), "Chinstrap": (48.8, 18.4, 196.0, 3730.0),
             "Gentoo": (47.5, 15.0, 217.0, 5076.0)}
    for name, rows in (("train.csv", N_TRAIN), ("test.csv", N_TEST)):
        lines = ["bill_length_mm,bill_depth_mm,flipper_length_mm,body_mass_g,species"]
        for i in range(rows):
            species = SPECIES[i % 3]
            values = rng.normal(means[species], (2.5, 1.0, 6.0, 300.0))
            lines.append(",".join(f"{v:.1f}" for v in values) + f",{species}")
        (kit / "data" / name).write_text("\n".join(lines) + "\n")
    return kit


@dataclass
class Org:
    """One organiser's workspace, driven through the CLI with `--workspace`."""

    root: Path
    cli: object

    @property
    def at(self) -> tuple:
        return ("--workspace", str(self.root))

    def __call__(self, *args):
        return self.cli(*self.at, *args)

    @property
    def id(self) -> str:
        return self("status", "--json").json()["workspace"]["id"]

    def submit(self, tmp: Path, code: str) -> int:
        folder = tmp / f"sub-{uuid.uuid4().hex[:6]}"
        folder.mkdir()
        (folder / "estimator.py").write_text(textwrap.dedent(code))
        result = self("submit", "penguins", folder, "--team", self.root.name, "--json")
        assert result.exit_code == 0, result.stderr
        return result.json()["id"]

    def show(self, submission: int) -> dict:
        result = self("submission", "show", submission, "--json")
        assert result.exit_code == 0, result.stderr
        return result.json()

    def tasks(self, submission: int) -> list[dict]:
        return self.show(submission)["tasks"]


class SharedHost:
    """One SSH host account, one workdir, any number of workspaces registering it as `node`."""

    def __init__(self, server, cli, tmp: Path):
        self.server, self.cli, self.tmp = server, cli, tmp
        self.workdir = f"~/shared-{uuid.uuid4().hex[:8]}"
        self.folder = host_workdir(server, self.workdir)
        self.kit = make_penguins_kit(tmp)
        self.trace = trace_folder()
        self.gate = self.trace / "gate"

    def workspace(self, name: str) -> Org:
        """`datarun init`, the shared host in hosts.toml (and its key pinned), the kit registered."""
        root = self.tmp / name
        made = self.cli("init", root)
        assert made.exit_code == 0, made.stderr
        # isolation "none": the submissions here wait for a gate file and leave traces on
        # the host (the sharing of a workdir, not the sandbox, is what these tests are about).
        table = self.server.host_table(workdir=self.workdir, slots=2, command_timeout=30.0,
                                       isolation="none")
        lines = ["[hosts.node]"] + [f"{key} = {json.dumps(value)}" for key, value in table.items()]
        (root / "hosts.toml").write_text("\n".join(lines) + "\n")
        pin(Workspace(root), self.server)
        org = Org(root, self.cli)
        added = org("problem", "add", self.kit)
        assert added.exit_code == 0, added.stderr
        return org

    def tasks_of(self, org: Org, space: str | None = None) -> Path:
        """A workspace's task folders on the host (read directly: the host is this machine)."""
        return Layout(self.folder, space or org.id).tasks

    def give_to_host_user(self, top: Path) -> None:
        """What the test wrote in the host's workdir belongs to the host's user, as if it
        had written it (the test runs as root when the host user is another)."""
        import pwd

        user = pwd.getpwnam(self.server.user)
        for path in [top, *top.rglob("*")]:
            os.chown(path, user.pw_uid, user.pw_gid, follow_symlinks=False)

    def open_gate(self) -> None:
        self.gate.touch()

    def close(self) -> None:
        self.open_gate()  # let gated tasks end, then stop every runner of the workdir
        stop_host_runner(self.folder)
        shutil.rmtree(self.trace, ignore_errors=True)


def key_of(task: dict) -> str:
    return f"t{task['id']}-a{task['attempt']}"


def launch_and_leave(shared: SharedHost, org: Org, code: str) -> tuple[int, list[str]]:
    """Submit, run one `dispatch` pass (tasks launched on the host), never collect; the keys
    launched, once their results sit in the workspace's folder there."""
    submission = org.submit(shared.tmp, code)
    passed = org("dispatch", "--json")
    assert passed.exit_code == 0, passed.stderr
    assert passed.json()["launched"] >= 2
    keys = [key_of(t) for t in org.tasks(submission) if t["state"] == "running"]
    assert len(keys) >= 2
    tasks = shared.tasks_of(org)
    wait_until(lambda: all((tasks / key / "result.json").exists() for key in keys), 60,
               f"{org.root.name}'s launched tasks to finish on the host")
    return submission, keys


def assert_all_own_logreg(org: Org, submission: int, host: str = "node") -> list[dict]:
    """Every fold done by the logistic regression, nothing of the other workspace's."""
    shown = org.show(submission)
    assert shown["state"] == "done", shown
    for task in shown["tasks"]:
        assert (task["state"], task["error_kind"], task["error"]) == ("done", None, None), task
        assert task["scores"]["valid"]["accuracy"] > 0.8
        assert task["environment"]["host"] == host
    assert FAILURE not in json.dumps(shown)
    for task in shown["tasks"]:
        assert FAILURE not in org("logs", task["id"]).stdout
    return shown["tasks"]


def assert_all_own_failure(org: Org, submission: int) -> list[dict]:
    tasks = org.tasks(submission)
    assert len(tasks) == N_FOLDS
    for task in tasks:
        assert (task["state"], task["error_kind"]) == ("failed", "fit_error"), task
        assert FAILURE in task["error"]
    return tasks

