"""One SSH connection to one host, on Fabric's `Connection`, reused for every command and transfer.

Fabric does what it is good at: its configuration loads `~/.ssh/config` (then
`/etc/ssh/ssh_config`, as ssh reads them) and a `fabric.Connection` applies it, so
HostName, Port, User, IdentityFile and ProxyJump come from Fabric's lookup, never from a
parser of datarun's; hosts.toml settings win (they are given to Fabric as arguments). The
connection itself is a `fabric.Connection` (`HostConnection`) with datarun's rules where
Fabric's defaults would be wrong for hosts that may be hostile or hung:

- host keys: Fabric's AutoAddPolicy is replaced by a policy that refuses (`hostkeys`), and
  the known keys are `~/.ssh/known_hosts` plus the workspace's `.datarun/known_hosts`;
- the socket is datarun's, handed to Fabric as `sock`: with TCP_NODELAY (without it each
  small command waits ~40 ms on Nagle and delayed ACKs; neither Fabric nor paramiko sets
  it) and keepalive, and with one-line errors for names that do not resolve, refused
  ports and silent hosts;
- ciphers: AES-GCM first (then paramiko's own order), an authenticated cipher that
  encrypts and checks in one pass: with AES-CTR and HMAC-SHA2 paramiko spends about
  40 % more CPU per byte sent, and shipping a data set to several hosts is bound by it;
- timeouts: every step of connecting has one, from hosts.toml (Fabric's own
  `connect_timeout` is an int, so 0.5 s would mean none, and its jump channel waits
  paramiko's default hour); agent forwarding is off whatever ssh_config says (a host
  must not use the organiser's keys);
- ProxyJump hops are visited in ssh's order (the first hop first; Fabric reverses a
  chain of several), each a `HostConnection` with the same key checking, and a loop in
  ~/.ssh/config is refused after MAX_JUMPS hops rather than recursing;
- closing closes what Fabric leaves open: a dead transport's SFTP session and the jump
  hosts' connections.

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

import logging
import os
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import fabric  # type: ignore[import-untyped]
import paramiko

from datarun.errors import HostError, UsageError
from datarun.executors import hostkeys
from datarun.executors.hostkeys import (
    Pin,
    RefuseUnknown,
    UnknownHostKey,
    changed_key_message,
    fingerprint,
    known_hosts_files,
    known_keys,
    unknown_key_message,
)

if TYPE_CHECKING:
    from datarun.executors.hosts import Host

__all__ = ["CommandResult", "HostConnection", "SSHConnection", "Stats", "Target", "fingerprint",
           "load_ssh_config", "pin_host_key", "resolve_target", "scan_host_key"]

# paramiko logs a traceback at ERROR for every banner timeout or reset it then raises;
# datarun turns those into one-line HostErrors, so keep the tracebacks off stderr.
logging.getLogger("paramiko").addHandler(logging.NullHandler())

KEEPALIVE_SECONDS = 15
# Asked for first, in this order: see the module's docstring (ciphers).
PREFERRED_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")
MAX_JUMPS = 4
# Reading a command's output waits this long at most between checks of stderr and exit.
READ_SLICE = 0.05
DOWNLOAD_CHUNK = 1 << 20
# What one command may print (stdout and stderr together): harness answers are a few kB,
# a task's log is capped on the host at its max_output.
MAX_COMMAND_OUTPUT = 64 * 1024**2
# The ssh_config files, in the order ssh reads them (the first value found wins).
USER_SSH_CONFIG = "~/.ssh/config"
SYSTEM_SSH_CONFIG = "/etc/ssh/ssh_config"


class OutputFlood(Exception):
    """A command printed more than MAX_COMMAND_OUTPUT."""


# --- where a host is: hosts.toml over ssh_config, looked up by Fabric ---------------------


@dataclass(frozen=True)
class Target:
    """Where and how to connect, resolved: hosts.toml settings over what Fabric's lookup
    of ssh_config gives, with the jump host (ProxyJump) to go through, resolved too."""

    name: str  # the datarun host name, for messages
    hostname: str
    port: int
    user: str
    identities: tuple[str, ...] = ()
    identity_required: bool = False  # set in hosts.toml: a missing file is an error
    jump: "Target | None" = None  # the last hop before this host; it has its own `jump`
    connect_timeout: float = 10.0
    command_timeout: float = 60.0

    @property
    def known_hosts_name(self) -> str:
        """The name known_hosts files use: `host`, or `[host]:port` off port 22."""
        return self.hostname if self.port == 22 else f"[{self.hostname}]:{self.port}"

    @property
    def where(self) -> str:
        return f"{self.user}@{self.hostname}:{self.port}"

    def hops(self) -> list["Target"]:
        """The jump hosts in the order they are connected to, the first one first."""
        chain: list[Target] = []
        jump = self.jump
        while jump is not None:
            chain.insert(0, jump)
            jump = jump.jump
        return chain


def ssh_config_paths() -> list[Path]:
    return [Path(os.path.expanduser(USER_SSH_CONFIG)), Path(SYSTEM_SSH_CONFIG)]


def load_ssh_config() -> fabric.Config:
    """Fabric's configuration with the ssh_config files loaded by Fabric's loader.

    Each file is handed to Fabric on its own (its `runtime_ssh_path`), the user's first,
    so a file that cannot be read or parsed is named. Fabric's own configuration files
    (`~/.fabric.yaml` and the like) are not read: datarun's settings are hosts.toml's."""
    config = fabric.Config(lazy=True)
    for path in ssh_config_paths():
        if not path.is_file():
            continue
        config.set_runtime_ssh_path(str(path))
        try:
            config.load_ssh_config()
        except (OSError, paramiko.SSHException) as error:
            reason = getattr(error, "strerror", None) or error
            raise UsageError(f"cannot read {path}: {reason}: fix the file, or move it aside") from None
    config.set_runtime_ssh_path(None)
    return config


def _fabric_view(name: str, spec: str, config: fabric.Config, user: str | None = None,
                 port: int | None = None, source: str = "address") -> fabric.Connection:
    """A `fabric.Connection` for `spec`, never opened: its attributes are Fabric's lookup of
    ssh_config. `spec` is Fabric's shorthand, [user@]host[:port], which is ProxyJump's
    syntax too; `[v6 address]:port`, which Fabric does not split, is split here."""
    login, at, rest = spec.rpartition("@")
    bracketed = rest.startswith("[") and "]" in rest
    if bracketed:
        address, _, tail = rest[1:].partition("]")
        rest = address
    try:
        if bracketed and tail:
            if not tail.startswith(":") or port is not None:
                raise ValueError(tail)
            port = int(tail[1:])
        # connect_kwargs of its own: given none, Fabric writes the IdentityFiles it finds
        # into the configuration's, and every later lookup would inherit them.
        return fabric.Connection(login + at + rest, user=user, port=port, config=config,
                                 gateway=False, forward_agent=False,
                                 connect_kwargs={"key_filename": []})
    except ValueError:  # a user or port given twice, or a port that is not a number
        if source == "address":
            raise UsageError(
                f"hosts.toml: [hosts.{name}] address {spec!r} is not a host name with at most a "
                "user@ and a :port: give the host's name alone as `address`, and its user and "
                "port as `user` and `port`") from None
        raise UsageError(f"host {name}: ProxyJump {spec!r} in ssh_config is not "
                         "[user@]host[:port]: fix the file, or move it aside") from None
    except paramiko.SSHException as error:  # ssh_config cannot be applied to it
        detail = ("CanonicalizeHostname found no name for it"
                  if isinstance(error, paramiko.ssh_exception.CouldNotCanonicalize) else str(error))
        raise UsageError(f"host {name}: ssh_config cannot be applied to {spec!r} ({detail}): "
                         "fix the file, or move it aside") from None


def _identities(view: fabric.Connection) -> tuple[str, ...]:
    """The IdentityFile entries Fabric gathered for the connection."""
    keys = dict(view.connect_kwargs).get("key_filename") or []
    return tuple(os.path.expanduser(path) for path in ([keys] if isinstance(keys, str) else keys))


def _jump(via: Target, proxyjump: str | None, config: fabric.Config, depth: int) -> Target | None:
    """The hop `via` is reached through. ssh visits the hops of "a,b" in order: `a` as its
    own ssh_config entry says (its ProxyJump too), `b` through `a`, then `via` through `b`."""
    hops = [hop.strip() for hop in (proxyjump or "").split(",") if hop.strip()]
    if not hops or hops[0].lower() == "none":
        return None
    if depth >= MAX_JUMPS:
        raise HostError(f"host {via.name}: more than {MAX_JUMPS} ProxyJump hops in ~/.ssh/config")
    jump: Target | None = None
    for spec in hops:
        view = _fabric_view(via.name, spec, config, source="proxyjump")
        hop = Target(
            name=f"{via.name} (jump host {view.original_host})",
            hostname=view.host, port=int(view.port), user=view.user, identities=_identities(view),
            connect_timeout=via.connect_timeout, command_timeout=via.command_timeout,
        )
        if jump is None:
            jump = replace(hop, jump=_jump(hop, view.ssh_config.get("proxyjump"), config, depth + 1))
        else:
            jump = replace(hop, jump=jump)
    return jump


def resolve_target(host: "Host", ssh_config: fabric.Config | None = None) -> Target:
    """Settings in hosts.toml win; ssh_config (as Fabric applies it) fills what they leave
    out, as ssh does. An explicit `identity` is the only key tried."""
    config = ssh_config if ssh_config is not None else fabric.Config(lazy=True)
    assert host.address, "parse_host refuses an ssh host without an address"
    view = _fabric_view(host.name, host.address, config, user=host.user, port=host.port)
    target = Target(
        name=host.name,
        hostname=view.host,
        port=int(view.port),
        user=view.user,
        identities=(os.path.expanduser(host.identity),) if host.identity else _identities(view),
        identity_required=bool(host.identity),
        connect_timeout=host.connect_timeout,
        command_timeout=host.command_timeout,
    )
    return replace(target, jump=_jump(target, view.ssh_config.get("proxyjump"), config, 0))


# --- connecting -----------------------------------------------------------------------------


def load_identity(target: Target, path: str) -> paramiko.PKey | None:
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


def gcm_first_transport(sock: socket.socket, **kwargs: object) -> paramiko.Transport:
    """A paramiko Transport that asks for AES-GCM first (paramiko's own order after it)."""
    transport = paramiko.Transport(sock, **kwargs)  # type: ignore[arg-type]
    options = transport.get_security_options()
    offered = list(options.ciphers)
    first = [name for name in PREFERRED_CIPHERS if name in offered]
    options.ciphers = first + [name for name in offered if name not in first]
    return transport


def tcp_socket(target: Target) -> socket.socket:
    """The TCP connection to the host, with TCP_NODELAY and keepalive, or a one-line error."""
    hostname, port, timeout, name = target.hostname, target.port, target.connect_timeout, target.name
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
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    return sock


class HostConnection(fabric.Connection):
    """A `fabric.Connection` to a resolved Target, with datarun's host keys, socket,
    timeouts and jump hosts (see the module's docstring)."""

    # Declared on the class as Fabric declares its own: invoke's config proxy would take
    # an attribute it does not find on the class for a configuration setting.
    target: Target | None = None
    known_hosts: Path | None = None
    host_key: paramiko.PKey | None = None
    _sftp: paramiko.SFTPClient | None = None  # Fabric's, declared here with its type

    def __init__(self, target: Target, known_hosts: Path | None = None) -> None:
        gateway = HostConnection(target.jump, known_hosts) if target.jump is not None else False
        # The target is resolved already: a configuration without ssh_config keeps Fabric
        # from looking the resolved name up a second time.
        super().__init__(target.hostname, user=target.user, port=target.port,
                         config=fabric.Config(lazy=True), gateway=gateway, forward_agent=False)
        self.target = target
        self.known_hosts = known_hosts
        self.connect_timeout = target.connect_timeout  # a float, where Fabric's is int()ed
        # Never Fabric's AutoAddPolicy, not even on a client that is not used: `open` makes
        # a new one with the pins as they are then.
        self.client.set_missing_host_key_policy(RefuseUnknown())

    def _target(self) -> Target:
        assert self.target is not None
        return self.target

    def _strict_client(self) -> paramiko.SSHClient:
        client = paramiko.SSHClient()
        for path in known_hosts_files(self.known_hosts):
            client.get_host_keys().load(str(path))
        client.set_missing_host_key_policy(RefuseUnknown())
        return client

    def open(self) -> None:
        if self.is_connected:
            return None
        self.close()  # what a dead transport left: its SFTP session, its jump hosts
        target = self._target()
        keys = [key for key in (load_identity(target, p) for p in target.identities) if key]
        timeout = target.connect_timeout
        self.client = self._strict_client()  # the pins as they are now
        sock = None if self.gateway else tcp_socket(target)
        self.connect_kwargs = {
            "pkey": keys[0] if keys else None,
            # An explicit key is the only one tried: a stray agent key must not log in as
            # someone else. Without one, do what ssh does (agent, default keys).
            "allow_agent": not keys,
            "look_for_keys": not keys,
            "banner_timeout": timeout,
            "auth_timeout": timeout,
            "channel_timeout": timeout,
            "transport_factory": gcm_first_transport,
            **({"sock": sock} if sock is not None else {}),  # else Fabric's open_gateway()
        }
        try:
            super().open()
        except BaseException as error:
            self.close()
            if sock is not None:
                sock.close()
            told = self._connect_error(error)
            if told is error:
                raise
            raise told from None
        assert self.transport is not None
        self.transport.set_keepalive(KEEPALIVE_SECONDS)
        self.host_key = self.transport.get_remote_server_key()
        return None

    def _connect_error(self, error: BaseException) -> BaseException:
        """The one-line HostError for what connecting raised (anything else as it is)."""
        target = self._target()
        if isinstance(error, HostError):  # the socket, an identity, a jump host: said already
            return error
        if isinstance(error, UnknownHostKey):
            pinned = known_keys(error.known_hosts_name, known_hosts_files(self.known_hosts))
            if pinned:  # the host no longer shows the pinned key's type: a change all the same
                return HostError(changed_key_message(target.name, target.known_hosts_name,
                                                     error.key, pinned))
            return HostError(unknown_key_message(target.name, error.known_hosts_name, error.key))
        if isinstance(error, paramiko.BadHostKeyException):
            pinned = known_keys(target.known_hosts_name, known_hosts_files(self.known_hosts))
            return HostError(changed_key_message(
                target.name, target.known_hosts_name, error.key,
                [k for k in pinned if k != error.key] or [error.expected_key]))
        if isinstance(error, paramiko.AuthenticationException):
            key = ", ".join(target.identities) or "agent and default keys"
            return HostError(
                f"host {target.name}: authentication refused for {target.where} (key: {key}): "
                "add the public key to that user's ~/.ssh/authorized_keys, or fix `user` / "
                "`identity` in hosts.toml")
        if isinstance(error, paramiko.SSHException | EOFError | OSError):
            return HostError(
                f"host {target.name}: no SSH server answered at {target.hostname}:{target.port} "
                f"within {target.connect_timeout:g}s ({error or type(error).__name__}): wrong "
                "port, or the host hangs")
        return error

    @property
    def sftp_session(self) -> paramiko.SFTPClient | None:
        """The SFTP session `sftp()` opened on this connection, if any (None after close)."""
        return self._sftp

    def open_gateway(self) -> paramiko.Channel:
        """The channel to this host through its jump host, which is opened first."""
        gateway, target = self.gateway, self._target()
        assert isinstance(gateway, HostConnection) and gateway.target is not None
        gateway.open()
        assert gateway.transport is not None
        try:
            return gateway.transport.open_channel(
                "direct-tcpip", (target.hostname, target.port), ("127.0.0.1", 0),
                timeout=target.connect_timeout)
        except (paramiko.SSHException, OSError) as error:
            raise HostError(
                f"host {target.name}: the jump host {gateway.target.hostname} could not reach "
                f"{target.hostname}:{target.port}: {error}"
            ) from None

    def close(self) -> None:
        """Close the SFTP session, the client and the jump hosts, whether or not the
        transport is still alive (Fabric's close leaves a dead one's and the hops' open)."""
        gateway = self.gateway if isinstance(self.gateway, HostConnection) else None
        for closable in (self._sftp, self.client, gateway):
            if closable is not None:
                try:
                    closable.close()
                except Exception:  # closing a dead connection may raise anything; it is gone
                    pass
        self._sftp = None


def scan_host_key(target: Target, known_hosts: Path | None = None,
                  prefer: list[str] | tuple[str, ...] = ()) -> paramiko.PKey:
    """The key the server proves it holds (the key exchange signs with it); no login.

    `prefer`: key types asked for first (those already pinned, as a connection does), so a
    host with several keys shows the one that is pinned, if it still has it. The jump
    hosts on the way are connected to as usual, their keys checked."""
    conn = HostConnection(target, known_hosts)
    transport: paramiko.Transport | None = None
    try:
        sock = conn.open_gateway() if conn.gateway else tcp_socket(target)
        transport = paramiko.Transport(sock)
        transport.banner_timeout = target.connect_timeout
        if prefer:
            options = transport.get_security_options()
            types = list(options.key_types)
            options.key_types = [t for t in prefer if t in types] + [t for t in types if t not in prefer]
        transport.start_client(timeout=target.connect_timeout)
        return transport.get_remote_server_key()
    except (paramiko.SSHException, EOFError, OSError) as error:
        detail = str(error) or type(error).__name__
        if detail == "No existing session" or detail.startswith("Error reading SSH protocol banner"):
            # paramiko's words for a port that stays silent: which of the two depends on
            # whether its reader thread or start_client notices the timeout first.
            detail = "no SSH banner"
        raise HostError(
            f"host {target.name}: no SSH server answered at {target.hostname}:{target.port} "
            f"within {target.connect_timeout:g}s ({detail}): wrong port, or the host hangs"
        ) from None
    finally:
        if transport is not None:
            transport.close()
        conn.close()


def pin_host_key(target: Target, known_hosts: Path, replace: bool = False) -> Pin:
    """Pin the host's key in the workspace's known_hosts (see `hostkeys.pin_key`)."""
    return hostkeys.pin_key(target.name, target.known_hosts_name, known_hosts,
                            lambda prefer: scan_host_key(target, known_hosts, prefer), replace)


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
                finally:
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
