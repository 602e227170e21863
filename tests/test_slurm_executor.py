"""Slurm hosts for real: a single-node Slurm (munged, slurmctld, slurmd) on 127.0.0.1, and
datarun's `executor = "slurm"` running the demo's iris tasks in worker jobs that
dask-jobqueue starts when tasks wait and that end once none are left."""

from __future__ import annotations

import sys

import pytest
from conftest import EXAMPLES, stop_runners

pytest.importorskip("dask_jobqueue", reason="the Slurm tests need dask-jobqueue (pip install '.[cluster]')")

from slurmnode import SlurmNode, missing_reason  # noqa: E402
from test_dask_executor import Training, fold_scores, submit, wait_for  # noqa: E402

REASON = missing_reason()
pytestmark = pytest.mark.skipif(REASON is not None, reason=REASON or "")


@pytest.fixture(scope="module")
def slurm():
    import shutil
    import tempfile
    from pathlib import Path

    # munged wants every folder above its socket open to all (pytest's are 0700).
    root = Path(tempfile.mkdtemp(prefix="datarun-slurm-"))
    root.chmod(0o755)
    node = SlurmNode(root)
    yield node
    node.stop()
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def iris(workspace, cli, slurm, monkeypatch):
    monkeypatch.setenv("SLURM_CONF", str(slurm.conf))
    assert cli("problem", "add", EXAMPLES / "iris").exit_code == 0
    yield workspace
    stop_runners(workspace)


def slurm_host(slurm, queue: str = "debug") -> str:
    return (f'[hosts.hpc]\nexecutor = "slurm"\nqueue = "{queue}"\ncores = 1\nmax_jobs = 2\n'
            f'walltime = "00:10:00"\nmemory = "2GB"\ninterface = "lo"\npython = "{sys.executable}"\n'
            f'workdir = "{slurm.root}/hostdir"\nlog_directory = "{slurm.root}/dask-logs"\n'
            "connect_timeout = \"10s\"\n")


def test_iris_through_slurm_worker_jobs_that_come_and_go(iris, cli, slurm):
    iris.hosts_file.write_text('[hosts.local]\nexecutor = "local"\nslots = 2\n')
    here = submit(cli, "logreg", "ada")
    assert cli("train", "--json").exit_code == 0
    iris.hosts_file.write_text(slurm_host(slurm))
    there = submit(cli, "logreg", "grace")
    assert slurm.jobs() == []
    training = Training()
    seen = wait_for(lambda: [job for job in slurm.jobs() if job == "datarun-worker"], timeout=90,
                    what="worker jobs in squeue")
    code, summary, err = training.join(300)
    assert code == 0, err
    assert (summary["done"], summary["failed"]) == (5, 0)
    assert seen
    assert fold_scores(cli, there)[1] == fold_scores(cli, here)[1]
    wait_for(lambda: slurm.jobs() == [], timeout=30, what="the worker jobs to leave squeue")


def test_a_partition_that_does_not_exist_is_one_line(iris, cli, slurm):
    iris.hosts_file.write_text(slurm_host(slurm, queue="nope"))
    check = cli("host", "check", "hpc", "--json").json()["hosts"]
    report = check[0] if isinstance(check, list) else check
    report = report.get("hosts", [report])[0] if "hosts" in report else report
    assert report["ok"] is False
    assert report["problems"] == ["host hpc: Slurm refuses its jobs: allocation failure: Invalid "
                                  "partition name specified; check queue and account in hosts.toml"]
    assert slurm.jobs() == []


def test_sbatch_missing_is_one_line(iris, cli, slurm, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    iris.hosts_file.write_text(slurm_host(slurm))
    check = cli("host", "check", "hpc", "--json").json()["hosts"]
    report = check[0] if isinstance(check, list) else check
    report = report.get("hosts", [report])[0] if "hosts" in report else report
    assert report["problems"] == ["host hpc: `sbatch` is not on PATH on this machine: install the slurm "
                                  "client commands here, or fix PATH"]


def test_squeue_failing_is_one_line_in_status(workspace, cli, slurm, tmp_path, monkeypatch):
    import re

    # The same cluster's configuration, but a controller port nothing listens on: squeue
    # runs for real and fails as it does when slurmctld is down.
    conf = tmp_path / "slurm.conf"
    conf.write_text(re.sub(r"(?m)^SlurmctldPort=\d+$", "SlurmctldPort=1", slurm.conf.read_text()))
    monkeypatch.setenv("SLURM_CONF", str(conf))
    workspace.hosts_file.write_text('[hosts.local]\nexecutor = "local"\nslots = 1\n' + slurm_host(slurm))
    status = cli("status", "--json")
    assert status.exit_code == 0, status.stderr
    assert status.json()["hosts"]["hpc"]["cluster"] == {
        "error": "host hpc: squeue failed: slurm_load_jobs error: Unable to contact slurm controller "
                 "(connect failure): check that slurmctld runs and that SLURM_CONF names its slurm.conf"}
    assert status.json()["hosts"]["local"]["executor"] == "local"  # the rest of status is there
    # Negative control: the cluster's own configuration, squeue answers.
    monkeypatch.setenv("SLURM_CONF", str(slurm.conf))
    assert cli("status", "--json").json()["hosts"]["hpc"]["cluster"] == {"jobs": []}


def test_no_worker_job_starting_in_time_is_one_line(iris, cli, slurm):
    import subprocess

    # The node is taken whole by another job: Slurm accepts datarun's worker job (sbatch
    # --test-only passes: it would start once that job ends) but does not start it.
    blocker = subprocess.run(["sbatch", "--parsable", "--exclusive", "-t", "10", "-J", "other-user",
                              "-p", "debug", "-o", "/dev/null", "--wrap", "sleep 600"],
                             check=True, capture_output=True, text=True, env=slurm.env).stdout.strip()
    try:
        wait_for(lambda: "other-user" in slurm.jobs(), timeout=30, what="the blocking job")
        iris.hosts_file.write_text(slurm_host(slurm).replace('connect_timeout = "10s"\n',
                                                             'connect_timeout = "10s"\ncommand_timeout = "5s"\n'))
        report = cli("host", "check", "hpc", "--json").json()["hosts"]
        report = report[0] if isinstance(report, list) else report
        assert report["ok"] is False
        assert report["problems"] == [
            f"host hpc: no worker job of the slurm queue debug started within 5s: see squeue, "
            f"and the job logs in {slurm.root}/dask-logs"]
    finally:
        subprocess.run(["scancel", blocker], check=True, env=slurm.env)
    wait_for(lambda: slurm.jobs() == [], timeout=30, what="the jobs to leave squeue")
