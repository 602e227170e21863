"""Where a host is: hosts.toml settings over ssh_config, looked up by Fabric.

Fabric does what it is good at: its configuration loads `~/.ssh/config` (then
`/etc/ssh/ssh_config`, as ssh reads them) and a `fabric.Connection` applies it, so
HostName, Port, User, IdentityFile and ProxyJump come from Fabric's lookup, never from a
parser of datarun's; hosts.toml settings win (they are given to Fabric as arguments). The
resolved `Target` is what `datarun.executors.sshconnect` connects to.
"""

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import fabric  # type: ignore[import-untyped]
import paramiko

from datarun.errors import HostError, UsageError

if TYPE_CHECKING:
    from datarun.executors.hosts import Host

MAX_JUMPS = 4
# The ssh_config files, in the order ssh reads them (the first value found wins).
USER_SSH_CONFIG = "~/.ssh/config"
SYSTEM_SSH_CONFIG = "/etc/ssh/ssh_config"


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
