"""The whole path over SSH: two hosts on real sshd, no local host, through the CLI.

The demo's kits are registered and submitted as an organiser would, `datarun train` and
`datarun dispatch` spread the tasks over both hosts, and what comes back must be what the
embedded local host gives for the same submissions: the same per-fold and bagged scores,
the environment each task ran in, and data and harness shipped once per host.

Uploads are observed by wrapping `SSHConnection.put` (the real upload still happens) so
the test can tell which host received which kind of archive: the executor names them
`.harness-*.tar`, `.data-*.tar` and `.bundles-*.tar`.
"""

import json
import shlex
import time
import uuid
from pathlib import Path

import pytest
from conftest import EXAMPLES, stop_runners
from sshd import pin, runner_pids

from datarun.executors.ssh import SSHExecutor
from datarun.executors.sshconn import SSHConnection, resolve_target

pytestmark = pytest.mark.ssh

HOSTS = ("node-a", "node-b")
IRIS_SUBS = EXAMPLES / "iris" / "submissions"
DIABETES_SUBS = EXAMPLES / "diabetes" / "submissions"
# A team name a shell would choke on: it must reach the hosts as data, never as a command.
WEIRD_TEAM = "o'brien \"&\" $(touch pwned) `touch pwned2`; rm -rf ~"


def hosts_toml(servers: dict, workdirs: dict) -> str:
    lines = []
    for name, server in servers.items():
        workdir = workdirs[name]
        lines += [
            f"[hosts.{name}]",
            'executor = "ssh"',
            'address = "127.0.0.1"',
            f"port = {server.port}",
            f"user = {json.dumps(server.user)}",
            f"identity = {json.dumps(str(server.client_key))}",
            f"python = {json.dumps(server.python)}",
            f"workdir = {json.dumps(workdir)}",
            "slots = 2",
            "threads = 1",
            'connect_timeout = "5s"',
            'command_timeout = "30s"',
            "",
        ]
    return "\n".join(lines)


class Remote:
    """Plain commands on a test host, on a connection of the test's own."""

    def __init__(self, server, known_hosts: Path, workdir: str):
        self.conn = SSHConnection(resolve_target(server.host("probe", workdir=workdir)), known_hosts)
        self.workdir = self.conn.expand(workdir)

    def sh(self, *argv: str) -> str:
        result = self.conn.run(shlex.join(argv))
        assert result.status == 0, result.stderr
        return result.stdout

    def listing(self, sub: str) -> list[str]:
        return sorted(self.sh("ls", "-A", f"{self.workdir}/{sub}").split())

    def stop_runner_and_clean(self) -> None:
        """Stop the runners datarun started in this workdir (by their recorded pids), then remove it."""
        for pid in runner_pids(self.conn, self.workdir):
            self.conn.run(shlex.join(["kill", str(pid)]))
        self.conn.run(shlex.join(["chmod", "-R", "u+w", self.workdir]) + "; " + shlex.join(["rm", "-rf", self.workdir]))  # data and harness are read-only
        self.conn.close()


@pytest.fixture
def two_hosts(workspace, sshd_a, sshd_b):
    """The workspace's hosts.toml lists two SSH hosts and no local one.

    Both servers log in the same user on this machine: each host gets a workdir of its
    own, as two real machines would have.
    """
    tag = uuid.uuid4().hex[:8]
    servers = {"node-a": sshd_a, "node-b": sshd_b}
    workdirs = {name: f"~/e2e-{tag}-{name}" for name in servers}
    workspace.hosts_file.write_text(hosts_toml(servers, workdirs))
    pin(workspace, sshd_a, sshd_b)
    known = workspace.state_dir / "known_hosts"
    remotes = {name: Remote(server, known, workdirs[name]) for name, server in servers.items()}
    yield remotes
    for remote in remotes.values():
        remote.stop_runner_and_clean()


@pytest.fixture
def uploads(monkeypatch):
    """Every upload as (host, kind, bytes), kind being harness | data | bundles."""
    seen: list[tuple[str, str, int]] = []
    real_put = SSHConnection.put

    def put(self, local, remote):
        size = real_put(self, local, remote)
        kind = Path(remote).name.lstrip(".").split("-", 1)[0]
        seen.append((self.target.name, kind, size))
        return size

    monkeypatch.setattr(SSHConnection, "put", put)
    real_ship = SSHExecutor._ship_data

    def ship_data(self, digest, folder, free):  # data sets travel compressed and resumable
        sent = self.conn.stats.bytes_sent
        real_ship(self, digest, folder, free)
        seen.append((self.host.name, "data", self.conn.stats.bytes_sent - sent))

    monkeypatch.setattr(SSHExecutor, "_ship_data", ship_data)
    return seen


def submit(cli, problem: str, folder: Path, team: str, *options: str, at: tuple = ()) -> int:
    result = cli(*at, "submit", problem, folder, "--team", team, *options, "--json")
    assert result.exit_code == 0, result.stderr
    return result.json()["id"]


def register_and_submit(cli, at: tuple = ()) -> dict[str, int]:
    """The demo's kits and submissions; `at` is `--workspace PATH` for another workspace."""
    for kit in ("iris", "diabetes"):
        result = cli(*at, "problem", "add", EXAMPLES / kit)
        assert result.exit_code == 0, result.stderr
    return {
        "logreg": submit(cli, "iris", IRIS_SUBS / "logreg", "ada", at=at),
        "ridge": submit(cli, "diabetes", DIABETES_SUBS / "ridge", "ada", at=at),
        "knn": submit(cli, "iris", IRIS_SUBS / "knn", "grace", at=at),
        "broken_fit": submit(cli, "iris", IRIS_SUBS / "broken_fit", "grace", at=at),
    }


def shown(cli, submission: int, at: tuple = ()) -> dict:
    result = cli(*at, "submission", "show", str(submission), "--json", "--private")
    assert result.exit_code == 0, result.stderr
    return result.json()


def data_hashes(cli) -> set[str]:
    return {cli("problem", "show", name, "--json").json()["data_hash"] for name in ("iris", "diabetes")}


def test_two_ssh_hosts_train_the_demo_like_the_local_host(workspace, cli, two_hosts, uploads, tmp_path):
    subs = register_and_submit(cli)
    result = cli("train", "--json")
    assert result.exit_code == 1, result.stderr  # the broken submission fails, as on the local host
    summary = result.json()
    assert (summary["tasks"], summary["done"], summary["failed"]) == (20, 15, 5)
    assert summary["host_errors"] == {}

    remote = {name: shown(cli, sub) for name, sub in subs.items()}
    used = {task["host"] for sub in remote.values() for task in sub["tasks"]}
    assert used == set(HOSTS)
    assert {t["error_kind"] for t in remote["broken_fit"]["tasks"]} == {"fit_error"}
    assert "cannot fit" in remote["broken_fit"]["tasks"][0]["error"]
    for name in ("logreg", "ridge", "knn"):
        for task in remote[name]["tasks"]:
            assert task["state"] == "done", task
            env = task["environment"]
            assert env["host"] == task["host"] in HOSTS
            assert env["python"] and env["sklearn"] and env["numpy"] and env["harness"]
    text = cli("submission", "show", str(subs["logreg"])).stdout
    assert "ran with" in text and "host node-" in text and "sklearn " in text

    status = cli("status", "--json").json()
    assert set(status["hosts"]) == set(HOSTS)
    for host in HOSTS:
        placed = [t for sub in remote.values() for t in sub["tasks"] if t["host"] == host]
        counts = status["hosts"][host]
        assert counts["executor"] == "ssh" and counts["slots"] == 2 and counts["slots_in_use"] == 0
        assert counts["done"] == sum(t["state"] == "done" for t in placed) > 0
        assert counts["failed"] == sum(t["state"] == "failed" for t in placed)

    # Each host got the harness once and each data set at most once.
    for host in HOSTS:
        kinds = [kind for name, kind, _ in uploads if name == host]
        assert kinds.count("harness") == 1
        assert 1 <= kinds.count("data") <= 2
        assert two_hosts[host].listing("harness") and len(two_hosts[host].listing("harness")) == 1
        assert set(two_hosts[host].listing("data")) <= data_hashes(cli)

    # The same submissions on the embedded local host, in a workspace of their own.
    from datarun.store.workspace import init_workspace

    local_ws = init_workspace(tmp_path / "local")
    at = ("--workspace", str(local_ws.root))
    local_subs = register_and_submit(cli, at)
    try:
        assert cli(*at, "train", "--json").exit_code == 1
    finally:
        stop_runners(local_ws)
    for name in subs:
        here = shown(cli, local_subs[name], at)
        assert {t["host"] for t in here["tasks"]} == {"local"}
        assert [t["state"] for t in here["tasks"]] == [t["state"] for t in remote[name]["tasks"]]
        for ours, theirs in zip(remote[name]["tasks"], here["tasks"], strict=True):
            assert ours["fold"] == theirs["fold"]
            assert set(ours["scores"]) == set(theirs["scores"])
            for split, values in ours["scores"].items():
                assert values == pytest.approx(theirs["scores"][split], rel=0, abs=1e-9), (name, split)
        assert set(remote[name]["bagged"]) == set(here["bagged"])
        for split, values in remote[name]["bagged"].items():
            assert values == pytest.approx(here["bagged"][split], rel=0, abs=1e-9), (name, split)
    assert remote["logreg"]["bagged"]["valid"]["accuracy"] > 0.9


def test_a_second_submission_sends_only_its_bundles_and_cron_collects_it(
        workspace, cli, two_hosts, uploads):
    assert cli("problem", "add", EXAMPLES / "iris").exit_code == 0
    first = submit(cli, "iris", IRIS_SUBS / "logreg", "ada")
    result = cli("train", "--json")
    assert result.exit_code == 0, result.stderr
    assert {t["host"] for t in shown(cli, first)["tasks"]} == set(HOSTS)
    complete = {
        host: remote.sh("stat", "-c", "%i %Y", f"{remote.workdir}/harness/{remote.listing('harness')[0]}/.complete")
        for host, remote in two_hosts.items()
    }
    uploads.clear()

    # A second submission, moved by cron-style `dispatch` passes rather than `train`.
    second = submit(cli, "iris", IRIS_SUBS / "random_forest", WEIRD_TEAM, "--name", "rf; $(id)")
    launched = cli("dispatch", "--json")
    assert launched.exit_code == 0, launched.stderr
    # Both hosts' slots filled in one pass (a fast task may have freed one for its second round).
    started = launched.json()["launched"]
    assert started >= 4
    status = cli("status", "--json").json()
    assert all(status["hosts"][h]["slots_in_use"] <= 2 for h in HOSTS)
    # Per host, what status counts is what the dispatcher placed there: the first
    # submission's 5 tasks plus those launched so far, running or already collected.
    assert sum(status["hosts"][h]["slots_in_use"] + status["hosts"][h]["waiting_on_host"]
               + status["hosts"][h]["done"] for h in HOSTS) == 5 + started

    deadline = time.monotonic() + 60
    while shown(cli, second)["state"] not in ("done", "failed") and time.monotonic() < deadline:
        passed = cli("dispatch", "--json")
        assert passed.exit_code == 0, passed.stderr
    sub = shown(cli, second)
    assert sub["state"] == "done", sub
    assert sub["team"] == WEIRD_TEAM and sub["name"] == "rf; $(id)"
    assert {t["state"] for t in sub["tasks"]} == {"done"}

    # Only bundles travelled for the second submission: the harness and data stayed put.
    assert uploads and {kind for _, kind, _ in uploads} == {"bundles"}
    assert all(size < 64 * 1024 for _, _, size in uploads)
    for host, remote in two_hosts.items():
        path = f"{remote.workdir}/harness/{remote.listing('harness')[0]}/.complete"
        assert remote.sh("stat", "-c", "%i %Y", path) == complete[host]
        # Nothing from the team's or the submission's name ran on the host.
        assert remote.sh("find", remote.conn.home(), "-maxdepth", "2", "-name", "pwned*") == ""
