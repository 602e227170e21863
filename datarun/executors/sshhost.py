"""A host over SSH: its workdir's paths, the harness's command lines, and shipping.

What the SSH executor (`datarun.executors.ssh`) stands on: the connection, the paths of
the workspace's folders on the host, the harness's commands (quoted), and shipping what
tasks need before any runs, with round trips kept few: the harness and each data set
travel once per host and content hash; one command asks which of them the host already
has (and how much disk is free), and what this process has seen present is not asked
again. Every command line is built from quoted arguments (`shlex.join`); nothing from a
key, a path or a name is ever pasted into a shell unquoted. The harness itself is
unpacked with `tar`, since it cannot run before it is there.
"""


import atexit
import json
import logging
import os
import shlex
import shutil
import tarfile
import tempfile
import uuid
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from datarun.errors import HostDiskFull, HostError, UsageError
from datarun.executors.sshconn import (
    CommandResult,
    SSHConnection,
    fingerprint,
    load_ssh_config,
    resolve_target,
)
from datarun.executors.sshsession import HarnessSession
from datarun.remote.common import Layout
from datarun.store.blobs import sha256_file, tree_hash

log = logging.getLogger("datarun.ship")

if TYPE_CHECKING:
    from datarun.executors.hosts import Host
    from datarun.store.workspace import Workspace

HARNESS_SOURCE = Path(__file__).resolve().parent.parent / "remote"
HARNESS_PACKAGE = "datarun_remote"
tasks_and_data = Layout.ARCHIVE_FOLDERS  # the archive `accept` takes: tasks/<key>/, data/<hash>/
KEY_CHARS = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-")
# Unpacking needs the archive and its contents side by side, plus some room to spare.
DISK_MARGIN = 16 * 1024**2
MAX_RESULT_ARCHIVE = 4 * 1024**3
REQUIRED_LIBRARIES = {"numpy": "numpy", "pandas": "pandas", "sklearn": "scikit-learn",
                      "psutil": "psutil"}


@cache
def staged_harness() -> tuple[str, Path]:
    """The harness files (no caches) copied to a folder of their own, and their tree hash."""
    folder = tempfile.mkdtemp(prefix="datarun-harness-")
    owner = os.getpid()  # a forked child that exits normally must not remove it

    @atexit.register
    def remove() -> None:
        if os.getpid() == owner:
            shutil.rmtree(folder, ignore_errors=True)

    stage = Path(folder) / HARNESS_PACKAGE
    shutil.copytree(HARNESS_SOURCE, stage, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return tree_hash(stage), stage


def check_key(key: str) -> str:
    if not key or not set(key) <= KEY_CHARS or key in (".", ".."):
        raise UsageError(f"bad task key {key!r}: use only letters, digits, '_', '-' and '.'")
    return key


def check_download(local: Path, digest: str | None, host_name: str) -> None:
    """Refuse a downloaded results archive whose SHA-256 is not the one the host computed."""
    if digest is None:
        raise HostError(f"host {host_name}: sync printed no digest of its results archive "
                        "(is `sha256sum` installed there?)")
    if sha256_file(local) != digest:
        raise HostError(f"host {host_name}: the results archive arrived damaged (SHA-256 differs "
                        "from the host's); it is fetched again at the next sync")


def shell_and(*commands: list[str]) -> str:
    """`a && b && c` with every argument of every command quoted."""
    return " && ".join(shlex.join(command) for command in commands)


class SSHHost:
    def __init__(self, workspace: "Workspace | None", host: "Host",
                 connection: SSHConnection | None = None) -> None:
        self.host = host
        self.workspace = workspace
        known_hosts = workspace.known_hosts_path if workspace is not None else None
        if connection is None:
            connection = SSHConnection(resolve_target(host, load_ssh_config()), known_hosts)
        self.conn = connection
        # The workspace's own folder in the host's workdir (None: the workdir itself, for a
        # harness driven without a workspace).
        self.space: str | None = workspace.id if workspace is not None else None
        self._workdir: str | None = None
        self._layout: Layout | None = None
        self._present: set[str] = set()  # remote folders known complete on this connection
        self._libraries_checked = False
        self._runner_started = False
        self._pack_path: str | None = None
        self._session: HarnessSession | None = None
        self.bundles_sent = False  # whether the last sync got as far as sending its bundles
        self.data_resumed_from: int | None = None  # bytes of the last data set already on the host
        self.data_shipped_by: str | None = None  # how the last data set went: ssh, paramiko(-process)

    def connect(self) -> str | None:
        """Connect and authenticate now, the host key checked; the key's type and fingerprint."""
        self.conn.connect()
        key = self.conn.host_key
        return None if key is None else f"{key.get_name()} {fingerprint(key)}"

    # --- paths and commands -------------------------------------------------------

    @property
    def workdir(self) -> str:
        if self._workdir is None:
            self._workdir = self.conn.expand(self.host.workdir).rstrip("/") or "/"
        return self._workdir

    @property
    def layout(self) -> Layout:
        """The host's workdir as this workspace sees it (paths on the host, built here)."""
        if self._layout is None:
            self._layout = Layout(self.workdir, self.space)
        return self._layout

    def harness_dir(self) -> str:
        return str(self.layout.harness_copy(staged_harness()[0]))

    def space_args(self) -> list[str]:
        return ["--space", self.space] if self.space is not None else []

    def harness_command(self, command: str, *args: str) -> str:
        """`cd HARNESS && PYTHON -m datarun_remote COMMAND --space ID WORKDIR ARGS...`, quoted
        (the option first: keys given after it would not be taken as the command's)."""
        return shell_and(
            ["cd", self.harness_dir()],
            [self.host.python, "-m", HARNESS_PACKAGE, command, *self.space_args(), self.workdir, *args],
        )

    def _upload_path(self, kind: str) -> str:
        return str(self.layout.space / f".{kind}-{uuid.uuid4().hex}.tar")

    def _fail(self, result: CommandResult, what: str) -> HostError:
        """The one-line error for a command that failed, naming what to fix."""
        name, text = self.host.name, (result.stderr + "\n" + result.stdout)
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        last = lines[-1] if lines else f"exit status {result.status}"
        if result.status == 127:
            return HostError(
                f"host {name}: {self.host.python!r} was not found on the host: install python3 "
                "(3.9 or newer) there, or set `python` in hosts.toml"
            )
        if f"No module named {HARNESS_PACKAGE}" in text or (
                "cd" in text and self.harness_dir() in text):
            self._present.discard(self.harness_dir())
            return HostError(
                f"host {name}: the harness in {self.harness_dir()} is gone: run the command "
                "again to ship it anew"
            )
        if "No space left" in text or "no space left on the device of" in text:
            return HostDiskFull(f"host {name}: no space left on the device of {self.workdir} ({last}): "
                                "free some space there")
        if "Permission denied" in text or "Read-only file system" in text:
            return HostError(
                f"host {name}: workdir {self.workdir} is not writable ({last}): fix its "
                "permissions or set another `workdir` in hosts.toml"
            )
        for line in reversed(lines):
            if line.startswith("{"):
                try:
                    error = json.loads(line).get("error")
                except ValueError:
                    continue
                if error:
                    return HostError(f"host {name}: harness {what} failed: {error}")
        return HostError(f"host {name}: {what} failed ({last})")

    def run_harness(self, command: str, *args: str, timeout: float | None = None) -> dict[str, Any]:
        result = self.conn.run(self.harness_command(command, *args), timeout=timeout)
        return self._harness_json(result, command)

    def _harness_json(self, result: CommandResult, what: str) -> dict[str, Any]:
        if result.status != 0:
            raise self._fail(result, what)
        lines = [line for line in result.stdout.splitlines() if line.strip()]
        try:
            return json.loads(lines[-1])
        except (IndexError, ValueError):
            raise HostError(
                f"host {self.host.name}: harness {what} printed no JSON: {result.stdout[-200:]!r}"
            ) from None

    # --- shipping -----------------------------------------------------------------

    def _missing(self, folders: list[str]) -> tuple[list[str], int | None]:
        """Which of these remote folders lack `.complete`, and the free disk, in one command."""
        layout = self.layout
        made = [str(path) for path in (layout.harness, layout.data, layout.tasks, layout.inbox)]
        # umask 077: a WORKDIR made here is its owner's alone (the harness tightens an
        # older, looser one when it next makes its layout).
        command = (
            "umask 077 && " + shlex.join(["mkdir", "-p", *made])
            + " && for f in " + " ".join(shlex.quote(f) for f in folders)
            + f'; do [ -e "$f/{Layout.COMPLETE}" ] && echo "have $f"; done; '
            + shlex.join(["df", "-Pk", self.workdir])
        )
        result = self.conn.run(command)
        if result.status != 0:
            raise self._fail(result, "preparing the workdir")
        have = {line[5:] for line in result.stdout.splitlines() if line.startswith("have ")}
        free = None
        df_lines = [line for line in result.stdout.splitlines() if not line.startswith("have ")]
        if df_lines:
            try:
                free = int(df_lines[-1].split()[3]) * 1024
            except (IndexError, ValueError):
                free = None
        return [f for f in folders if f not in have], free

    def _check_room(self, needed: int, free: int | None) -> None:
        if free is not None and needed + DISK_MARGIN > free:
            raise HostDiskFull(
                f"host {self.host.name}: the disk of {self.workdir} is full ({free // 1024**2} MiB "
                f"free, {(needed + DISK_MARGIN) // 1024**2} MiB needed): free some space"
            )

    def prepare(self, data: dict[str, Path]) -> None:
        harness_hash, stage = staged_harness()
        wanted: dict[str, Path | None] = {self.harness_dir(): None}
        for digest, folder in data.items():
            check_key(digest)
            wanted[str(self.layout.data_set(digest))] = Path(folder)
        unknown = [remote for remote in wanted if remote not in self._present]
        if not unknown:
            return
        missing, free = self._missing(unknown)
        self._present.update(set(unknown) - set(missing))
        if data and self.harness_dir() not in missing:
            self._start_runner()
        if not missing:
            return
        with tempfile.TemporaryDirectory(prefix="datarun-ship-") as tmp:
            if self.harness_dir() in missing:
                archive = Path(tmp) / "harness.tar"
                with tarfile.open(archive, "w") as tar:
                    tar.add(stage, arcname=HARNESS_PACKAGE)
                self._check_room(2 * archive.stat().st_size, free)
                upload = self._upload_path("harness")
                self.conn.put(archive, upload)
                # The harness cannot unpack itself: plain tar into a folder of this upload's
                # own, `.complete` last, read-only (nothing running as the host's user
                # rewrites it), then renamed into place; if another upload got there first,
                # ours goes.
                unpacked = f"{self.harness_dir()}.{uuid.uuid4().hex[:8]}.tmp"
                result = self.conn.run(shell_and(
                    ["mkdir", "-p", unpacked],
                    ["tar", "-xf", upload, "-C", unpacked],
                    ["rm", "-f", upload],
                    ["touch", f"{unpacked}/{Layout.COMPLETE}"],
                    ["chmod", "-R", "a-w", unpacked],
                ) + " && { " + shlex.join(["mv", "-T", unpacked, self.harness_dir()]) + " 2>/dev/null"
                    + " || { " + shlex.join(["chmod", "-R", "u+w", unpacked]) + "; "
                    + shlex.join(["rm", "-rf", unpacked]) + "; " + shlex.join(["test", "-e", f"{self.harness_dir()}/{Layout.COMPLETE}"])
                    + "; }; }")
                if result.status != 0:
                    raise self._fail(result, "unpacking the harness")
                self._present.add(self.harness_dir())
                if data:
                    self._start_runner()
            data_missing = [remote for remote in missing if wanted[remote] is not None]
            for remote in data_missing:
                source = wanted[remote]
                assert source is not None  # only data sets have a local folder
                self._ship_data(remote.rsplit("/", 1)[1], Path(source), free)
                self._present.add(remote)

    def _ship_data(self, digest: str, folder: Path, free: int | None) -> None:
        """Send one data set, as its files or compressed (as a sample of it decides),
        resuming an interrupted upload; the harness checks the data set's content hash
        (and an archive's SHA-256) on arrival (datarun.executors.shipping)."""
        from datarun.executors import shipssh
        from datarun.executors.shipping import compressed, data_archive, send_data
        from datarun.executors.shipsend import PROCESS_FROM, send_from_child
        from datarun.remote.incoming import incoming_folder, incoming_path

        sizes = [p.stat().st_size for p in folder.rglob("*") if p.is_file()]
        raw, files = sum(sizes), len(sizes)
        if compressed(folder, digest):
            cache = (self.workspace.state_dir / "ship" if self.workspace is not None
                     else Path(tempfile.gettempdir()))
            local, sha256 = data_archive(cache, folder, digest)
            size, kind = local.stat().st_size, "archive"
            self._check_room(2 * size + raw, free)
            remote = str(incoming_path(self.layout, digest))
        else:
            local, size, sha256, kind = folder, raw, None, "files"
            self._check_room(raw, free)
            remote = str(incoming_folder(self.layout, digest))
        timeout = self.conn._transfer_timeout(size)
        target, known = self.conn.target, self.conn.known_hosts
        if size < PROCESS_FROM:
            self.data_shipped_by = "paramiko"
            have, sent = send_data(self.conn, kind, local, remote, timeout)
        elif (why := shipssh.unusable(target, known, 1 if kind == "archive" else files)) is None:
            self.data_shipped_by = "ssh"
            log.info("host %s: data set %s (%d bytes) sent by OpenSSH's ssh", target.name, digest, size)
            have, sent = shipssh.send_by_ssh(target, known, kind, local, remote, timeout)
        else:
            self.data_shipped_by = "paramiko-process"
            log.info("host %s: data set %s (%d bytes) sent by paramiko in a process of its own: %s",
                     target.name, digest, size, why)
            have, sent = send_from_child(target, known, kind, local, remote, timeout)
        self.conn.stats.bytes_sent += sent
        self.conn.stats.uploads += 1
        self.data_resumed_from = have
        self.run_harness("acceptdata", digest, *([sha256] if sha256 else []))

    def _start_runner(self) -> None:
        """Start the runner in the background once the harness is there and tasks are on
        their way, so its imports (about a second) overlap with shipping the data and the
        bundles. Nothing waits for it: the sync that follows starts the runner itself if
        this one failed, and the runner's lock keeps it to one."""
        if self._runner_started:
            return
        self._runner_started = True
        start = self.harness_command("start", "--slots", str(self.host.slots),
                                     "--threads", str(self.host.threads))
        # Through sh whatever the login shell is (csh and fish read these redirections otherwise).
        self.conn.run(shlex.join(["sh", "-c", f"{start} </dev/null >/dev/null 2>&1 &"]))
