"""One SSH connection to one host, reused for every command and transfer.

Built on paramiko directly rather than through Fabric's `Connection`: Fabric adds ~30 ms
to every command (its runner threads), auto-adds unknown host keys, and has no way to set
TCP_NODELAY. What Fabric does that datarun wants is kept: `~/.ssh/config` is read with
paramiko's own parser (HostName, Port, User, IdentityFile, ProxyJump), the way Fabric
reads it.

Every blocking step has a deadline: the TCP connect, the handshake and authentication,
opening a channel, every command, every SFTP request. paramiko has no timeout on some
channel requests (`exec_command` waits forever for the server's answer), so each command
runs under a watchdog that closes the transport when its time is up; a hung host then
costs its own caller one timeout and nothing more.

Host keys are checked against `~/.ssh/known_hosts` and the workspace's
`.datarun/known_hosts`; an unknown or changed key is refused, never added.
"""

import logging
import select
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import paramiko

from datarun.errors import HostError
from datarun.executors.hostkeys import (  # noqa: F401  (re-exported for callers)
    RefuseUnknown,
    UnknownHostKey,
    changed_key_message,
    fingerprint,
    known_hosts_files,
    known_keys,
    pin_host_key,
)
from datarun.executors.sshtarget import (  # noqa: F401
    Target,
    jump_target_for,
    load_ssh_config,
    replace_target,
    resolve_target,
)

# paramiko logs a traceback at ERROR for every banner timeout or reset it then raises;
# datarun turns those into one-line HostErrors, so keep the tracebacks off stderr.
logging.getLogger("paramiko").addHandler(logging.NullHandler())

KEEPALIVE_SECONDS = 15
MAX_JUMPS = 4
# Reading a command's output waits this long at most between checks of stderr and exit.
READ_SLICE = 0.05
DOWNLOAD_CHUNK = 1 << 20
# What one command may print (stdout and stderr together): harness answers are a few kB,
# a task's log is capped on the host at its max_output.
MAX_COMMAND_OUTPUT = 64 * 1024**2


class OutputFlood(Exception):
    """A command printed more than MAX_COMMAND_OUTPUT."""


def _load_identity(target: Target, path: str) -> paramiko.PKey | None:
    try:
        return paramiko.PKey.from_path(path)
    except FileNotFoundError:
        if not target.identity_required:
            return None  # ssh skips an IdentityFile of ~/.ssh/config that is not there
        raise HostError(
            f"host {target.name}: identity file {path} does not exist: fix `identity` in "
            "hosts.toml or create it with ssh-keygen"
        ) from None
    except (paramiko.PasswordRequiredException, TypeError):
        # cryptography says "password-protected" with a TypeError for OpenSSH-format keys.
        raise HostError(
            f"host {target.name}: identity file {path} needs a passphrase: give datarun a key "
            "without one, or load it into ssh-agent and leave `identity` unset"
        ) from None
    except OSError as error:
        raise HostError(
            f"host {target.name}: cannot read identity file {path}: {error.strerror or error}"
        ) from None
    except (paramiko.SSHException, ValueError) as error:
        raise HostError(
            f"host {target.name}: identity file {path} is not a private key datarun can use: {error}"
        ) from None


def _tcp_socket(hostname: str, port: int, timeout: float, name: str) -> socket.socket:
    try:
        sock = socket.create_connection((hostname, port), timeout=timeout)
    except (socket.gaierror, UnicodeError) as error:
        reason = getattr(error, "strerror", None) or "not a valid host name"
        raise HostError(
            f"host {name}: cannot resolve address {hostname!r} ({reason}): fix `address`"
        ) from None
    except ConnectionRefusedError:
        raise HostError(
            f"host {name}: connection refused at {hostname}:{port}: wrong port, or no SSH server "
            "runs there"
        ) from None
    except OSError as error:
        reason = f"no answer within {timeout:g}s" if isinstance(error, TimeoutError) else (
            error.strerror or str(error))
        raise HostError(f"host {name}: {hostname}:{port} is unreachable ({reason})") from None
    # Without TCP_NODELAY each small command waits ~40 ms on Nagle and delayed ACKs.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    return sock


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


class SSHConnection:
    def __init__(
        self,
        target: Target,
        known_hosts: Path | None = None,
        ssh_config: paramiko.SSHConfig | None = None,
        depth: int = 0,
    ):
        self.target = target
        self.known_hosts = known_hosts  # the workspace's .datarun/known_hosts
        self.ssh_config = ssh_config
        self.depth = depth
        self.stats = Stats()
        self._client: paramiko.SSHClient | None = None
        self._sftp: paramiko.SFTPClient | None = None
        self._jump: SSHConnection | None = None
        self._home: str | None = None
        self.host_key: paramiko.PKey | None = None

    # --- connecting ---------------------------------------------------------------

    def _socket(self):
        target = self.target
        if not target.proxyjump or target.proxyjump.lower() == "none":
            return _tcp_socket(target.hostname, target.port, target.connect_timeout, target.name)
        if self.depth >= MAX_JUMPS:
            raise HostError(f"host {target.name}: more than {MAX_JUMPS} ProxyJump hops in ~/.ssh/config")
        # ssh goes through the hops of "a,b" in order: connect to the first, then onwards.
        hops = [hop.strip() for hop in target.proxyjump.split(",") if hop.strip()]
        jump_target = jump_target_for(hops[0], target, self.ssh_config)
        if len(hops) > 1:
            jump_target = replace_target(jump_target, proxyjump=",".join(hops[1:]))
        self._jump = SSHConnection(jump_target, self.known_hosts, self.ssh_config, self.depth + 1)
        transport = self._jump.transport()
        try:
            return transport.open_channel(
                "direct-tcpip",
                (target.hostname, target.port),
                ("127.0.0.1", 0),
                timeout=target.connect_timeout,
            )
        except (paramiko.SSHException, OSError) as error:
            raise HostError(
                f"host {target.name}: the jump host {jump_target.hostname} could not reach "
                f"{target.hostname}:{target.port}: {error}"
            ) from None

    def connect(self) -> None:
        if self._client is not None and self._client.get_transport() is not None and \
                self._client.get_transport().is_active():
            return
        self.close()
        target = self.target
        keys = [key for key in (_load_identity(target, p) for p in target.identities) if key]
        client = paramiko.SSHClient()
        for path in known_hosts_files(self.known_hosts):
            client.get_host_keys().load(str(path))
        client.set_missing_host_key_policy(RefuseUnknown())
        sock = self._socket()
        timeout = target.connect_timeout
        try:
            client.connect(
                target.hostname,
                port=target.port,
                username=target.user,
                pkey=keys[0] if keys else None,
                # An explicit key is the only one tried: a stray agent key must not log in
                # as someone else. Without one, do what ssh does (agent, default keys).
                allow_agent=not keys,
                look_for_keys=not keys,
                sock=sock,
                timeout=timeout,
                banner_timeout=timeout,
                auth_timeout=timeout,
                channel_timeout=timeout,
            )
        except UnknownHostKey as error:
            sock.close()
            files = known_hosts_files(self.known_hosts)
            pinned = known_keys(error.known_hosts_name, files)
            if pinned:  # the host no longer shows the pinned key's type: a change all the same
                raise HostError(changed_key_message(target, error.key, pinned)) from None
            raise HostError(
                f"host {target.name}: unknown host key {error.key.get_name()} "
                f"{fingerprint(error.key)} for {error.known_hosts_name}: if it is right, pin it "
                f"with `datarun host trust {target.name}`"
            ) from None
        except paramiko.BadHostKeyException as error:
            sock.close()
            pinned = known_keys(target.known_hosts_name, known_hosts_files(self.known_hosts))
            raise HostError(changed_key_message(
                target, error.key, [k for k in pinned if k != error.key] or [error.expected_key])
            ) from None
        except paramiko.AuthenticationException:
            sock.close()
            key = ", ".join(target.identities) or "agent and default keys"
            raise HostError(
                f"host {target.name}: authentication refused for {target.where} (key: {key}): "
                "add the public key to that user's ~/.ssh/authorized_keys, or fix `user` / "
                "`identity` in hosts.toml"
            ) from None
        except (paramiko.SSHException, EOFError, OSError) as error:
            sock.close()
            raise HostError(
                f"host {target.name}: no SSH server answered at {target.hostname}:{target.port} "
                f"within {timeout:g}s ({error or type(error).__name__}): wrong port, or the "
                "host hangs"
            ) from None
        transport = client.get_transport()
        transport.set_keepalive(KEEPALIVE_SECONDS)
        self.host_key = transport.get_remote_server_key()
        self._client = client
        self.stats.connects += 1

    def transport(self) -> paramiko.Transport:
        self.connect()
        return self._client.get_transport()

    def close(self) -> None:
        for closable in (self._sftp, self._client, self._jump):
            if closable is not None:
                try:
                    closable.close()
                except Exception:  # closing a dead connection may raise anything; it is gone
                    pass
        self._sftp = self._client = self._jump = None

    @contextmanager
    def _watchdog(self, timeout: float, what: str) -> Iterator[None]:
        """Close the transport if `what` outlives `timeout`: it unblocks any paramiko wait."""
        fired = threading.Event()
        transport = self._client.get_transport() if self._client else None

        def fire():
            fired.set()
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

    # --- commands -----------------------------------------------------------------

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
                channel = self._client.get_transport().open_session(timeout=timeout)
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
                        if channel.exit_status_ready() and not channel.recv_ready() \
                                and not channel.recv_stderr_ready():
                            break
                        if time.monotonic() > deadline:
                            raise TimeoutError
                    status = channel.recv_exit_status()
                finally:
                    channel.close()
        except OutputFlood:
            self.close()  # what is still in flight goes with the connection
            raise HostError(f"host {self.target.name}: a command printed more than "
                            f"{MAX_COMMAND_OUTPUT} bytes (datarun's commands print a few kB): "
                            "is `python` in hosts.toml the host's Python?") from None
        stdout = b"".join(out)
        self.stats.bytes_received += received
        return CommandResult(status, stdout.decode(errors="replace"), b"".join(err).decode(errors="replace"))

    # --- files --------------------------------------------------------------------

    def sftp(self) -> paramiko.SFTPClient:
        self.connect()
        if self._sftp is None:
            timeout = self.target.command_timeout
            with self._watchdog(timeout, "opening SFTP"):
                sftp = self._client.open_sftp()
            # Every SFTP request waits at most this long for its answer.
            sftp.get_channel().settimeout(timeout)
            self._sftp = sftp
        return self._sftp

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
        size = Path(local).stat().st_size
        with self._watchdog(self._transfer_timeout(size), "an upload"):
            try:
                self.sftp().put(str(local), remote, confirm=True)
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
