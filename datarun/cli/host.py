"""`datarun host ...`: the host registry (add, trust, list, remove), `host check` and `host clean`."""

from typing import Annotated

import typer

from datarun.cli.app import (
    JsonOption,
    app,
    emit_json,
    err,
    get_workspace,
    handled,
    open_workspace,
    print_renderable,
)

host_app = typer.Typer(help="Hosts that run tasks: register, pin keys, check, list, remove.",
                       no_args_is_help=True)
app.add_typer(host_app, name="host")



def _yes_no(value) -> str:
    return "-" if value is None else ("ok" if value else "NOT OK")


def hosts_table(rows: list[dict]):
    """Rows of `host_rows` in, a rich Table out."""
    from datarun.cli.render import Table, add_row
    from datarun.sizes import format_size

    table = Table(title="Hosts")
    for column in ("name", "executor", "address", "slots", "threads", "memory", "gpus", "tags",
                   "last check"):
        table.add_column(column)
    for row in rows:
        address = "-"
        if row["executor"] == "ssh":
            address = f"{row['user'] + '@' if row['user'] else ''}{row['address']}:{row['port'] or 22}"
        add_row(
            table,
            row["name"], row["executor"], address, str(row["slots"]), str(row["threads"]),
            format_size(row["memory"]), str(row["gpus"]), ",".join(row["tags"]) or "-",
            _yes_no(row["ok"]),
        )
    return table


def _version(entry: dict | None) -> str:
    if not entry:
        return "-"
    if entry["host"] is None:
        return "MISSING"
    return entry["host"] + ("" if entry["same"] else " (differs)")


def _sandbox_cell(report: dict) -> str:
    """"yes (cgroup-v1)", "NO", or "off" for a host that says isolation = "none"."""
    sandbox = report.get("sandbox")
    if report.get("isolation") == "none":
        return "off"
    if not sandbox:
        return "-"
    measured = f" ({report['measured_by']})" if report.get("measured_by") else ""
    return ("yes" if sandbox.get("ok") else "NO") + measured


def check_table(reports: list[dict]):
    """Reports of `check_hosts` in, a rich Table out: one line per host, then what to fix."""
    from datarun.cli.render import Table, add_row
    from datarun.sizes import format_size

    table = Table(title="Host check")
    for column in ("host", "status", "python", "numpy", "pandas", "sklearn", "psutil", "cpus",
                   "memory", "disk free", "gpus", "harness", "sandbox", "notes"):
        table.add_column(column)
    for report in reports:
        libraries = report.get("libraries") or {}
        version = [_version(libraries.get(name)) for name in ("numpy", "pandas", "sklearn", "psutil")]
        notes = report["problems"] + report["warnings"]
        add_row(
            table,
            report["name"], "ok" if report["ok"] else "NOT OK", report.get("python") or "-",
            *version,
            str(report["cpus"] or "-"), format_size(report["memory"]),
            format_size(report["disk_free"]),
            str(report["gpus"] if report["gpus"] is not None else "-"),
            report.get("harness") or "-", _sandbox_cell(report), "; ".join(notes) or "-",
        )
    return table


def sharing_line(name: str, sharing: dict) -> str:
    """One line on how a host's workdir is shared with other workspaces."""
    from datarun.sizes import format_size

    others = sharing["other_workspaces"]
    shared = (f"shared with {others} other workspace{'s' if others != 1 else ''} holding "
              f"{format_size(sharing['other_bytes'])}" if others else "used by no other workspace")
    mine = ""
    if sharing.get("workspace"):
        mine = (f"; this workspace ({sharing['workspace']}): {sharing['own_tasks']} task folders, "
                f"{format_size(sharing['own_bytes'])}")
    return (f"{name}: workdir {sharing['workdir']} {shared}{mine}; caches "
            f"{format_size(sharing['cache_bytes'])}")


def floor_line(name: str, floor: dict) -> str:
    """One line on what an empty task measured on a host: the least memory limit there."""
    from datarun.sizes import format_size

    return (f"{name}: an empty task measures {format_size(floor['bytes'])} ({floor['measured_by']}, "
            f"{floor['isolation']}): no task's memory limit may be below it")


@host_app.command("add")
def add(
    name: Annotated[str, typer.Argument(help="The host's name in hosts.toml.")],
    address: Annotated[str | None, typer.Option("--address", help="Host name or IP address (an SSH host; not for `local`).")] = None,
    dask: Annotated[str | None, typer.Option(
        "--dask", help="A Dask scheduler's address, tcp://HOST:PORT or tls://HOST:PORT (a Dask host).")] = None,
    tls_ca: Annotated[str | None, typer.Option("--tls-ca", help="Dask TLS: the CA certificate.")] = None,
    tls_cert: Annotated[str | None, typer.Option("--tls-cert", help="Dask TLS: this client's certificate.")] = None,
    tls_key: Annotated[str | None, typer.Option("--tls-key", help="Dask TLS: this client's key.")] = None,
    port: Annotated[int | None, typer.Option("--port", help="SSH port (default 22).")] = None,
    user: Annotated[str | None, typer.Option("--user", help="Login user.")] = None,
    identity: Annotated[str | None, typer.Option("--identity", help="Private key file.")] = None,
    workdir: Annotated[str | None, typer.Option("--workdir", help="Working folder on the host.")] = None,
    python: Annotated[str | None, typer.Option("--python", help="Python on the host.")] = None,
    slots: Annotated[int | None, typer.Option("--slots", help="Tasks at once.")] = None,
    threads: Annotated[int | None, typer.Option("--threads", help="Cores per task.")] = None,
    memory: Annotated[str | None, typer.Option("--memory", help="Memory cap, e.g. 16GB.")] = None,
    gpus: Annotated[int | None, typer.Option("--gpus", help="GPUs on the host.")] = None,
    tags: Annotated[str | None, typer.Option("--tags", help="Comma-separated tags.")] = None,
    trust: Annotated[bool, typer.Option("--trust", help="Pin the host's current SSH key.")] = False,
    replace: Annotated[bool, typer.Option(
        "--replace", help="With --trust: replace a different key already pinned for that address.")] = False,
    json_out: JsonOption = False,
) -> None:
    """Register an SSH host (--address) or a Dask scheduler (--dask) in hosts.toml (and with
    --trust, pin an SSH host's key).

    `host add local [--slots N --threads N --memory M]` puts back the embedded local host
    (this machine, no SSH) after a `host remove local`."""
    from datarun.errors import UsageError
    from datarun.executors.hosts import register_host

    local = name == "local" and dask is None  # its --address, if given, is refused below
    if (address is None) == (dask is None) and not local:
        with handled():
            raise UsageError(f"host add {name}: give --address (an SSH host) or --dask (a Dask "
                             "scheduler), one of them")
    table = {
        "executor": "local" if local else "ssh" if dask is None else "dask", "address": address,
        "scheduler": dask, "tls_ca": tls_ca, "tls_cert": tls_cert, "tls_key": tls_key,
        "port": port, "user": user, "identity": identity,
        "workdir": workdir, "python": python, "slots": slots, "threads": threads,
        "memory": memory, "gpus": gpus,
        "tags": [t.strip() for t in tags.split(",") if t.strip()] if tags is not None else None,
    }
    table = {key: value for key, value in table.items() if value is not None}
    with handled():
        result = register_host(get_workspace(), name, table, trust=trust, replace=replace)
    if json_out:
        emit_json("host-add", result)
        return
    err(f"Added host {name}.")
    if result["host_key"]:
        replaced = f" (replacing {' and '.join(result['replaced'])})" if result["replaced"] else ""
        err(f"Pinned its host key {result['host_key']}{replaced}.")
    elif dask is not None or local:  # no SSH key to pin
        err(f"Check it with `datarun host check {name}`.")
    else:
        err(f"Check it with `datarun host check {name}` (pin its key with `datarun host trust {name}`).")


@host_app.command("trust")
def trust(
    name: Annotated[str, typer.Argument(help="A registered SSH host.")],
    replace: Annotated[bool, typer.Option(
        "--replace", help="Replace a different key pinned for the host (after a known key change).")] = False,
    json_out: JsonOption = False,
) -> None:
    """Pin an SSH host's current key in the workspace's known_hosts.

    A different key already pinned for the host is never replaced without --replace."""
    from datarun.executors.hosts import trust_host

    with handled():
        pin = trust_host(get_workspace(), name, replace=replace)
    if json_out:
        emit_json("host-trust", {"name": name, "host_key": pin.fingerprint, "replaced": pin.replaced})
    elif pin.replaced:
        err(f"Pinned the host key of {name}: {pin.fingerprint} (replacing {' and '.join(pin.replaced)})")
    else:
        err(f"Pinned the host key of {name}: {pin.fingerprint}")


@host_app.command("list")
def list_hosts(json_out: JsonOption = False) -> None:
    """The hosts of hosts.toml and the result of their last check."""
    from datarun.executors.check import host_rows

    with handled():
        rows = host_rows(get_workspace())
    if json_out:
        emit_json("host-list", {"hosts": rows})
    else:
        print_renderable(hosts_table(rows))


@host_app.command("remove")
def remove(
    name: Annotated[str, typer.Argument(help="The host to remove from hosts.toml.")],
    json_out: JsonOption = False,
) -> None:
    """Remove a host from hosts.toml (its pinned key stays in known_hosts)."""
    from datarun.executors.hosts import unregister_host

    with handled():
        unregister_host(get_workspace(), name)
    if json_out:
        emit_json("host-remove", {"name": name, "removed": True})
    else:
        err(f"Removed host {name}.")


@host_app.command("check")
def check(
    name: Annotated[str | None, typer.Argument(help="One host (default: all of them).")] = None,
    json_out: JsonOption = False,
) -> None:
    """Reachability, key, Python and library versions, CPUs, memory, disk, GPUs, harness.

    Exits 1 when a host is not usable; the report says what to install or fix.
    """
    from datarun.executors.check import check_hosts

    with handled():
        reports = check_hosts(get_workspace(), name)
    if json_out:
        emit_json("host-check", {"hosts": reports})
    else:
        print_renderable(check_table(reports))
        for report in reports:
            if report.get("sharing"):
                print_renderable(sharing_line(report["name"], report["sharing"]))
            if report.get("memory_floor"):
                print_renderable(floor_line(report["name"], report["memory_floor"]))
        for report in reports:
            for problem in report["problems"]:
                err(f"{report['name']}: {problem}")
    if not all(report["ok"] for report in reports):
        raise typer.Exit(1)


@host_app.command("clean")
def clean(
    name: Annotated[str, typer.Argument(help="The host to clean this workspace's leftovers off.")],
    force: Annotated[bool, typer.Option(
        "--force", help="Also cancel and remove attempts given up on that still run there.")] = False,
    json_out: JsonOption = False,
) -> None:
    """Remove this workspace's leftovers on a host: its finished and abandoned task folders.

    Never another workspace's folders, never a task this workspace has running there. An
    attempt given up on that still runs there is kept, unless --force cancels it first.
    """
    from datarun.cli.app import open_workspace
    from datarun.dispatch.controls import clean_host
    from datarun.sizes import format_size

    with handled():
        workspace, db = open_workspace()
        result = clean_host(workspace, db, name, force=force)
    if json_out:
        emit_json("host-clean", {**{k: v for k, v in result.items() if k != "workspace"},
                                  "workspace_id": result["workspace"]})
        return
    err(f"host {name}: removed {len(result['removed'])} task folders of this workspace "
        f"({format_size(result['freed'])}); kept {len(result['kept'])} running")
    if result["running"]:
        err(f"host {name}: {len(result['running'])} attempts given up on still run there: "
            f"`datarun host clean {name} --force` cancels and removes them")


@host_app.command("setup")
def setup(
    name: Annotated[str, typer.Argument(help="A host of hosts.toml.")],
    problem: Annotated[list[str] | None, typer.Option(
        "--problem", help="The problem(s) whose requirements to install (default: every registered one).")] = None,
    json_out: JsonOption = False,
) -> None:
    """Make a virtual environment on a host with the problems' requirements (pip, with the
    host's own index settings), record the versions; the host's tasks then run in it."""
    from datarun.executors.environments import setup_host

    with handled():
        workspace, db = open_workspace()
        report = setup_host(workspace, db, name, problem or [])
    if json_out:
        emit_json("host-setup", report)
        return
    versions = ", ".join(f"{package} {version}" for package, version in sorted(report["versions"].items()))
    err(f"{'Made' if report['made'] else 'Reused'} the environment of host {name} for "
        f"{', '.join(report['problems'])}: {report['python']}")
    err(f"versions: {versions}")
