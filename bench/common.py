"""Helpers the benchmarks share: temp workspaces, timed subprocesses, runner clean-up, output.

Every figure is taken from outside, on a real subprocess (the `datarun` command an
organiser runs, or a plain Python a baseline would start), so start-up costs count
the same way on both sides of a comparison. Each bench builds its kits and workspaces
in a temporary folder, stops the local runner it caused to start (by the PID in
runner.json) and removes the folder, even when it fails half-way.
"""

import contextlib
import json
import os
import resource
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"
IRIS = EXAMPLES / "iris"


def datarun_command() -> list[str]:
    """The installed `datarun` entry point of this Python's environment, else `python -m datarun`."""
    script = Path(sys.executable).with_name("datarun")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "datarun"]


@contextlib.contextmanager
def temp_folder(prefix: str) -> Iterator[Path]:
    """A scratch folder; on the way out, stop runners started in it, then remove it."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield folder
    finally:
        for workdir in folder.glob("**/.datarun/hosts/*"):
            stop_runners_of(workdir)
        shutil.rmtree(folder, ignore_errors=True)


def stop_runners_of(workdir: Path) -> None:
    """Stop the runners of a host workdir: its own and each workspace folder's in it."""
    for runner_json in [workdir / "runner.json", *workdir.glob("workspaces/*/runner.json")]:
        stop_runner(runner_json)


def stop_runner(runner_json: Path, timeout: float = 10.0) -> None:
    """SIGTERM the harness runner recorded in runner.json, if it is alive and is one."""
    try:
        pid = int(json.loads(runner_json.read_text())["pid"])
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError, KeyError, TypeError):
        return
    if b"serve" not in cmdline:
        return  # the PID was reused by something else: not ours to stop
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
        # The runner is a detached grandchild: it is reaped by init, we only wait for it to go.
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return
        if state == "Z":
            return
        time.sleep(0.02)


def run(command: list[str], env: dict | None = None, check: bool = True,
        cwd: Path | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=cwd)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited {result.returncode}:\n{result.stderr[-2000:]}")
    return result


def timed(command: list[str], env: dict | None = None, check: bool = True,
          cwd: Path | None = None) -> tuple[float, subprocess.CompletedProcess]:
    """Wall seconds of one subprocess, from fork to exit."""
    start = time.perf_counter()
    result = run(command, env=env, check=check, cwd=cwd)
    return time.perf_counter() - start, result


def timed_cpu(command: list[str], env: dict | None = None) -> tuple[float, float]:
    """(wall seconds, CPU seconds user+sys) of one subprocess and the children it waited for."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall, _ = timed(command, env=env)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def median_time(command: list[str], runs: int, env: dict | None = None) -> dict:
    """Median wall and CPU seconds over `runs` runs. CPU time barely moves when other work
    shares the cores; wall time does, so both are reported."""
    samples = [timed_cpu(command, env=env) for _ in range(runs)]
    walls = [wall for wall, _ in samples]
    return {"median": statistics.median(walls), "runs": walls,
            "cpu_median": statistics.median(cpu for _, cpu in samples)}


def load_note() -> str:
    """The 1-minute load average against the cores: timings are only as quiet as the machine."""
    return f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores"


class Workspace:
    """A datarun workspace driven through the real CLI, with DATARUN_HOME pointing at it."""

    def __init__(self, root: Path, slots: int = 1, threads: int = 1, warm: bool = False,
                 isolation: str = "sandbox", code: Path | None = None):
        """warm: whether `submit` starts the local runner ahead of training (datarun's
        default). Off unless asked, so a bench times a runner started by `train` itself.
        The local host works in a folder of the bench's own (not ~/.datarun-host).
        code: a folder holding another version of the `datarun` package (`code_at`), run
        as `python -m datarun` with that folder first on PYTHONPATH, instead of this one."""
        self.root = root
        self.env = dict(os.environ, DATARUN_HOME=str(root), DATARUN_WARM_RUNNER="1" if warm else "0")
        self.command = datarun_command()
        if code is not None:
            self.env["PYTHONPATH"] = str(code)
            self.command = [sys.executable, "-m", "datarun"]
        run(self.command + ["init", str(root)], env=self.env)
        self.host_dir = root / ".host"
        (root / "hosts.toml").write_text(
            f'[hosts.local]\nexecutor = "local"\nslots = {slots}\nthreads = {threads}\n'
            f'workdir = "{self.host_dir}"\nisolation = "{isolation}"\n')

    @property
    def db_path(self) -> Path:
        return self.root / ".datarun" / "datarun.db"

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        return run(self.command + [str(a) for a in args], env=self.env)

    def cli_json(self, *args: str):
        return json.loads(self.cli(*args, "--json").stdout)

    def timed_cli(self, *args: str) -> tuple[float, subprocess.CompletedProcess]:
        return timed(self.command + [str(a) for a in args], env=self.env)

    def query(self, sql: str, args: tuple = ()) -> list[tuple]:
        with contextlib.closing(sqlite3.connect(self.db_path)) as conn:
            return conn.execute(sql, args).fetchall()

    def stop_runners(self) -> None:
        for workdir in [self.host_dir, *(self.root / ".datarun" / "hosts").glob("*")]:
            stop_runners_of(workdir)


def code_at(revision: str, dest: Path) -> tuple[Path, str]:
    """The `datarun` package as it is at a git revision of this repository, extracted
    (`git archive`, nothing of the working tree or of git's state touched) into dest, and
    the revision's short hash: a bench compares it with the current code in the same run."""
    described = run(["git", "-C", str(REPO), "rev-parse", "--short", f"{revision}^{{commit}}"])
    archive = subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", revision, "datarun"],
                             capture_output=True, check=True)
    dest.mkdir(parents=True)
    import io
    import tarfile

    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(dest, filter="data")
    return dest, described.stdout.strip()


def make_kit(dest: Path, n_splits: int, submissions: dict[str, str], source: Path = IRIS,
             keep: tuple[str, ...] = ()) -> Path:
    """A copy of a native kit with `n_splits` folds, the source's submissions named in
    `keep`, and extra submissions given as {name: estimator.py source}."""
    import tomllib

    dest.mkdir(parents=True)
    shutil.copytree(source / "data", dest / "data")
    text = (source / "problem.toml").read_text()
    current = tomllib.loads(text)["cv"]["n_splits"]
    text = text.replace(f"n_splits = {current}", f"n_splits = {n_splits}", 1)
    if tomllib.loads(text)["cv"]["n_splits"] != n_splits:
        raise RuntimeError(f"could not set n_splits in {source / 'problem.toml'}")
    (dest / "problem.toml").write_text(text)
    for name in keep:
        shutil.copytree(source / "submissions" / name, dest / "submissions" / name)
    for name, code in submissions.items():
        (dest / "submissions" / name).mkdir(parents=True)
        (dest / "submissions" / name / "estimator.py").write_text(code)
    return dest


def export_folds(workspace: Workspace, problem: str, dest: Path) -> int:
    """Write the problem's frozen folds as fold<k>_train.npy / fold<k>_valid.npy for the
    baselines, so they fit exactly the rows datarun fits. Returns the number of folds."""
    import numpy as np

    blobs = workspace.root / ".datarun" / "blobs"
    rows = workspace.query(
        "SELECT fold, train_hash, valid_hash FROM folds WHERE problem = ? ORDER BY fold", (problem,))
    from datarun.store.blobs import BlobStore

    store = BlobStore(blobs)
    dest.mkdir(parents=True, exist_ok=True)
    for fold, train_hash, valid_hash in rows:
        np.save(dest / f"fold{fold}_train.npy", store.get_array(train_hash), allow_pickle=False)
        np.save(dest / f"fold{fold}_valid.npy", store.get_array(valid_hash), allow_pickle=False)
    return len(rows)


def recorded_model_time(workspace: Workspace) -> tuple[int, int, float]:
    """(tasks, tasks done, sum of the train + valid + test seconds datarun recorded)."""
    total, done, seconds = workspace.query(
        "SELECT count(*), sum(state = 'done'), "
        "coalesce(sum(train_time + valid_time + test_time), 0) FROM tasks")[0]
    return total, done or 0, seconds


def verdict(value: float, goal: float) -> str:
    return "met" if value <= goal else "MISSED"


def print_table(title: str, header: list[str], rows: list[list[str]], out=sys.stdout) -> None:
    """A plain fixed-width table: the first column left-aligned, the others right-aligned."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        parts = [str(cells[0]).ljust(widths[0])]
        parts += [str(c).rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True)]
        return "  ".join(parts).rstrip()

    print(title, file=out)
    print(line(header), file=out)
    for row in rows:
        print(line(row), file=out)


def finish(figures: dict, text_lines: list[str], as_json: bool) -> None:
    """The figures as JSON on stdout (text on stderr), or the text on stdout."""
    out = sys.stderr if as_json else sys.stdout
    for text in text_lines:
        print(text, file=out)
    if as_json:
        json.dump(figures, sys.stdout, indent=2)
        sys.stdout.write("\n")


# Kept importable from here, as the benches always did: the baselines and the SSH hosts.
from baselines import (  # noqa: E402, F401
    BASELINE_COMMON,
    LOOP_SCRIPT,
    TASK_SCRIPT,
    run_loop_baseline,
    run_process_per_task_baseline,
)
from sshhosts import (  # noqa: E402, F401
    TESTS,
    RemoteWorkdir,
    ssh_servers,
    ssh_setup_missing,
    ssh_traffic,
    train_in_process,
    use_ssh_hosts,
)
