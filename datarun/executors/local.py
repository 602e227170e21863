"""The embedded `local` host: the harness on this machine, without SSH.

The harness's host operations are called in-process (no interpreter start-up per call)
and its runner is a detached child, exactly as on an SSH host; only the transport
differs. Bundles and results move by rename and copy inside the workspace. What the
harness refuses (`HarnessError`) and what the file system does (`OSError`) leave here as
`HostError`, as they would from an SSH host.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from datarun.errors import HostDiskFull, HostError
from datarun.executors.base import NVIDIA_QUERY, PollReport, SyncResult, gpu_lines, poll_report
from datarun.executors.hosts import DEFAULT_PYTHON, Host, load_hosts
from datarun.remote import ops
from datarun.remote.archive import refusal
from datarun.remote.common import HarnessError, Layout, make_read_only
from datarun.remote.sensitive import result_files
from datarun.remote.sync import sync as remote_sync
from datarun.store.space import disk_full_message, folder_of, is_disk_full
from datarun.store.workspace import Workspace


def local_workdir(host: Host) -> Path:
    """The local host's working folder: `workdir` of hosts.toml (default ~/.datarun-host),
    outside the workspace, so nothing of the organiser's state lies below a task."""
    return Path(host.workdir).expanduser().absolute()


def local_layout(workspace: Workspace, host_name: str = "local") -> Layout:
    """The working folder of a local host, as this workspace sees it (its own folder in it)."""
    host = load_hosts(workspace.hosts_file).get(host_name) or Host(name=host_name)
    return Layout(local_workdir(host), workspace.id)


def sandbox_problem(host: Host) -> str | None:
    """Why a local host that sandboxes its tasks cannot, or None (a sandboxed child is
    tried for real: a few milliseconds)."""
    if host.isolation != "sandbox":
        return None
    from datarun.remote.sandbox import probe

    answer = probe()
    if answer["ok"]:
        return None
    return f"host {host.name} cannot sandbox tasks, so it gets none: {answer['reason']}"


@contextmanager
def host_errors(name: str, workdir: Path | None = None) -> Iterator[None]:
    """The harness's refusals and the file system's errors as datarun's HostError."""
    try:
        yield
    except HarnessError as error:
        if "no space left on the device of" in str(error):
            raise HostDiskFull(f"host {name}: {error}: free some space there") from None
        raise HostError(f"host {name}: {error}") from None
    except OSError as error:
        if is_disk_full(error):
            raise HostDiskFull(f"host {name}: {disk_full_message(folder_of(error, workdir or '.'))}") from None
        raise HostError(f"host {name}: {type(error).__name__}: {error}") from None


def shares_files(data_set: Path, tree: Path) -> bool:
    """Whether a host's data set is hard links to the workspace's tree (its first file)."""
    first = next((p for p in sorted(tree.rglob("*")) if p.is_file()), None)
    if first is None:
        return False
    try:
        return os.path.samefile(first, data_set / first.relative_to(tree))
    except OSError:
        return False


class LocalExecutor:
    def __init__(self, workspace: Workspace, host: Host):
        self.host = host
        self.layout = Layout(local_workdir(host), workspace.id)
        self.workdir = self.layout.root
        self.space = self.layout.space_id
        self.bundles_sent = False
        with host_errors(host.name, self.workdir):
            self.layout.make()  # WORKDIR 0700: the host's other users see none of it

    def connect(self) -> str | None:
        return None  # this machine: nothing to reach

    def prepare(self, data: dict[str, Path]) -> None:
        with host_errors(self.host.name, self.workdir):
            self._prepare(data)

    def _prepare(self, data: dict[str, Path]) -> None:
        """Put each data set where the runner reads it: hard links to the workspace's tree
        (one copy on this machine) when tasks run sandboxed, since a sandboxed task sees its
        data through a read-only mount; a copy when they do not (`isolation = "none"`: a
        task writing to its data must not reach the blob store) or when the workdir is on
        another file system."""
        link = self.host.isolation == "sandbox"
        for digest, folder in data.items():
            target = self.layout.data_set(digest)
            if self.layout.is_complete(target):
                if link or not shares_files(target, folder):
                    continue
                # Linked while the host sandboxed its tasks; it no longer does: copy it.
                stale = target.with_name(f".old-{digest}-{os.getpid()}")
                os.replace(target, stale)
                shutil.rmtree(stale, ignore_errors=True)
            shutil.rmtree(target, ignore_errors=True)
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".tmp-{digest}-{os.getpid()}")
            shutil.rmtree(tmp, ignore_errors=True)
            try:
                shutil.copytree(folder, tmp, copy_function=os.link if link else shutil.copy2)
            except OSError as error:
                if not link or is_disk_full(error):
                    raise
                shutil.rmtree(tmp, ignore_errors=True)  # another file system (EXDEV): a copy
                shutil.copytree(folder, tmp)
            self.layout.mark_complete(tmp)
            make_read_only(tmp)
            os.replace(tmp, target)

    def launch(self, bundles: list[Path]) -> dict[str, str]:
        with host_errors(self.host.name, self.workdir):
            refused = self._place(bundles)
            self._start()
        return refused

    def sync(self, bundles: list[Path], cleanup: list[str], poll: list[str], dest: Path,
             wait: float = 0.0) -> SyncResult:
        # Bundles are placed before anything else can fail: once the sync began, they are
        # taken as sent, and the next answer tells whether they are there.
        self.bundles_sent = True
        with host_errors(self.host.name, self.workdir):
            refused = self._place(bundles)
            report = remote_sync(str(self.workdir), cleanup=cleanup, poll=poll, slots=self.host.slots,
                                 threads=self.host.threads, start=bool(bundles), python=self.python,
                                 wait=wait, space=self.space)
            state = poll_report(report["poll"])
            finished = [key for key, task in state.tasks.items()
                        if task.state == "finished" and key not in refused]
            return SyncResult(poll=state, fetched=self._fetch(finished, dest), refused=refused)

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
            staging = self.layout.staging_marker(bundle.name)
            staging.touch()
            os.replace(staging, self.layout.marker(bundle.name))
        return refused

    @property
    def python(self) -> str | None:
        """The runner's interpreter: this one, unless hosts.toml names another for the local host."""
        return None if self.host.python == DEFAULT_PYTHON else self.host.python

    def _start(self) -> bool:
        """Start the runner unless one runs; True if this started it."""
        return bool(ops.start_runner(str(self.workdir), self.host.slots, self.host.threads,
                                     python=self.python, space=self.space)["started"])

    def warm(self) -> bool:
        """Start the runner ahead of training, so its imports are paid before tasks come;
        True if this started it."""
        with host_errors(self.host.name, self.workdir):
            return self._start()

    def poll(self, keys: list[str]) -> PollReport:
        with host_errors(self.host.name, self.workdir):
            return poll_report(ops.poll(str(self.workdir), list(keys), space=self.space))

    def fetch(self, keys: list[str], dest: Path) -> list[str]:
        with host_errors(self.host.name, self.workdir):
            return self._fetch(keys, dest)

    def _fetch(self, keys: list[str], dest: Path) -> list[str]:
        fetched = []
        for key in keys:
            if not self.layout.has_result(key):
                continue
            target = Path(dest) / key
            target.mkdir(parents=True, exist_ok=True)
            for path in result_files(self.layout, key):
                shutil.copyfile(path, target / path.name)
            fetched.append(key)
        return fetched

    def cleanup(self, keys: list[str]) -> None:
        if keys:
            with host_errors(self.host.name, self.workdir):
                ops.cleanup(str(self.workdir), list(keys), space=self.space)

    def cancel(self, keys: list[str]) -> None:
        if keys:
            with host_errors(self.host.name, self.workdir):
                ops.cancel(str(self.workdir), list(keys), space=self.space)

    def log(self, key: str) -> str:
        with host_errors(self.host.name, self.workdir):
            return str(ops.log(str(self.workdir), key, space=self.space).get("log", ""))

    def info(self) -> dict[str, Any]:
        with host_errors(self.host.name, self.workdir):
            return ops.info(str(self.workdir), space=self.space)

    def setup_environment(self, requirements: list[str]) -> dict[str, Any]:
        """Make the environment with the host's Python (this one unless hosts.toml names another)."""
        if self.python is None:
            from datarun.remote.envs import setup

            with host_errors(self.host.name):
                return setup(str(self.workdir), requirements, space=self.space)
        import json
        import subprocess

        from datarun.remote.ops import _package_root

        package, root = _package_root()
        done = subprocess.run([self.python, "-m", package, "envsetup", "--space", str(self.space),
                               str(self.workdir), *requirements], capture_output=True, text=True,
                              cwd=root, timeout=900)
        lines = [line for line in done.stdout.splitlines() if line.strip()]
        answer = json.loads(lines[-1]) if lines else {"error": done.stderr.strip()[-300:]}
        if done.returncode != 0 or "error" in answer:
            raise HostError(f"host {self.host.name}: {answer.get('error') or 'envsetup failed'}")
        return answer

    def memory_floor(self) -> dict[str, Any] | None:
        from datarun.remote.floor import measure

        with host_errors(self.host.name, self.workdir):
            return measure(str(self.workdir), space=self.space, isolation=self.host.isolation,
                           threads=self.host.threads, python=self.python)

    def usage(self) -> dict[str, Any]:
        with host_errors(self.host.name, self.workdir):
            return ops.usage(str(self.workdir), space=self.space)

    def sensitive(self, request: dict[str, Any]) -> dict[str, Any]:
        from datarun.remote.sensitive import request as host_request

        with host_errors(self.host.name):
            # Through JSON, as over SSH: the same answer (string keys) whatever the transport.
            return json.loads(json.dumps(host_request(str(self.workdir), self.space, json.dumps(request))))

    def gpu_names(self) -> list[str]:
        if not shutil.which(NVIDIA_QUERY[0]):
            return []
        try:
            return gpu_lines(subprocess.run(NVIDIA_QUERY, capture_output=True, text=True, timeout=10).stdout)
        except (OSError, subprocess.TimeoutExpired):
            return []

    def clean(self, keep: list[str], force: bool = False) -> dict[str, Any]:
        with host_errors(self.host.name, self.workdir):
            return ops.clean(str(self.workdir), list(keep), force=force, space=self.space)

    def stop_runner(self, timeout: float = 10.0) -> bool:
        """Stop this host's runner (SIGTERM, by the PID it recorded); True if one was running.

        The PID is checked against the process's command line first, so a recycled PID of
        some other process is never signalled.
        """
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
