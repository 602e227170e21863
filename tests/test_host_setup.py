"""`datarun host setup`: a real virtual environment on a loopback SSH host.

The problem pins a package the host's Python lacks (`pinme`, a wheel the test builds, so
pip needs no network); `host setup` makes the environment with pip on the host and
records the version pip resolved; the problem's tasks then run with that environment's
Python, sandboxed, and report the pinned version and where they imported it from. With
`strict = true`, a host whose environment lacks the recorded versions gets none of them.
"""

import base64
import hashlib
import json
import os
import shutil
import stat
import tempfile
import uuid
import zipfile
from pathlib import Path

import pytest
from conftest import EXAMPLES
from contract import validate
from sshd import pin
from test_resources_hosts import host_table
from test_ssh_e2e import Remote

from datarun.errors import UsageError
from datarun.executors.environments import strict_reason
from datarun.problems.resources import parse_environment
from datarun.store.db import open_db
from datarun.store.tasks import of_submission

pytestmark = pytest.mark.ssh

REPORTING = '''import pinme
from sklearn.linear_model import LogisticRegression


def get_estimator():
    print("PINME", pinme.__version__, pinme.__file__)
    return LogisticRegression(max_iter=500)
'''


def build_wheel(folder: Path, version: str) -> Path:
    """A minimal pure-Python wheel of `pinme`, readable by the test host's user."""
    dist = f"pinme-{version}.dist-info"
    files = {
        "pinme/__init__.py": f'__version__ = "{version}"\n',
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: pinme\nVersion: {version}\n",
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for name, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(text.encode())}")
    record.append(f"{dist}/RECORD,,")
    path = folder / f"pinme-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
        archive.writestr(f"{dist}/RECORD", "\n".join(record) + "\n")
    path.chmod(0o644)
    return path


@pytest.fixture
def wheels():
    folder = Path(tempfile.mkdtemp(prefix="datarun-wheels-"))
    folder.chmod(stat.S_IRWXU | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def two_nodes(workspace, sshd_a, sshd_b):
    tag = uuid.uuid4().hex[:8]
    workdirs = {"node-a": f"~/env-{tag}-a", "node-b": f"~/env-{tag}-b"}
    workspace.hosts_file.write_text(
        host_table("node-a", sshd_a, workdirs["node-a"], slots=2, threads=1)
        + host_table("node-b", sshd_b, workdirs["node-b"], slots=2, threads=1))
    pin(workspace, sshd_a, sshd_b)
    known = workspace.state_dir / "known_hosts"
    remotes = {"node-a": Remote(sshd_a, known, workdirs["node-a"]), "node-b": Remote(sshd_b, known, workdirs["node-b"])}
    yield remotes
    for remote in remotes.values():
        remote.stop_runner_and_clean()


def kit_with(tmp_path, environment: str) -> Path:
    folder = tmp_path / "pinned"
    shutil.copytree(EXAMPLES / "iris", folder, ignore=shutil.ignore_patterns("submissions"))
    text = (folder / "problem.toml").read_text().replace('name = "iris"', 'name = "pinned"')
    (folder / "problem.toml").write_text(text + "\n[environment]\n" + environment)
    return folder


def test_host_setup_makes_a_venv_whose_pinned_version_the_tasks_import(workspace, cli, tmp_path, wheels,
                                                                       two_nodes):
    wheel = build_wheel(wheels, "1.2.3")
    requirement = f"pinme @ {wheel.as_uri()}"
    assert cli("problem", "add", kit_with(tmp_path, f"requirements = [{json.dumps(requirement)}]\nstrict = true\n")
               ).exit_code == 0
    result = cli("host", "setup", "node-a", "--problem", "pinned", "--json")
    assert result.exit_code == 0, result.stderr
    report = result.json()
    assert validate(report) == "host-setup"  # docs/schema/host-setup.json
    assert report["versions"]["pinme"] == "1.2.3" and report["made"]
    assert "/envs/" in report["python"] and report["recorded_for"] == ["pinned"]
    assert cli("problem", "show", "pinned", "--json").json()["environment"]["versions"] == {"pinme": "1.2.3"}
    again = cli("host", "setup", "node-a", "--problem", "pinned", "--json").json()
    assert not again["made"] and again["python"] == report["python"]  # the same requirements: reused

    checked = {report["name"]: report for report in cli("host", "check", "--json").json()["hosts"]}
    assert checked["node-a"]["environment"]["versions"]["pinme"] == "1.2.3"
    assert checked["node-a"]["differences"]["pinme"] == {"node-a": "1.2.3", "node-b": None}
    assert "pinme none here differs between hosts: node-a 1.2.3" in checked["node-b"]["warnings"]

    folder = tmp_path / "sub"
    folder.mkdir()
    (folder / "estimator.py").write_text(REPORTING)
    submission = cli("submit", "pinned", folder, "--team", "a", "--json").json()["id"]
    result = cli("train", "--json")
    assert result.exit_code == 0, result.stderr
    db = open_db(workspace)
    env_folder = report["folder"]
    for task in of_submission(db, submission):
        assert task.host == "node-a"  # strict: node-b has no environment with pinme 1.2.3
        log = cli("logs", task.id, "--json").json()["log"]
        line = next(line for line in log.splitlines() if line.startswith("PINME"))
        _, version, where = line.split(" ", 2)
        assert version == "1.2.3"
        assert os.path.realpath(where).startswith(os.path.realpath(os.path.expanduser(env_folder))) or \
            env_folder.split("/envs/")[1] in where


def test_strict_keeps_tasks_off_hosts_whose_versions_differ():
    problem_env = {"strict": True, "versions": {"pinme": "1.2.3"}}
    assert strict_reason({"versions": {"pinme": "1.2.3"}}, problem_env) is None
    assert strict_reason({"versions": {"pinme": "1.0"}}, problem_env) == "pinme 1.0 here, 1.2.3 recorded (strict)"
    assert strict_reason(None, problem_env) == "no environment: run `datarun host setup` for it"
    assert strict_reason(None, {"strict": False, "versions": {"pinme": "1.2.3"}}) is None


def test_requirements_come_from_the_table_or_the_kits_file_and_pip_options_are_refused(tmp_path):
    (tmp_path / "requirements.txt").write_text("# pinned\nscikit-learn==1.5.2  # the kit's\n\nxgboost\n")
    assert parse_environment(None, tmp_path) == {"requirements": ["scikit-learn==1.5.2", "xgboost"], "strict": False}
    assert parse_environment({"requirements": ["six"], "strict": True}, tmp_path) == {
        "requirements": ["six"], "strict": True}
    with pytest.raises(UsageError) as error:
        parse_environment({"requirements": ["--index-url=http://example.org/simple"]})
    assert str(error.value) == (
        "problem.toml: [environment] requirements: '--index-url=http://example.org/simple' is not a "
        "requirement (like 'scikit-learn==1.5.2'); pip options are not taken: set the index in the host's pip.conf")
    with pytest.raises(UsageError, match=r"^problem.toml: \[environment\] strict must be true or false, got 'yes'$"):
        parse_environment({"strict": "yes"})
    with pytest.raises(UsageError, match=r"^problem.toml: \[environment\]: unknown key 'packages'"):
        parse_environment({"packages": []})


def test_host_setup_refuses_an_unknown_host_and_a_workspace_without_problems(workspace, cli):
    result = cli("host", "setup", "nowhere")
    assert result.exit_code == 2
    assert result.stderr.strip() == "error: unknown host 'nowhere' (hosts.toml has: local)"
    result = cli("host", "setup", "local")
    assert result.exit_code == 2
    assert result.stderr.strip() == "error: no problem registered yet: run `datarun problem add KIT` first"
