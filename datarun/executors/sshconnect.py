"""Connecting to one host: a `fabric.Connection` with datarun's rules.

The connection is a `fabric.Connection` (`HostConnection`) to a resolved `Target`
(`datarun.executors.sshtarget`), with datarun's rules where Fabric's defaults would be
wrong for hosts that may be hostile or hung:

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
"""

import logging
import socket
from pathlib import Path

import fabric  # type: ignore[import-untyped]
import paramiko

from datarun.errors import HostError
from datarun.executors import hostkeys
from datarun.executors.hostkeys import (
    Pin,
    RefuseUnknown,
    UnknownHostKey,
    changed_key_message,
    known_hosts_files,
    known_keys,
    unknown_key_message,
)
from datarun.executors.sshtarget import Target

# paramiko logs a traceback at ERROR for every banner timeout or reset it then raises;
# datarun turns those into one-line HostErrors, so keep the tracebacks off stderr.
logging.getLogger("paramiko").addHandler(logging.NullHandler())

KEEPALIVE_SECONDS = 15
# Asked for first, in this order: see the module's docstring (ciphers).
PREFERRED_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")


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
