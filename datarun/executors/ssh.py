"""The SSH executor: the harness on a server, over one reused SSH connection.

It speaks docs/PROTOCOL.md exactly as the local executor does; only the transport
differs. What it sends is built to keep round trips few, since a task's overhead over
the local host is mostly round trips:

- the harness and each data set travel once per host and content hash
  (`datarun.executors.sshhost`, which this executor extends);
- `launch` is one tar of all bundles of the call, one SFTP put, and one command that runs
  the harness's `accept` and then `start`;
- `fetch` is one `pack` command, one SFTP get, and one SFTP remove.

Every command line is built from quoted arguments (`shlex.join`); nothing from a key, a
path or a name is ever pasted into a shell unquoted.
"""

import json
import os
import shlex
import shutil
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from datarun.errors import HostError
from datarun.executors.base import NVIDIA_QUERY, PollReport, SyncResult, gpu_lines, poll_report
from datarun.executors.sshhost import (
    HARNESS_PACKAGE,
    MAX_RESULT_ARCHIVE,
    REQUIRED_LIBRARIES,
    SSHHost,
    check_download,
    check_key,
    shell_and,
    staged_harness,
    tasks_and_data,
)
from datarun.executors.sshsession import HarnessSession
from datarun.executors.tarsafe import MAX_MEMBER_BYTES, extract_results

__all__ = ["HARNESS_PACKAGE", "MAX_RESULT_ARCHIVE", "SSHExecutor", "check_download", "check_key",
           "shell_and", "staged_harness"]


class SSHExecutor(SSHHost):
    def _put_bundles(self, bundles: list[Path]) -> str:
        """Upload the bundles as one tar of `tasks/<key>/...`; its path on the host."""
        with tempfile.TemporaryDirectory(prefix="datarun-ship-") as tmp:
            archive = Path(tmp) / "bundles.tar"
            with tarfile.open(archive, "w", dereference=True) as tar:
                for bundle in bundles:
                    tar.add(bundle, arcname=f"{tasks_and_data[0]}/{Path(bundle).name}")
            upload = self._upload_path("bundles")
            self.conn.put(archive, upload)
        return upload

    def launch(self, bundles: list[Path]) -> dict[str, str]:
        if not bundles:
            return {}
        for bundle in bundles:
            check_key(Path(bundle).name)
        self.prepare({})
        if not self._libraries_checked:
            self.check_libraries(self.run_harness("info"))
        upload = self._put_bundles(bundles)
        python = [self.host.python, "-m", HARNESS_PACKAGE]
        space = self.space_args()
        command = shell_and(
            ["cd", self.harness_dir()],
            [*python, "accept", *space, self.workdir, upload],
            [*python, "start", *space, self.workdir, "--slots", str(self.host.slots),
             "--threads", str(self.host.threads)],
        )
        # Two JSON lines come back, accept's then start's: the refusals are in the first.
        result = self.conn.run(command)
        self._harness_json(result, "accept/start")
        accepted: dict[str, Any] = next((json.loads(line) for line in result.stdout.splitlines()
                         if line.startswith("{") and '"refused"' in line), {})
        # Like the local executor, a launched bundle is consumed: the host has it now.
        for bundle in bundles:
            shutil.rmtree(bundle, ignore_errors=True)
        return dict(accepted.get("refused") or {})

    def check_libraries(self, info: dict[str, Any]) -> None:
        """Refuse a host whose Python lacks what the runner imports: its tasks would never start."""
        missing = [REQUIRED_LIBRARIES.get(name, name) for name in info.get("missing") or []]
        if missing:
            raise HostError(
                f"host {self.host.name}: its Python lacks {', '.join(missing)}: install them there "
                f"(`{self.host.python} -m pip install {' '.join(missing)}`)"
            )
        self._libraries_checked = True

    # --- following and collecting -------------------------------------------------

    def session(self) -> HarnessSession:
        """The harness process that serves this connection's syncs, one JSON line each way."""
        if self._session is None:
            self._session = HarnessSession(self.conn, self.harness_command("session"), self.host.name)
        return self._session

    def sync(self, bundles: list[Path], cleanup: list[str], poll: list[str], dest: Path,
             wait: float = 0.0) -> SyncResult:
        """One request on the harness session for the whole cycle (plus one put with new
        bundles and one get with results)."""
        self.bundles_sent = False  # until the command that accepts them is on its way
        cleanup = [check_key(key) for key in cleanup]
        poll = [check_key(key) for key in poll]
        for bundle in bundles:
            check_key(Path(bundle).name)
        self.prepare({})
        if bundles and not self._libraries_checked:
            self.check_libraries(self.run_harness("info"))
        if self._pack_path is None:
            # One fixed path, overwritten by every sync: only one dispatcher runs at a time.
            self._pack_path = str(self.layout.space / f".sync-results-{self.host.name}.tar")
        request: dict[str, Any] = {"cleanup": cleanup, "poll": poll, "pack_out": self._pack_path,
                         "slots": self.host.slots, "threads": self.host.threads, "wait": wait}
        if bundles:
            request["archive"] = self._put_bundles(bundles)
        # The archive's digest comes back with the answer, so a download cut short or
        # damaged on the way is refused whole and fetched again at the next sync.
        self.bundles_sent = bool(bundles)
        report = self.session().request(request, self.host.command_timeout + wait)
        pack = report.get("pack") or {}
        for bundle in bundles:
            shutil.rmtree(bundle, ignore_errors=True)
        refused = {str(key): str(reason) for key, reason in
                   ((report.get("accepted") or {}).get("refused") or {}).items()}
        packed = [key for key in pack.get("packed") or [] if key in poll and key not in refused]
        fetched: list[str] = []
        if packed:
            fetched = self._download_results(self._pack_path, pack, Path(dest), packed)
        return SyncResult(poll=poll_report(report.get("poll") or {}), fetched=fetched, refused=refused)

    def _download_results(self, remote: str, pack: dict[str, Any], dest: Path,
                          keys: list[str]) -> list[str]:
        """Fetch the results archive the host announced (its size and digest) and unpack it.

        The archive lands in a new file of an unpredictable name (mkstemp, 0600) in dest,
        inside the workspace's scratch folder, is read to the announced size and no further,
        within a time limit from that size, and is removed once unpacked."""
        where = f"host {self.host.name}"
        if "size" not in pack:
            raise HostError(f"{where}: the harness announced no size for its results archive "
                            "(an older harness?): run the command again to ship the current one")
        dest.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=".results-", suffix=".tar", dir=dest)
        local = Path(name)
        try:
            with os.fdopen(fd, "wb") as out:
                self.conn.get(remote, out, pack["size"], MAX_RESULT_ARCHIVE)
            check_download(local, pack.get("sha256"), self.host.name)
            return extract_results(local, dest, keys, where, MAX_MEMBER_BYTES)
        finally:
            local.unlink(missing_ok=True)

    def poll(self, keys: list[str]) -> PollReport:
        keys = [check_key(key) for key in keys]
        self.prepare({})
        return poll_report(self.run_harness("poll", *keys))

    def fetch(self, keys: list[str], dest: Path) -> list[str]:
        keys = [check_key(key) for key in keys]
        if not keys:
            return []
        self.prepare({})
        remote = self._upload_path("results")
        pack = self.run_harness("pack", remote, *keys)
        try:
            if not pack.get("packed"):
                return []
            return self._download_results(remote, pack, Path(dest), keys)
        finally:
            self.conn.remove(remote)

    def cleanup(self, keys: list[str]) -> None:
        keys = [check_key(key) for key in keys]
        if keys:
            self.prepare({})
            self.run_harness("cleanup", *keys)

    def cancel(self, keys: list[str]) -> None:
        keys = [check_key(key) for key in keys]
        if keys:
            self.prepare({})
            self.run_harness("cancel", *keys)

    def log(self, key: str) -> str:
        self.prepare({})
        return self.run_harness("log", check_key(key)).get("log", "")

    def info(self) -> dict[str, Any]:
        self.prepare({})
        return self.run_harness("info")

    def usage(self) -> dict[str, Any]:
        self.prepare({})
        return self.run_harness("usage")

    def memory_floor(self) -> dict[str, Any] | None:
        """An empty task run there: a runner's start (its imports) and one task."""
        from datarun.remote.floor import WAIT

        self.prepare({})
        return self.run_harness("floor", "--isolation", self.host.isolation, "--threads",
                                str(self.host.threads), timeout=max(self.host.command_timeout, WAIT + 10))

    def setup_environment(self, requirements: list[str]) -> dict:
        """Make the environment for `requirements` on the host (pip may take minutes)."""
        self.prepare({})
        return self.run_harness("envsetup", *requirements, timeout=max(self.host.command_timeout, 900.0))

    def gpu_names(self) -> list[str]:
        command = "command -v nvidia-smi >/dev/null 2>&1 && " + shlex.join(NVIDIA_QUERY) + " || true"
        return gpu_lines(self.conn.run(command).stdout)

    def clean(self, keep: list[str], force: bool = False) -> dict[str, Any]:
        keep = [check_key(key) for key in keep]
        self.prepare({})
        return self.run_harness("clean", *(["--force"] if force else []), "--keep", *keep)

    def sensitive(self, request: dict) -> dict:
        self.prepare({})
        return self.run_harness("sensitive", json.dumps(request))

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
        self.conn.close()
