"""Where an SSH host is and how to log in: hosts.toml settings merged over ~/.ssh/config.

hosts.toml wins; `~/.ssh/config` fills what it leaves out (HostName, Port, User,
IdentityFile, ProxyJump), read with paramiko's own parser as Fabric reads it.
"""

import getpass
import os
from dataclasses import dataclass, replace
from pathlib import Path

import paramiko

from datarun.errors import UsageError


@dataclass(frozen=True)
class Target:
    """Where and how to connect: hosts.toml settings merged over ~/.ssh/config."""

    name: str  # the datarun host name, for messages
    hostname: str
    port: int
    user: str
    identities: tuple[str, ...] = ()
    identity_required: bool = False  # set in hosts.toml: a missing file is an error
    proxyjump: str | None = None
    connect_timeout: float = 10.0
    command_timeout: float = 60.0

    @property
    def known_hosts_name(self) -> str:
        """The name known_hosts files use: `host`, or `[host]:port` off port 22."""
        return self.hostname if self.port == 22 else f"[{self.hostname}]:{self.port}"

    @property
    def where(self) -> str:
        return f"{self.user}@{self.hostname}:{self.port}"


def user_ssh_config_path() -> Path:
    return Path(os.path.expanduser("~/.ssh/config"))


def load_ssh_config(path: Path | None = None) -> paramiko.SSHConfig | None:
    path = path or user_ssh_config_path()
    if not path.is_file():
        return None
    try:
        return paramiko.SSHConfig.from_path(str(path))
    except (OSError, paramiko.ssh_exception.ConfigParseError) as error:
        raise UsageError(f"cannot read {path}: {error}: fix the file, or move it aside") from None


def resolve_target(host, ssh_config: paramiko.SSHConfig | None = None) -> Target:
    """Settings in hosts.toml win; ~/.ssh/config fills what they leave out, as ssh does."""
    options = ssh_config.lookup(host.address) if ssh_config else {}
    identities: tuple[str, ...]
    if host.identity:
        identities = (os.path.expanduser(host.identity),)
    else:
        identities = tuple(os.path.expanduser(p) for p in options.get("identityfile", []))
    return Target(
        name=host.name,
        hostname=options.get("hostname", host.address),
        port=int(host.port or options.get("port", 22)),
        user=host.user or options.get("user") or getpass.getuser(),
        identities=identities,
        identity_required=bool(host.identity),
        proxyjump=options.get("proxyjump"),
        connect_timeout=host.connect_timeout,
        command_timeout=host.command_timeout,
    )


def replace_target(target: Target, **changes) -> Target:
    return replace(target, **changes)


def jump_target_for(spec: str, via: Target, ssh_config: paramiko.SSHConfig | None) -> Target:
    """A ProxyJump hop, `[user@]host[:port]`, with its own ~/.ssh/config entry applied."""
    user, _, rest = spec.rpartition("@")
    hostname, port = rest, None
    if rest.startswith("["):  # [v6addr]:port
        hostname, _, tail = rest[1:].partition("]")
        port = tail[1:] or None
    elif rest.count(":") == 1:
        hostname, port = rest.split(":")
    options = ssh_config.lookup(hostname) if ssh_config else {}
    return Target(
        name=f"{via.name} (jump host {hostname})",
        hostname=options.get("hostname", hostname),
        port=int(port or options.get("port", 22)),
        user=user or options.get("user") or getpass.getuser(),
        identities=tuple(os.path.expanduser(p) for p in options.get("identityfile", [])),
        proxyjump=options.get("proxyjump"),
        connect_timeout=via.connect_timeout,
        command_timeout=via.command_timeout,
    )
