"""One SSH connection to one host, reused for every command and transfer.

Where a host is comes from `datarun.executors.sshtarget` (hosts.toml over ssh_config,
looked up by Fabric), and the connection itself is `datarun.executors.sshconnect`'s
`HostConnection` (a `fabric.Connection` with datarun's host keys, socket, ciphers,
timeouts and jump hosts); this module runs commands and transfers on it.

Commands and downloads stay on the connection's transport and SFTP session, not on
Fabric's `run` and `get`: `run` (invoke's runner and its I/O threads) cannot cap what a
host prints and blocks with no timeout in `exec_command` on a hung host, and costs more
per command (`bench/ssh_overhead.py` prints both); `get` reads to EOF, while a download
here reads exactly the size the host announced. Uploads are not Fabric's `put` either:
it asks whether the path is a folder and what the working folder is before writing, and
stats the file after, three round trips on every bundle's path; `write_file` writes on
the connection's SFTP session with pipelined requests that each fit one SSH packet.

Every blocking step has a deadline: paramiko has no timeout on some channel requests
(`exec_command` waits forever for the server's answer), so each command and transfer
runs under a watchdog that closes the transport when its time is up; a hung host then
costs its own caller one timeout and nothing more.
"""


import select
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import paramiko

from datarun.errors import HostError
from datarun.executors.hostkeys import fingerprint
from datarun.executors.sshconnect import HostConnection, pin_host_key, scan_host_key
from datarun.executors.sshtarget import Target, load_ssh_config, resolve_target

__all__ = ["CommandResult", "HostConnection", "SSHConnection", "Stats", "Target", "fingerprint",
           "load_ssh_config", "pin_host_key", "resolve_target", "scan_host_key"]

# Reading a command's output waits this long at most between checks of stderr and exit.
READ_SLICE = 0.05
DOWNLOAD_CHUNK = 1 << 20
# What one command may print (stdout and stderr together): harness answers are a few kB,
# a task's log is capped on the host at its max_output.
MAX_COMMAND_OUTPUT = 64 * 1024**2


class OutputFlood(Exception):
    """A command printed more than MAX_COMMAND_OUTPUT."""


# --- commands and transfers ---------------------------------------------------------------


@dataclass
class CommandResult:
    status: int
    stdout: str
    stderr: str


@dataclass
class Stats:
    """What crossed the connection: tests and benchmarks read it."""

    connects: int = 0
    commands: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    uploads: int = 0
    commands_run: list[str] = field(default_factory=list)


# An SFTP write request is its data plus 25 bytes and the file handle (length, type,
# request id, handle, offset, data length).
SFTP_WRITE_HEADER = 25
WRITE_BLOCK = 1 << 20


def request_size(sftp: paramiko.SFTPClient, handle_length: int) -> int:
    """The most data one SFTP write request may carry and still travel in one SSH packet.

    paramiko's requests carry 32768 bytes, but a channel packet holds at most the server's
    maximum packet size less 64 bytes (OpenSSH: 32704), so each request went as a full
    packet and a tiny one: twice the per-packet work in Python for the same bytes."""
    channel = sftp.get_channel()
    room = getattr(channel, "out_max_packet_size", 0) - 64 - SFTP_WRITE_HEADER - handle_length
    limit: int = paramiko.SFTPFile.MAX_REQUEST_SIZE
    return min(limit, room) if room > 4096 else limit


def write_file(sftp: paramiko.SFTPClient, source: BinaryIO, remote: str, append: bool = False,
               on_bytes: "Callable[[int], None] | None" = None) -> int:
    """Write what is left of `source` to `remote` (appended to it with `append`), with
    pipelined requests that each fit one SSH packet; the bytes written."""
    sent = 0
    with sftp.open(remote, "ab" if append else "wb") as target:
        target.set_pipelined(True)
        # The handle is the server's bytes (typed as paramiko's server-side handle class).
        target.MAX_REQUEST_SIZE = request_size(sftp, len(target.handle))  # type: ignore[arg-type]
        for block in iter(lambda: source.read(WRITE_BLOCK), b""):
            target.write(block)
            sent += len(block)
            if on_bytes is not None:
                on_bytes(len(block))
    return sent


def drained(channel: paramiko.Channel) -> bool:
    """Whether all a command printed has been read: the server sent EOF (or closed the
    channel) and nothing is left in the buffers. The exit status alone does not say it:
    OpenSSH sends it as soon as the command exits, ahead of output still waiting for the
    client's window, so a reader that stopped there lost the end of a large output."""
    return bool((channel.eof_received or channel.closed) and not channel.recv_ready()
                and not channel.recv_stderr_ready())


class SSHConnection:
    """Commands and transfers on one `HostConnection`, each with its deadline."""

    def __init__(self, target: Target, known_hosts: Path | None = None) -> None:
        self.target = target
        self.known_hosts = known_hosts  # the workspace's .datarun/known_hosts
        self.stats = Stats()
        self.fabric = HostConnection(target, known_hosts)
        self._home: str | None = None

    @property
    def host_key(self) -> paramiko.PKey | None:
        return self.fabric.host_key

    def connect(self) -> None:
        if self.fabric.is_connected:
            return
        self.fabric.open()
        self.stats.connects += 1

    def transport(self) -> paramiko.Transport:
        self.connect()
        transport: paramiko.Transport = self.fabric.transport
        return transport

    def close(self) -> None:
        self.fabric.close()

    @contextmanager
    def _watchdog(self, timeout: float, what: str) -> Iterator[None]:
        """Close the transport if `what` outlives `timeout`: it unblocks any paramiko wait."""
        fired = threading.Event()

        def fire() -> None:
            fired.set()
            transport = self.fabric.transport
            if transport is not None:
                transport.close()

        timer = threading.Timer(timeout, fire)
        timer.daemon = True
        timer.start()
        try:
            yield
        except (paramiko.SSHException, EOFError, OSError) as error:
            if fired.is_set() or isinstance(error, TimeoutError):
                self.close()
                raise HostError(
                    f"host {self.target.name}: {what} timed out after {timeout:g}s (the host "
                    "hangs or is overloaded)"
                ) from None
            self.close()
            raise HostError(f"host {self.target.name}: connection lost during {what}: {error}") from None
        finally:
            timer.cancel()
        if fired.is_set():
            self.close()
            raise HostError(
                f"host {self.target.name}: {what} timed out after {timeout:g}s (the host hangs "
                "or is overloaded)"
            )

    def run(self, command: str, timeout: float | None = None) -> CommandResult:
        """Run one shell command line (already quoted by the caller) and wait for it.

        What it prints is capped (MAX_COMMAND_OUTPUT): a host cannot fill the organiser's
        memory by flooding an answer."""
        timeout = timeout or self.target.command_timeout
        self.connect()
        self.stats.commands += 1
        self.stats.commands_run.append(command)
        self.stats.bytes_sent += len(command)
        deadline = time.monotonic() + timeout
        out: list[bytes] = []
        err: list[bytes] = []
        received = 0
        try:
            with self._watchdog(timeout, "a command"):
                channel = self.transport().open_session(timeout=timeout)
                try:
                    channel.settimeout(timeout)
                    channel.exec_command(command)
                    channel.shutdown_write()
                    while True:
                        # The channel's fileno wakes on stdout data and on close; stderr and
                        # the exit status are checked every slice.
                        select.select([channel], [], [], READ_SLICE)
                        while channel.recv_ready() and received <= MAX_COMMAND_OUTPUT:
                            out.append(channel.recv(1 << 16))
                            received += len(out[-1])
                        while channel.recv_stderr_ready() and received <= MAX_COMMAND_OUTPUT:
                            err.append(channel.recv_stderr(1 << 16))
                            received += len(err[-1])
                        if received > MAX_COMMAND_OUTPUT:
                            raise OutputFlood
                        if channel.exit_status_ready() and drained(channel):
                            break
                        if time.monotonic() > deadline:
                            raise TimeoutError
                    status = channel.recv_exit_status()
                except BaseException:
                    # Closing sends a message: on a socket already dead it raises, and must not
                    # hide why the command was cut short (a flood, a timeout).
                    with suppress(paramiko.SSHException, EOFError, OSError):
                        channel.close()
                    raise
                channel.close()
        except OutputFlood:
            self.close()  # what is still in flight goes with the connection
            raise HostError(f"host {self.target.name}: a command printed more than "
                            f"{MAX_COMMAND_OUTPUT} bytes (datarun's commands print a few kB): "
                            "is `python` in hosts.toml the host's Python?") from None
        self.stats.bytes_received += received
        return CommandResult(status, b"".join(out).decode(errors="replace"),
                             b"".join(err).decode(errors="replace"))

    def sftp(self) -> paramiko.SFTPClient:
        """Fabric's SFTP session of this connection (one, kept), every request of it
        waiting at most the command timeout for its answer."""
        self.connect()
        sftp = self.fabric.sftp_session
        if sftp is None:
            timeout = self.target.command_timeout
            with self._watchdog(timeout, "opening SFTP"):
                sftp = self.fabric.sftp()
            channel = sftp.get_channel()
            if channel is not None:
                channel.settimeout(timeout)
        return sftp

    def home(self) -> str:
        """The login folder, asked once of the SFTP server (which does not expand `~`)."""
        if self._home is None:
            with self._watchdog(self.target.command_timeout, "finding the home folder"):
                self._home = self.sftp().normalize(".")
        return self._home

    def expand(self, path: str) -> str:
        if path == "~":
            return self.home()
        if path.startswith("~/"):
            return self.home().rstrip("/") + path[1:]
        if not path.startswith("/"):
            return self.home().rstrip("/") + "/" + path
        return path

    def put(self, local: Path, remote: str) -> int:
        """Upload `local` to the absolute path `remote` (see `write_file`)."""
        size = Path(local).stat().st_size
        with self._watchdog(self._transfer_timeout(size), "an upload"):
            try:
                with open(local, "rb") as source:
                    write_file(self.sftp(), source, remote)
            except PermissionError as error:
                raise HostError(
                    f"host {self.target.name}: cannot write {remote}: {error.strerror or error} "
                    "(is the workdir writable?)"
                ) from None
            except OSError as error:
                if isinstance(error, TimeoutError):
                    raise
                raise HostError(f"host {self.target.name}: upload to {remote} failed: {error}") from None
        self.stats.bytes_sent += size
        self.stats.uploads += 1
        return size

    def get(self, remote: str, out: BinaryIO, size: int, max_bytes: int) -> int:
        """Copy exactly `size` bytes of `remote` (the size the host announced) into `out`.

        Never more: a file that grows while it downloads (something on the host appending
        to it) cannot make the organiser store more than it was told, and `size` itself is
        refused above `max_bytes` before a byte moves. The whole transfer has a time limit
        from `size`, not from the cap. A file shorter than announced is an error."""
        name = self.target.name
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise HostError(f"host {name}: the size announced for {remote} is not a byte count: "
                            f"{size!r}")
        if size > max_bytes:
            raise HostError(f"host {name}: {remote} is announced as {size} bytes, over the "
                            f"{max_bytes}-byte cap")
        copied = 0
        with self._watchdog(self._transfer_timeout(size), "a download"):
            try:
                with self.sftp().open(remote, "rb") as source:
                    if size:
                        source.prefetch(size)  # pipelined reads, of the announced bytes only
                    while copied < size:
                        chunk = source.read(min(size - copied, DOWNLOAD_CHUNK))
                        if not chunk:
                            break
                        out.write(chunk)
                        copied += len(chunk)
            except FileNotFoundError:
                raise HostError(f"host {name}: {remote} does not exist") from None
            except EOFError:
                pass  # a prefetch past the end of a shorter file: told below
        if copied != size:
            raise HostError(f"host {name}: {remote} ended after {copied} of the {size} bytes "
                            "announced; it is fetched again at the next sync")
        self.stats.bytes_received += copied
        return copied

    def remove(self, remote: str) -> None:
        with self._watchdog(self.target.command_timeout, "removing a file"):
            try:
                self.sftp().remove(remote)
            except FileNotFoundError:
                pass

    def _transfer_timeout(self, size: int) -> float:
        # The watchdog bounds the whole transfer; each SFTP request has its own timeout
        # too. Allow 1 MB/s on top of the command timeout before calling a link hung.
        return self.target.command_timeout + size / 1e6
