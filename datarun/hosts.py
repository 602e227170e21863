"""The host registry, `hosts.toml`: reading, validating and writing it.

Every host is a table under `[hosts.NAME]`. The embedded `local` host runs tasks on this
machine without SSH; `ssh` hosts are servers reached with Fabric/paramiko.
"""

import os
import re
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path

from datarun.errors import NotFound, UsageError
from datarun.sizes import parse_size

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
EXECUTORS = ("local", "ssh")
ISOLATIONS = ("none", "user")
HOST_KEYS = {
    "executor", "address", "port", "user", "identity", "workdir", "python", "slots",
    "threads", "memory", "gpus", "tags", "isolation", "connect_timeout", "command_timeout",
}


@dataclass(frozen=True)
class Host:
    name: str
    executor: str = "local"
    address: str | None = None
    port: int | None = None
    user: str | None = None
    identity: str | None = None
    workdir: str = "~/.datarun-host"
    python: str = "python3"
    slots: int = 1
    threads: int = 1
    memory: int | None = None  # bytes, the cap for all the host's slots together
    gpus: int = 0
    tags: tuple[str, ...] = field(default_factory=tuple)
    isolation: str = "none"
    connect_timeout: float = 10.0
    command_timeout: float = 60.0

    def to_dict(self) -> dict:
        data = asdict(self)
        data["tags"] = list(self.tags)
        return data


def _expect(name: str, key: str, value, kinds, what: str):
    if isinstance(value, bool) and bool not in (kinds if isinstance(kinds, tuple) else (kinds,)):
        raise UsageError(f"hosts.toml: [hosts.{name}] {key} must be {what}, got {value!r}")
    if not isinstance(value, kinds):
        raise UsageError(f"hosts.toml: [hosts.{name}] {key} must be {what}, got {value!r}")
    return value


def parse_host(name: str, table: dict) -> Host:
    if not NAME_RE.match(name):
        raise UsageError(
            f"hosts.toml: host name {name!r} may hold only letters, digits, '_', '-' and '.'"
        )
    if not isinstance(table, dict):
        raise UsageError(f"hosts.toml: [hosts.{name}] must be a table")
    unknown = sorted(set(table) - HOST_KEYS)
    if unknown:
        raise UsageError(
            f"hosts.toml: [hosts.{name}] has unknown key {unknown[0]!r} "
            f"(known: {', '.join(sorted(HOST_KEYS))})"
        )
    executor = table.get("executor", "local" if name == "local" else "ssh")
    if executor not in EXECUTORS:
        raise UsageError(
            f"hosts.toml: [hosts.{name}] executor must be one of {', '.join(EXECUTORS)}, got {executor!r}"
        )
    values: dict = {"name": name, "executor": executor}
    for key in ("address", "user", "identity", "workdir", "python"):
        if key in table:
            values[key] = _expect(name, key, table[key], str, "a string")
    for key in ("port", "slots", "threads", "gpus"):
        if key in table:
            values[key] = _expect(name, key, table[key], int, "a whole number")
    for key in ("connect_timeout", "command_timeout"):
        if key in table:
            values[key] = float(_expect(name, key, table[key], (int, float), "a number of seconds"))
    if values.get("slots", 1) < 1:
        raise UsageError(f"hosts.toml: [hosts.{name}] slots must be at least 1, got {values['slots']}")
    if values.get("threads", 1) < 1:
        raise UsageError(f"hosts.toml: [hosts.{name}] threads must be at least 1, got {values['threads']}")
    if values.get("gpus", 0) < 0:
        raise UsageError(f"hosts.toml: [hosts.{name}] gpus must be 0 or more, got {values['gpus']}")
    if "port" in values and not 0 < values["port"] < 65536:
        raise UsageError(f"hosts.toml: [hosts.{name}] port must be from 1 to 65535, got {values['port']}")
    if "memory" in table:
        values["memory"] = parse_size(table["memory"], f"hosts.toml: [hosts.{name}] memory")
    if "tags" in table:
        tags = table["tags"]
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise UsageError(f"hosts.toml: [hosts.{name}] tags must be a list of strings")
        values["tags"] = tuple(tags)
    if "isolation" in table:
        if table["isolation"] not in ISOLATIONS:
            raise UsageError(
                f"hosts.toml: [hosts.{name}] isolation must be one of {', '.join(ISOLATIONS)}, "
                f"got {table['isolation']!r}"
            )
        values["isolation"] = table["isolation"]
    if executor == "ssh" and not values.get("address"):
        raise UsageError(f"hosts.toml: [hosts.{name}] is an ssh host and needs an address")
    return Host(**values)


def load_hosts(path: Path) -> dict[str, Host]:
    """The hosts of a hosts.toml; a missing file means just the local host."""
    if not path.exists():
        return {"local": Host(name="local", executor="local", slots=os.cpu_count() or 1)}
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as error:
        # tomllib names the line and column in its message; keep it on one line.
        raise UsageError(f"{path.name}: TOML syntax error: {error}") from None
    unknown = sorted(set(data) - {"hosts"})
    if unknown:
        raise UsageError(f"{path.name}: unknown top-level key {unknown[0]!r} (only [hosts.NAME] tables)")
    tables = data.get("hosts", {})
    if not isinstance(tables, dict):
        raise UsageError(f"{path.name}: 'hosts' must be a table of [hosts.NAME] tables")
    return {name: parse_host(name, table) for name, table in tables.items()}


def get_host(hosts: dict[str, Host], name: str) -> Host:
    if name not in hosts:
        known = ", ".join(sorted(hosts)) or "none"
        raise NotFound(f"unknown host {name!r} (hosts.toml has: {known})")
    return hosts[name]
