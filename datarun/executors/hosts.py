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
from datarun.sizes import parse_clock, parse_duration, parse_size

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
EXECUTORS = ("local", "ssh", "dask", "slurm", "pbs", "sge", "lsf")
# Batch queues reached through dask-jobqueue (executors/jobqueue.py).
JOBQUEUES = ("slurm", "pbs", "sge", "lsf")
ISOLATIONS = ("sandbox", "none")
# "user", the root-only isolation of earlier versions, now means the sandbox (which needs
# no root); accepted so that old hosts.toml files keep their meaning, and shown as "sandbox".
ISOLATION_ALIASES = {"user": "sandbox"}
NO_SANDBOX_WARNING = ('warning: host {names} {verb} isolation = "none": submissions there can read '
                      "everything the host's user can (other teams' code, labels, keys)")
HOST_KEYS = {
    "executor", "address", "port", "user", "identity", "workdir", "python", "slots",
    "threads", "memory", "gpus", "tags", "isolation", "connect_timeout", "command_timeout",
    # Dask and batch-queue hosts (executor = "dask", "slurm", "pbs", "sge", "lsf")
    "scheduler", "tls_ca", "tls_cert", "tls_key", "data", "queue", "account", "walltime", "cores",
    "job_extra", "max_jobs", "interface", "log_directory",
}
CLUSTER_KEYS = {"scheduler", "tls_ca", "tls_cert", "tls_key", "data"}
JOBQUEUE_KEYS = {"queue", "account", "walltime", "cores", "job_extra", "max_jobs", "interface",
                 "log_directory"}


DEFAULT_PYTHON = "python3"


@dataclass(frozen=True)
class Host:
    name: str
    executor: str = "local"
    address: str | None = None
    port: int | None = None
    user: str | None = None
    identity: str | None = None
    workdir: str = "~/.datarun-host"
    python: str = DEFAULT_PYTHON
    slots: int = 1
    threads: int = 1
    memory: int | None = None  # bytes, the cap for all the host's slots together
    gpus: int = 0
    tags: tuple[str, ...] = field(default_factory=tuple)
    isolation: str = "sandbox"
    connect_timeout: float = 10.0
    command_timeout: float = 60.0
    scheduler: str | None = None  # dask: "tcp://HOST:8786" or "tls://..."
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    data: str | None = None  # "shared:/path": data sets read from a shared file system
    queue: str | None = None  # slurm/pbs/sge/lsf: partition or queue
    account: str | None = None
    walltime: str | None = None
    cores: int | None = None  # per worker job (default: threads)
    job_extra: tuple[str, ...] = field(default_factory=tuple)
    max_jobs: int | None = None
    interface: str | None = None  # network interface the scheduler and workers bind ("lo", "ib0")
    log_directory: str | None = None
    # dask: no `slots` given, so the workers' threads in all (learnt from the scheduler's
    # answers; `slots` is 1 until the first answer).
    slots_from_workers: bool = False

    def to_dict(self) -> dict:
        data = asdict(self)
        data["tags"] = list(self.tags)
        data["job_extra"] = list(self.job_extra)
        # A cluster's keys only on the hosts that have them: an SSH host's row stays as it was.
        for key in (CLUSTER_KEYS | JOBQUEUE_KEYS) - _keys_of(self.executor):
            del data[key]
        if self.executor != "dask":
            del data["slots_from_workers"]
        return data


def _expect(name: str, key: str, value, kinds, what: str):
    if isinstance(value, bool) and bool not in (kinds if isinstance(kinds, tuple) else (kinds,)):
        raise UsageError(f"hosts.toml: [hosts.{name}] {key} must be {what}, got {str(value).lower()}")
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
    foreign = sorted((set(table) & (CLUSTER_KEYS | JOBQUEUE_KEYS)) - _keys_of(executor))
    if foreign:
        owners = [other for other in EXECUTORS if foreign[0] in _keys_of(other)]
        raise UsageError(f"hosts.toml: [hosts.{name}] {foreign[0]!r} is a key of {', '.join(owners)} "
                         f"hosts, not of {executor} hosts: set executor to one of those, or remove the key")
    for key in ("address", "user", "identity", "workdir", "python", "scheduler", "tls_ca", "tls_cert",
                "tls_key", "data", "queue", "account", "interface", "log_directory"):
        if key in table:
            values[key] = _expect(name, key, table[key], str, "a string")
    if "data" in values and not values["data"].startswith("shared:/"):
        raise UsageError(f"hosts.toml: [hosts.{name}] data must be \"shared:/PATH\" (a folder all "
                         f"workers see), got {values['data']!r}")
    if "job_extra" in table:
        extra = table["job_extra"]
        if not isinstance(extra, list) or not all(isinstance(t, str) for t in extra):
            raise UsageError(f"hosts.toml: [hosts.{name}] job_extra must be a list of strings")
        values["job_extra"] = tuple(extra)
    for key in ("cores", "max_jobs"):
        if key in table:
            values[key] = _expect(name, key, table[key], int, "a whole number")
            if values[key] < 1:
                raise UsageError(f"hosts.toml: [hosts.{name}] {key} must be at least 1, got {values[key]}")
    for key in ("port", "slots", "threads", "gpus"):
        if key in table:
            values[key] = _expect(name, key, table[key], int, "a whole number")
    for key in ("connect_timeout", "command_timeout"):
        if key in table:
            values[key] = parse_duration(table[key], f"hosts.toml: [hosts.{name}] {key}")
    if "walltime" in table:  # a bare TOML number too gets the line proposing a clock
        walltime = table["walltime"]
        if isinstance(walltime, bool) or not isinstance(walltime, str | int | float):
            _expect(name, "walltime", walltime, str, "a string")
        values["walltime"] = parse_clock(str(walltime), f"hosts.toml: [hosts.{name}] walltime")
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
        isolation = ISOLATION_ALIASES.get(table["isolation"], table["isolation"])
        if isolation not in ISOLATIONS:
            raise UsageError(
                f"hosts.toml: [hosts.{name}] isolation must be one of {', '.join(ISOLATIONS)}, "
                f"got {table['isolation']!r}"
            )
        values["isolation"] = isolation
    if executor == "ssh" and not values.get("address"):
        raise UsageError(f"hosts.toml: [hosts.{name}] is an ssh host and needs an address")
    if executor == "dask":
        scheduler = values.get("scheduler", "")
        if not scheduler.startswith(("tcp://", "tls://")):
            raise UsageError(f"hosts.toml: [hosts.{name}] is a dask host and needs scheduler = "
                             f"\"tcp://HOST:PORT\" or \"tls://HOST:PORT\", got {scheduler!r}")
    if executor == "dask" and "slots" not in table:
        values["slots_from_workers"] = True
    if executor in JOBQUEUES and "slots" not in table:
        # Tasks at once: one per core of each worker job the queue may run.
        values["slots"] = (values.get("max_jobs") or 1) * (values.get("cores") or values.get("threads") or 1)
    return Host(**values)


def _keys_of(executor: str) -> set[str]:
    if executor == "dask":
        return CLUSTER_KEYS
    if executor in JOBQUEUES:
        return (CLUSTER_KEYS - {"scheduler"}) | JOBQUEUE_KEYS
    return set()


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


def no_sandbox_warning(hosts: dict[str, Host]) -> str | None:
    """The one warning line `submit` and `train` print when some host runs tasks unsandboxed."""
    names = sorted(name for name, host in hosts.items() if host.isolation == "none")
    if not names:
        return None
    return NO_SANDBOX_WARNING.format(names=", ".join(names), verb="says" if len(names) == 1 else "say")


def get_host(hosts: dict[str, Host], name: str) -> Host:
    if name not in hosts:
        known = ", ".join(sorted(hosts)) or "none"
        raise NotFound(f"unknown host {name!r} (hosts.toml has: {known})")
    return hosts[name]


# Writing: `host add` appends a table and `host remove` cuts one out, as text, so the
# organiser's comments and layout elsewhere in the file survive.

_KEY_ORDER = (
    "executor", "address", "scheduler", "tls_ca", "tls_cert", "tls_key", "queue", "account",
    "walltime", "cores", "max_jobs", "job_extra", "interface", "port", "user", "identity",
    "workdir", "data", "python", "slots", "threads", "memory", "gpus", "tags", "isolation",
    "connect_timeout", "command_timeout", "log_directory",
)


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    # A JSON string is a valid TOML basic string (same escapes).
    import json

    return json.dumps(str(value))


def _header(name: str) -> str:
    return f"[hosts.{name}]" if "." not in name else f'[hosts."{name}"]'


def render_host_table(name: str, table: dict, comment: str | None = None) -> str:
    lines = [f"# {line}" for line in (comment or "").splitlines()]
    lines.append(_header(name))
    for key in sorted(table, key=lambda k: _KEY_ORDER.index(k) if k in _KEY_ORDER else 99):
        if table[key] is not None:
            lines.append(f"{key} = {_toml_value(table[key])}")
    return "\n".join(lines) + "\n"


def _write_checked(path: Path, text: str) -> dict[str, Host]:
    """Parse the new text before it replaces the file: a bad write never lands."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    try:
        hosts = load_hosts(tmp)
    except UsageError:
        tmp.unlink()
        raise
    os.replace(tmp, path)
    return hosts


def check_new_name(path: Path, name: str) -> dict[str, Host]:
    hosts = load_hosts(path)
    if name in hosts:
        raise UsageError(
            f"host {name!r} is already in {path.name}: pick another name, or run "
            f"`datarun host remove {name}` first"
        )
    return hosts


def add_host(path: Path, name: str, table: dict, comment: str | None = None) -> Host:
    """Append `[hosts.NAME]` to hosts.toml; a name already there is refused."""
    host = parse_host(name, table)
    hosts = check_new_name(path, name)
    if path.exists():
        text = path.read_text()
    else:
        # Without a file the local host is implicit; writing one must keep it.
        local = hosts["local"]
        text = render_host_table("local", {"executor": "local", "slots": local.slots})
    if text and not text.endswith("\n"):
        text += "\n"
    text += "\n" + render_host_table(name, table, comment)
    _write_checked(path, text)
    return host


def _is_header_of(line: str, name: str) -> bool:
    stripped = line.split("#", 1)[0].strip().replace(" ", "")
    return stripped in (f"[hosts.{name}]", f'[hosts."{name}"]', f"[hosts.'{name}']")


def remove_host(path: Path, name: str) -> None:
    """Cut `[hosts.NAME]`, its keys and the comment lines right above it out of hosts.toml."""
    hosts = load_hosts(path)
    get_host(hosts, name)
    if not path.exists():
        raise UsageError(f"host {name!r} is built in: write {path.name} to change it")
    lines = path.read_text().splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if _is_header_of(line, name)]
    if len(starts) != 1:
        raise UsageError(
            f"cannot find a [hosts.{name}] header in {path.name} to remove: edit the file by hand"
        )
    start = end = starts[0]
    end += 1
    while end < len(lines) and not lines[end].lstrip().startswith("["):
        end += 1
    # Comments directly above the next header describe that table: leave them to it.
    while end - 1 > start and lines[end - 1].lstrip().startswith("#"):
        end -= 1
    while start > 0 and lines[start - 1].lstrip().startswith("#"):
        start -= 1
    while start > 0 and not lines[start - 1].strip() and (end >= len(lines) or not lines[end].strip()):
        start -= 1
    _write_checked(path, "".join(lines[:start] + lines[end:]))


# Workspace-level operations behind `host add`, `host trust` and `host remove`.

def _target(host: Host):
    from datarun.executors.sshconn import load_ssh_config, resolve_target

    return resolve_target(host, load_ssh_config())


def trust_host(workspace, name: str, replace: bool = False):
    """Pin the current key of a registered SSH host in .datarun/known_hosts (a `Pin`: its
    fingerprint and the pins it replaced); a different known key needs `replace`."""
    from datarun.executors.sshconn import pin_host_key

    host = get_host(load_hosts(workspace.hosts_file), name)
    if host.executor != "ssh":
        raise UsageError(f"host {name!r} is not an ssh host: it has no host key to trust")
    return pin_host_key(_target(host), workspace.known_hosts_path, replace=replace)


def table_value(message: str) -> str:
    """The value quoted at the end of a hosts.toml message ("..., got 'x'")."""
    return message.rsplit(", got ", 1)[-1]


def _as_option_error(message: str, name: str) -> str:
    """A hosts.toml message about `host add`'s own values, told in terms of its options."""
    table_prefix = f"hosts.toml: [hosts.{name}] "
    if not message.startswith(table_prefix):
        return message.removeprefix("hosts.toml: ")  # the host's name
    rest = message[len(table_prefix):]
    if rest.startswith("is an ssh host and needs an address"):
        return f"host add {name}: --address is empty: give the host's name or IP address"
    if rest.startswith("is a dask host"):
        return (f"host add {name}: --dask must be a scheduler address, tcp://HOST:PORT or "
                f"tls://HOST:PORT, got {table_value(message)}")
    return f"host add {name}: --{rest}"


def register_host(workspace, name: str, table: dict, trust: bool = False,
                  replace: bool = False) -> dict:
    """`host add`: validate, pin the key if asked (before writing), append to hosts.toml."""
    import time

    if table.get("executor") == "local":
        ssh_only = sorted(set(table) & {"address", "port", "user", "identity", "python"})
        if ssh_only:
            raise UsageError(f"host add {name}: --{ssh_only[0]} is for SSH hosts; the local host is "
                             "this machine (give --slots, --threads, --memory, --workdir, --tags, --gpus)")
    try:
        host = parse_host(name, table)
    except UsageError as error:  # the values came from the command's options, not the file
        raise UsageError(_as_option_error(str(error), name)) from None
    check_new_name(workspace.hosts_file, name)
    if replace and not trust:
        raise UsageError(f"host add {name}: --replace replaces a pinned key: give it with --trust")
    key = None
    replaced: list[str] = []
    comment = None
    if trust:
        if host.executor != "ssh":
            raise UsageError(f"host {name!r} is not an ssh host: --trust needs an ssh host")
        from datarun.executors.sshconn import pin_host_key

        pin = pin_host_key(_target(host), workspace.known_hosts_path, replace=replace)
        key, replaced = pin.fingerprint, pin.replaced
        comment = f"host key {key}, pinned {time.strftime('%Y-%m-%d')} by `datarun host add --trust`"
    add_host(workspace.hosts_file, name, table, comment)
    return {"name": name, "host_key": key, "replaced": replaced, "host": host.to_dict()}


def unregister_host(workspace, name: str) -> None:
    """`host remove`: out of hosts.toml, and its last check out of the database."""
    from datarun.store import hosts as stored_hosts
    from datarun.store.db import open_db

    remove_host(workspace.hosts_file, name)
    db = open_db(workspace)
    try:
        stored_hosts.forget(db, name)
    finally:
        db.conn.close()
