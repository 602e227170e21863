"""A Dask host's `slots` read from its workers, and bad input on Dask hosts, for real.

Each bad setting is met with real processes (a `dask scheduler`, `dask worker`s, one of
them started from an environment without numpy and scikit-learn) and must give one line
naming what to fix, leave the host without tasks, and leave the other hosts working.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from conftest import stop_runners

pytest.importorskip("distributed", reason="the Dask tests need `distributed` (pip install '.[cluster]')")

from daskcluster import DaskCluster, hosts_toml  # noqa: E402
from test_dask_executor import (  # noqa: E402,F401
    LOCAL,
    first_report,
    iris,
    make_certificates,
    sleeper,
    submit,
    use_hosts,
)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    made = DaskCluster(tmp_path_factory.mktemp("dask"), workers=2)
    yield made
    made.stop()


def no_slots_host(address: str, workdir: Path, extra: str = "") -> str:
    return (f'[hosts.cluster]\nexecutor = "dask"\nscheduler = "{address}"\nworkdir = "{workdir}"\n'
            f"connect_timeout = \"5s\"\n{extra}")


def seats_used(workspace, submission: int) -> set[int]:
    from datarun.store.db import open_db

    db = open_db(workspace)
    return {slot for (slot,) in db.conn.execute("SELECT slot FROM tasks WHERE submission = ?", [submission])}


def test_a_dask_host_without_slots_takes_as_many_tasks_as_its_workers_have_threads(
        workspace, cli, cluster, tmp_path):
    from conftest import EXAMPLES

    assert cli("problem", "add", EXAMPLES / "iris").exit_code == 0  # 5 folds
    try:
        use_hosts(workspace, no_slots_host(cluster.address, cluster.root / "hostdir"))
        host = cli("status", "--json").json()["hosts"]["cluster"]
        assert host["slots"] == 2  # 2 workers x 1 thread, read from the scheduler
        slow = sleeper(tmp_path, 3)
        sub = cli("submit", "iris", slow, "--team", "ada", "--json").json()["id"]
        result = cli("train", "--json")
        assert result.exit_code == 0, result.stderr
        assert (result.json()["done"], result.json()["failed"]) == (5, 0)
        # 2 slots, each with a task waiting behind it: seats 0-3 held at once. With the
        # default of 1 before the scheduler's first answer only seats 0-1 would be.
        assert seats_used(workspace, sub) == {0, 1, 2, 3}
        # Negative control: `slots = 1` given, the same tasks hold two seats only.
        use_hosts(workspace, no_slots_host(cluster.address, cluster.root / "hostdir", "slots = 1\n"))
        assert cli("status", "--json").json()["hosts"]["cluster"]["slots"] == 1
        other = cli("submit", "iris", slow, "--team", "grace", "--json").json()["id"]
        assert cli("train", "--json").json()["done"] == 5
        assert seats_used(workspace, other) == {0, 1}
    finally:
        stop_runners(workspace)


def assert_one_line_and_local_works(cli, workspace, line: str) -> None:
    """`train` runs every task on the local host and gives `line` as the cluster's error;
    `host check cluster` then says `line` and nothing else (and the host takes no task)."""
    sub = submit(cli, "logreg", "ada")
    result = cli("train", "--json")
    assert result.exit_code in (0, 1), result.stderr
    assert result.json()["done"] == 2
    assert result.json()["host_errors"]["cluster"] == line
    shown = cli("submission", "show", str(sub), "--json").json()
    assert {task["host"] for task in shown["tasks"]} == {"local"}
    report = first_report(cli("host", "check", "cluster", "--json"))
    assert report["ok"] is False
    assert report["problems"] == [line]


FAKE_VERSION = '''"""Preloaded by the test's scheduler: it reports another `distributed` version (the only
thing faked: everything else is this real scheduler)."""


def dask_setup(scheduler):
    versions = scheduler.versions

    def older(packages=None):
        report = versions(packages=packages)
        report["packages"]["distributed"] = "2023.1.0"
        return report

    scheduler.versions = older
    scheduler.handlers["versions"] = older
'''


def test_a_scheduler_of_another_dask_version_is_one_line(iris, cli, tmp_path):  # noqa: F811
    import distributed

    preload = tmp_path / "older_scheduler.py"
    preload.write_text(FAKE_VERSION)
    older = DaskCluster(tmp_path / "older", workers=1, scheduler_args=("--preload", str(preload)))
    try:
        use_hosts(iris, LOCAL + hosts_toml("cluster", older.address, tmp_path / "hostdir"))
        assert_one_line_and_local_works(
            cli, iris, f"host cluster: the Dask scheduler at {older.address} runs distributed 2023.1.0, "
                       f"this machine {distributed.__version__}: install the same version on both")
    finally:
        older.stop()


def venv_without(folder: Path, left_out: tuple[str, ...]) -> Path:
    """A real virtual environment holding this one's packages but `left_out` (by the start of
    their names in site-packages): a Python a worker can start from that lacks them."""
    import subprocess
    import sysconfig

    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True)
    ours = Path(sysconfig.get_paths()["purelib"])
    theirs = next((folder / "lib").glob("python3*/site-packages"))
    for entry in ours.iterdir():
        if not entry.name.lower().startswith(left_out):
            (theirs / entry.name).symlink_to(entry)
    return folder / "bin" / "python"


def test_a_worker_without_numpy_and_scikit_learn_is_one_line(iris, cli, tmp_path):  # noqa: F811
    import subprocess

    python = venv_without(tmp_path / "bare-env", ("numpy", "scipy", "sklearn", "scikit_learn", "pandas"))
    lacks = subprocess.run([str(python), "-c", "import numpy"], capture_output=True)
    assert lacks.returncode != 0  # the environment really lacks numpy ...
    bare = DaskCluster(tmp_path / "bare", workers=0)
    try:
        bare.start_worker("bare", python=python)
        bare.wait_for_workers(1)  # ... and its worker runs all the same
        with bare.client() as client:
            (address,) = client.scheduler_info(n_workers=-1)["workers"]
        use_hosts(iris, LOCAL + hosts_toml("cluster", bare.address, tmp_path / "hostdir"))
        assert_one_line_and_local_works(
            cli, iris, f"host cluster: the Dask worker {address}: its Python {python} lacks numpy, pandas, "
                       "scikit-learn: install them in the workers' environment")
    finally:
        bare.stop()


def test_a_shared_data_folder_missing_on_the_workers_is_one_line(iris, cli, cluster, tmp_path):  # noqa: F811
    missing = tmp_path / "no-such-share"
    use_hosts(iris, LOCAL + hosts_toml("cluster", cluster.address, tmp_path / "hostdir",
                                       extra=f'data = "shared:{missing}"\n'))
    with cluster.client() as client:
        first = sorted(client.scheduler_info(n_workers=-1)["workers"])[0]
    assert_one_line_and_local_works(
        cli, iris, f"host cluster: the Dask worker {first}: the shared data folder {missing} is not there: "
                   'fix data = "shared:..." in hosts.toml, or make the folder reachable from every worker')
    # Negative control: the folder there (and the data set in it), the host takes tasks.
    (missing / "data").mkdir(parents=True)
    assert first_report(cli("host", "check", "cluster", "--json"))["ok"] is True


def test_missing_or_unreadable_tls_files_are_one_line(iris, cli, cluster, tmp_path):  # noqa: F811
    certs = make_certificates(tmp_path / "certs")
    secure = DaskCluster(tmp_path / "tls", workers=1, tls=certs)
    try:
        def tls(ca: Path, cert: Path, key: Path) -> str:
            return LOCAL + hosts_toml("cluster", secure.address, tmp_path / "hostdir",
                                      extra=f'tls_ca = "{ca}"\ntls_cert = "{cert}"\ntls_key = "{key}"\n')

        gone = tmp_path / "gone.pem"
        use_hosts(iris, tls(certs["ca"], gone, certs["client_key"]))
        assert_one_line_and_local_works(cli, iris, f"host cluster: tls_cert {gone} is not a file")
        garbage = tmp_path / "garbage.pem"
        garbage.write_text("not a certificate\n")
        use_hosts(iris, tls(certs["ca"], garbage, certs["client_key"]))
        report = first_report(cli("host", "check", "cluster", "--json"))
        assert report["problems"] == [
            f"host cluster: tls_cert {garbage} and tls_key {certs['client_key']} are not a PEM certificate "
            "and its private key: [SSL] PEM lib"]
        use_hosts(iris, tls(garbage, certs["client_cert"], certs["client_key"]))
        report = first_report(cli("host", "check", "cluster", "--json"))
        assert report["problems"][0].startswith(f"host cluster: tls_ca {garbage} is not a PEM CA certificate: ")
        # Negative control: the right files, the same scheduler takes the client.
        use_hosts(iris, tls(certs["ca"], certs["client_cert"], certs["client_key"]))
        assert first_report(cli("host", "check", "cluster", "--json"))["ok"] is True
    finally:
        secure.stop()
