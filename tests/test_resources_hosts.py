"""GPU routing on a mixed cluster of real sshd hosts on loopback, without a GPU.

Two hosts: `gpu-node` declares `gpus = 2` and the tag `gpu`, `cpu-node` neither. A GPU
problem (`[resources] tags = ["gpu"], gpus = 1`) and a CPU problem are trained together;
each submission records the device variables it sees in its output. The GPU tasks all
run on the GPU host, never more than two at once, two at once on different devices,
each seeing exactly the device recorded on its task; CPU tasks see no device.
"""

import json
import shutil
import uuid

import pytest
from conftest import EXAMPLES
from sshd import pin
from test_ssh_e2e import Remote

from datarun.store.db import open_db
from datarun.store.tasks import of_submission

pytestmark = pytest.mark.ssh

RECORDING = '''import os
import time

from sklearn.linear_model import LogisticRegression


class Recording(LogisticRegression):
    def fit(self, X, y):
        print("SEEN", os.environ.get("CUDA_VISIBLE_DEVICES"), os.environ.get("NVIDIA_VISIBLE_DEVICES"))
        time.sleep({sleep})
        return super().fit(X, y)


def get_estimator():
    return Recording(max_iter=500)
'''


def host_table(name, server, workdir, **extra) -> str:
    lines = [f"[hosts.{name}]", 'executor = "ssh"', 'address = "127.0.0.1"', f"port = {server.port}",
             f"user = {json.dumps(server.user)}", f"identity = {json.dumps(str(server.client_key))}",
             f"python = {json.dumps(server.python)}", f"workdir = {json.dumps(workdir)}",
             'connect_timeout = "5s"', 'command_timeout = "30s"']
    lines += [f"{key} = {json.dumps(value)}" for key, value in extra.items()]
    return "\n".join(lines) + "\n\n"


@pytest.fixture
def mixed_cluster(workspace, sshd_a, sshd_b):
    tag = uuid.uuid4().hex[:8]
    workdirs = {"gpu-node": f"~/gpu-{tag}", "cpu-node": f"~/cpu-{tag}"}
    workspace.hosts_file.write_text(
        host_table("gpu-node", sshd_a, workdirs["gpu-node"], slots=4, threads=1, gpus=2, tags=["gpu", "cpu"])
        + host_table("cpu-node", sshd_b, workdirs["cpu-node"], slots=2, threads=1, tags=["cpu"]))
    pin(workspace, sshd_a, sshd_b)
    known = workspace.state_dir / "known_hosts"
    remotes = [Remote(sshd_a, known, workdirs["gpu-node"]), Remote(sshd_b, known, workdirs["cpu-node"])]
    yield
    for remote in remotes:
        remote.stop_runner_and_clean()


def kit(tmp_path, name: str, resources: str = ""):
    folder = tmp_path / name
    shutil.copytree(EXAMPLES / "iris", folder, ignore=shutil.ignore_patterns("submissions"))
    text = (folder / "problem.toml").read_text().replace('name = "iris"', f'name = "{name}"')
    (folder / "problem.toml").write_text(text + resources)
    return folder


def recording(tmp_path, name: str, sleep: float):
    folder = tmp_path / "subs" / name
    folder.mkdir(parents=True)
    (folder / "estimator.py").write_text(RECORDING.replace("{sleep}", str(sleep)))
    return folder


def seen(cli, task) -> tuple[str, str]:
    log = cli("logs", task.id, "--json").json()["log"]
    line = next(line for line in log.splitlines() if line.startswith("SEEN"))
    _, cuda, nvidia = (line.split(" ") + ["", ""])[:3]
    return cuda, nvidia


def test_gpu_tasks_get_devices_of_their_own_on_the_gpu_host_only(workspace, cli, tmp_path, mixed_cluster):
    assert cli("problem", "add", kit(tmp_path, "vision", '\n[resources]\ntags = ["gpu"]\ngpus = 1\n')).exit_code == 0
    assert cli("problem", "add", kit(tmp_path, "tabular", '\n[resources]\ntags = ["cpu"]\n')).exit_code == 0
    gpu_sub = cli("submit", "vision", recording(tmp_path, "gpu", 1.5), "--team", "a", "--json").json()["id"]
    cpu_sub = cli("submit", "tabular", recording(tmp_path, "cpu", 0.2), "--team", "a", "--json").json()["id"]
    result = cli("train", "--json")
    assert result.exit_code == 0, result.stderr
    assert result.json()["done"] == 10

    db = open_db(workspace)
    gpu_tasks = of_submission(db, gpu_sub)
    assert {task.host for task in gpu_tasks} == {"gpu-node"}  # never on the CPU-only host
    for task in gpu_tasks:
        assert len(task.limits["devices"]) == 1
        device = str(task.limits["devices"][0])
        assert seen(cli, task) == (device, device)  # what it saw is what was recorded
    # Never three at once on two devices; two at once hold different devices.
    spans = [(task.ran_from, task.ran_to, task.limits["devices"][0]) for task in gpu_tasks]
    overlapping = 0
    for i, (start, end, device) in enumerate(spans):
        others = [(s, e, d) for j, (s, e, d) in enumerate(spans) if j != i and s < end and start < e]
        assert all(d != device for _, _, d in others)
        at_start = [1 for s, e, _ in spans if s <= start < e]
        assert len(at_start) <= 2
        overlapping += bool(others)
    assert overlapping >= 2  # both devices were used side by side
    for task in of_submission(db, cpu_sub):
        assert task.limits["devices"] == []
        assert seen(cli, task) == ("", "")  # a CPU task sees no GPU
