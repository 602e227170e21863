"""The embedded `local` host: the harness on this machine, without SSH.

The harness's host operations are called in-process (no interpreter start-up per call)
and its runner is a detached child, exactly as on an SSH host; only the transport
differs. Bundles and results move by rename and copy inside the workspace.
"""

import os
import shutil
from pathlib import Path

from datarun.executors.base import PollReport, SyncResult, poll_report
from datarun.executors.hosts import DEFAULT_PYTHON
from datarun.remote import ops
from datarun.remote.archive import refusal
from datarun.remote.common import Layout, make_read_only
from datarun.remote.sync import sync as remote_sync

RESULT_FILES = ("result.json", "output.log")
WARM_SWITCH = "DATARUN_WARM_RUNNER"  # "0" leaves the runner to start with training


def local_workdir(host) -> Path:
    """The local host's working folder: `workdir` of hosts.toml (default ~/.datarun-host),
    outside the workspace, so nothing of the organiser's state lies below a task."""
    return Path(host.workdir).expanduser().absolute()


def local_layout(workspace, host_name: str = "local") -> Layout:
    """The working folder of a local host, as this workspace sees it (its own folder in it)."""
    from datarun.executors.hosts import Host, load_hosts

    host = load_hosts(workspace.hosts_file).get(host_name) or Host(name=host_name)
    return Layout(local_workdir(host), workspace.id)


def sandbox_problem(host) -> str | None:
    """Why a local host that sandboxes its tasks cannot, or None (a sandboxed child is
    tried for real: a few milliseconds)."""
    if host.isolation != "sandbox":
        return None
    from datarun.remote.sandbox import probe

    answer = probe()
    if answer["ok"]:
        return None
    return f"host {host.name} cannot sandbox tasks, so it gets none: {answer['reason']}"


class LocalExecutor:
    def __init__(self, workspace, host):
        self.host = host
        self.layout = Layout(local_workdir(host), workspace.id)
        self.workdir = self.layout.root
        self.space = self.layout.space_id
        self.layout.make()  # WORKDIR 0700: the host's other users see none of it

    def prepare(self, data: dict[str, Path]) -> None:
        for digest, folder in data.items():
            target = self.layout.data / digest
            if (target / ".complete").exists():
                continue
            shutil.rmtree(target, ignore_errors=True)
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".tmp-{digest}-{os.getpid()}")
            shutil.rmtree(tmp, ignore_errors=True)
            # A copy, not hard links: a task writing to its data must not reach the blob store.
            shutil.copytree(folder, tmp)
            (tmp / ".complete").touch()
            make_read_only(tmp)
            os.replace(tmp, target)

    def launch(self, bundles: list[Path]) -> dict[str, str]:
        refused = self._place(bundles)
        self.start()
        return refused

    def sync(self, bundles: list[Path], cleanup: list[str], poll: list[str], dest: Path,
             wait: float = 0.0) -> SyncResult:
        refused = self._place(bundles)
        report = remote_sync(str(self.workdir), cleanup=cleanup, poll=poll, slots=self.host.slots,
                             threads=self.host.threads, start=bool(bundles), python=self.python,
                             wait=wait, space=self.space)
        state = poll_report(report["poll"])
        finished = [key for key, task in state.tasks.items()
                    if task.state == "finished" and key not in refused]
        return SyncResult(poll=state, fetched=self.fetch(finished, dest), refused=refused)

    def _place(self, bundles: list[Path]) -> dict[str, str]:
        """Move the bundles into place and queue them; those whose folder is there already
        are refused, as the harness's `accept` refuses them: {key: reason}."""
        self.layout.make()
        refused = {}
        for bundle in bundles:
            target = self.layout.task(bundle.name)
            if target.exists() or self.layout.marker(bundle.name).exists():
                refused[bundle.name] = refusal(self.layout, bundle.name)
                continue
            shutil.move(str(bundle), target)
            # The marker appears only once the bundle is whole: the runner never sees half a task.
            tmp_marker = self.layout.inbox / f".{bundle.name}"
            tmp_marker.touch()
            os.replace(tmp_marker, self.layout.marker(bundle.name))
        return refused

    @property
    def python(self) -> str | None:
        """The runner's interpreter: this one, unless hosts.toml names another for the local host."""
        return None if self.host.python == DEFAULT_PYTHON else self.host.python

    def start(self) -> None:
        ops.start_runner(str(self.workdir), self.host.slots, self.host.threads, python=self.python,
                         space=self.space)

    def poll(self, keys: list[str]) -> PollReport:
        report = ops.poll(str(self.workdir), list(keys), space=self.space)
        return poll_report(report)

    def fetch(self, keys: list[str], dest: Path) -> list[str]:
        fetched = []
        for key in keys:
            source = self.layout.task(key)
            if not (source / "result.json").exists():
                continue
            target = Path(dest) / key
            target.mkdir(parents=True, exist_ok=True)
            for path in source.iterdir():
                if path.is_file() and not path.is_symlink() and (
                    path.name in RESULT_FILES or path.suffix == ".npy" and path.name.startswith("y_pred")
                ):
                    shutil.copyfile(path, target / path.name)
            fetched.append(key)
        return fetched

    def cleanup(self, keys: list[str]) -> None:
        if keys:
            ops.cleanup(str(self.workdir), list(keys), space=self.space)

    def cancel(self, keys: list[str]) -> None:
        if keys:
            ops.cancel(str(self.workdir), list(keys), space=self.space)

    def log(self, key: str) -> str:
        return ops.log(str(self.workdir), key, space=self.space).get("log", "")

    def info(self) -> dict:
        return ops.info(str(self.workdir), space=self.space)

    def usage(self) -> dict:
        return ops.usage(str(self.workdir), space=self.space)

    def clean(self, keep: list[str], force: bool = False) -> dict:
        return ops.clean(str(self.workdir), list(keep), force=force, space=self.space)

    def stop_runner(self, timeout: float = 10.0) -> bool:
        """Stop this host's runner (SIGTERM, by the PID it recorded); True if one was running.

        The PID is checked against the process's command line first, so a recycled PID of
        some other process is never signalled.
        """
        import json
        import signal

        import psutil

        try:
            pid = json.loads(self.layout.runner_json.read_text())["pid"]
            process = psutil.Process(int(pid))
            command = process.cmdline()
        except (OSError, ValueError, KeyError, TypeError, psutil.Error):
            return False
        if "serve" not in command or str(self.workdir) not in command or (
                self.space is not None and self.space not in command):
            return False
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except psutil.TimeoutExpired:
            process.kill()
        return True

    def close(self) -> None:
        pass


def warm_runners(workspace) -> list[str]:
    """Start the local hosts' runners ahead of training; the names of those started.

    A runner pays its imports (numpy, pandas, scikit-learn: about a second) once, when it
    starts. `datarun submit` calls this so that second passes while the organiser types
    the next command, not at the start of `datarun train`. Best effort: a runner that
    cannot start here is reported by the dispatcher that needs it. An idle runner exits
    after a minute.
    """
    if os.environ.get(WARM_SWITCH, "1") == "0":
        return []
    from datarun.errors import DatarunError
    from datarun.executors.hosts import load_hosts
    from datarun.remote.common import HarnessError

    try:
        hosts = load_hosts(workspace.hosts_file)
    except DatarunError:
        return []
    started = []
    for host in hosts.values():
        if host.executor != "local":
            continue
        executor = LocalExecutor(workspace, host)
        try:
            if ops.start_runner(str(executor.workdir), host.slots, host.threads,
                                python=executor.python, space=executor.space)["started"]:
                started.append(host.name)
        except (HarnessError, OSError):
            continue
    return started

