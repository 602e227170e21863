"""`datarun host check`: can this host run tasks, and with what?

A check connects (reachability, authentication, host key), ships the harness if the host
lacks it, and asks the harness's `info` what the host has: Python, numpy / pandas /
scikit-learn / psutil versions, cores, memory, free disk in the workdir, GPUs, whether a
sandboxed task starts there (a host that cannot sandbox is not ok unless it says
`isolation = "none"`) and how task memory is measured (a cgroup or /proc). Versions
are compared with the organiser's, since a different scikit-learn can change scores. Its
`usage` tells how the workdir is shared: how many other workspaces have a folder there
and how much disk they hold (counts and sizes only), beside this workspace's own.
The report is one JSON-able dict, stored in the `hosts` table (`ok` is what decides
whether a host is given tasks) and rendered by the CLI.

Hosts are checked side by side, each in its own thread with its own timeouts, so one
hung host delays nothing but its own line of the report.
"""

from __future__ import annotations

import platform
import time
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata
from typing import Any

from datarun.errors import DatarunError
from datarun.executors import open_executor
from datarun.executors.base import Executor
from datarun.executors.hosts import Host, get_host, load_hosts
from datarun.store import hosts as stored_hosts
from datarun.store.db import Database, open_db, transaction
from datarun.store.space import low_space_warning
from datarun.store.workspace import Workspace

# name in the harness report -> the distribution to install
REQUIRED = {"numpy": "numpy", "pandas": "pandas", "sklearn": "scikit-learn", "psutil": "psutil"}
MIN_PYTHON = (3, 9)


def organiser_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name, dist in {**REQUIRED, "rampwf": "ramp-workflow"}.items():
        try:
            versions[name] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def blank_report(host: Host) -> dict[str, Any]:
    address = None
    if host.executor == "ssh":
        address = f"{host.user + '@' if host.user else ''}{host.address}:{host.port or 22}"
    elif host.executor == "dask":
        address = host.scheduler
    elif host.executor != "local":
        address = f"{host.executor} queue {host.queue or '(default)'}"
    return {
        "name": host.name, "executor": host.executor, "address": address,
        "checked_at": time.time(), "ok": False, "connected": False, "host_key": None,
        "python": None, "libraries": {}, "cpus": None, "memory": None, "disk_free": None,
        "gpus": None, "gpu_names": [], "harness": None, "problems": [], "warnings": [],
        "install": None, "sharing": None, "isolation": host.isolation, "sandbox": None,
        "measured_by": None, "memory_floor": None,
    }


def judge(report: dict[str, Any], host: Host, info: dict[str, Any], mine: dict[str, str | None]) -> None:
    """Fill the report from the harness's `info` and decide whether the host is usable."""
    report.update({key: info.get(key) for key in ("python", "cpus", "memory", "disk_free", "gpus",
                                                  "harness", "sandbox", "measured_by")})
    sandbox = info.get("sandbox") or {"ok": False, "reason": "the harness did not say"}
    if host.isolation == "sandbox" and not sandbox.get("ok"):
        report["problems"].append(f"cannot sandbox tasks, so it gets none: {sandbox.get('reason')}")
    elif host.isolation == "none":
        report["warnings"].append('isolation = "none": submissions there can read everything '
                                  "the host's user can")
    python = info.get("python") or "0"
    version = tuple(int(part) for part in python.split(".")[:2] if part.isdigit())
    if version < MIN_PYTHON:
        report["problems"].append(
            f"Python {python} is too old: install Python {'.'.join(map(str, MIN_PYTHON))} or newer"
        )
    missing = []
    for name, dist in REQUIRED.items():
        theirs, ours = info.get(name), mine.get(name)
        report["libraries"][name] = {"host": theirs, "organiser": ours, "same": theirs == ours}
        if theirs is None:
            missing.append(dist)
        elif theirs != ours:
            report["warnings"].append(f"{dist} {theirs} differs from the organiser's {ours}")
    # Optional: only RAMP problems need it, so its absence is a warning, never a fault.
    theirs, ours = info.get("rampwf"), mine.get("rampwf")
    report["libraries"]["rampwf"] = {"host": theirs, "organiser": ours, "same": theirs == ours}
    if theirs is None:
        report["warnings"].append("no ramp-workflow: RAMP problems' tasks will fail here "
                                  f"(`{host.python} -m pip install ramp-workflow`)")
    elif ours is not None and theirs != ours:
        report["warnings"].append(f"ramp-workflow {theirs} differs from the organiser's {ours}")
    if missing:
        report["install"] = f"{host.python} -m pip install {' '.join(missing)}"
        report["problems"].append(f"missing {', '.join(missing)}: run `{report['install']}` there")
    low = low_space_warning(f"host {host.name}", host.workdir, report["disk_free"])
    if low is not None:
        report["warnings"].append(low.removeprefix("warning: "))
    if host.gpus and (report["gpus"] or 0) < host.gpus:
        report["problems"].append(
            f"hosts.toml says {host.gpus} GPUs, the host shows {report['gpus'] or 0}"
        )
    if report["cpus"] and host.slots * host.threads > report["cpus"]:
        report["warnings"].append(
            f"slots x threads = {host.slots * host.threads} is more than its {report['cpus']} CPUs"
        )
    if host.memory and report["memory"] and host.memory > report["memory"]:
        report["warnings"].append("hosts.toml gives it more memory than it has")
    report["ok"] = not report["problems"]


def sharing_report(usage: Any) -> dict[str, Any] | None:
    """The harness's `usage` answer as the report's `sharing`, or None if it is not one: it
    comes from the host, so it is checked as data (sizes and counts are whole numbers)."""
    try:
        mine = usage.get("workspace") or {}
        numbers = {"own_bytes": mine.get("bytes", 0), "own_tasks": mine.get("tasks", 0),
                   "other_workspaces": usage["other_workspaces"], "other_bytes": usage["other_bytes"],
                   "cache_bytes": usage["shared_bytes"]}
        workdir, workspace = usage["workdir"], mine.get("id")
    except (AttributeError, KeyError, TypeError):
        return None
    if not all(isinstance(value, int) and not isinstance(value, bool) and value >= 0
               for value in numbers.values()):
        return None
    if not isinstance(workdir, str) or not (workspace is None or isinstance(workspace, str)):
        return None
    return {"workdir": workdir, "workspace": workspace, **numbers}


def measure_floor(report: dict[str, Any], host: Host, executor: Executor, info: dict[str, Any]) -> None:
    """Run an empty task on the host, where one can run: what it measures is the least
    memory limit a task may have there (`memory_floor`; a failure is a warning)."""
    if info.get("missing") or (host.isolation == "sandbox" and not (info.get("sandbox") or {}).get("ok")):
        return  # no task can run there: the check says why
    try:
        floor = executor.memory_floor()
    except DatarunError as error:
        report["warnings"].append(f"an empty task's memory was not measured: {error}")
        return
    if floor is None:
        return
    size = floor.get("floor")
    if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
        report["warnings"].append("an empty task's memory was not measured: the harness's floor "
                                  "answer was not understood")
        return
    report["memory_floor"] = {"bytes": size, "measured_by": str(floor.get("measured_by") or "unknown"),
                              "isolation": str(floor.get("isolation") or host.isolation)}


def check_host(workspace: Workspace, host: Host) -> dict[str, Any]:
    """Check one host; never raises for the host's own faults: they go in `problems`."""
    report = blank_report(host)
    mine = organiser_versions()
    report["organiser"] = mine
    executor: Executor | None = None
    try:
        executor = open_executor(workspace, host)
        host_key = executor.connect()
        if host_key is not None:
            report["connected"], report["host_key"] = True, host_key
        info = executor.info()
        report["connected"] = True
        try:
            report["sharing"] = sharing_report(executor.usage())
        except DatarunError as error:  # how the workdir is shared is news, not a fault
            report["warnings"].append(f"how its workdir is shared is unknown: {error}")
        else:
            if report["sharing"] is None:
                report["warnings"].append("how its workdir is shared is unknown: the harness's "
                                          "usage answer was not understood")
        report["gpu_names"] = executor.gpu_names()
        measure_floor(report, host, executor, info)
    except DatarunError as error:  # a host fault, or bad SSH settings (~/.ssh/config)
        report["problems"].append(str(error))
        return report
    finally:
        if executor is not None:
            executor.close()
    judge(report, host, info, mine)
    if isinstance(info.get("workers"), dict):
        judge_workers(report, host, info["workers"], mine)
    return report


def versions_seen(report: dict[str, Any], env: dict[str, Any] | None) -> dict[str, str | None]:
    """A host's package versions: its libraries as checked, and its environment's packages."""
    seen = {DISTRIBUTION_NAMES.get(name, name): value.get("host")
            for name, value in (report.get("libraries") or {}).items()}
    seen.update((env or {}).get("versions") or {})
    return seen


DISTRIBUTION_NAMES = {"sklearn": "scikit-learn", "rampwf": "ramp-workflow"}


def note_differences(reports: list[dict[str, Any]], envs: dict[str, dict[str, Any]]) -> None:
    """Add to each report the packages whose versions differ between the hosts (those
    checked now, and any other host's recorded environment) and the organiser's machine:
    `differences` = {package: {host or "organiser": version}}, and one warning per package."""
    seen = {report["name"]: versions_seen(report, envs.get(report["name"])) for report in reports
            if report.get("connected")}
    for name, env in envs.items():
        seen.setdefault(name, dict(env.get("versions") or {}))
    organiser = {DISTRIBUTION_NAMES.get(k, k): v for k, v in organiser_versions().items() if k != "python"}
    packages = sorted({package for versions in seen.values() for package in versions})
    differences = {}
    for package in packages:
        by_host = {host: versions.get(package) for host, versions in sorted(seen.items())}
        values = set(by_host.values())
        if package in organiser:
            by_host["organiser"] = organiser[package]
        if len(values) > 1:
            differences[package] = by_host
    for report in reports:
        report["differences"] = differences
        mine = seen.get(report["name"], {})
        for package, by_host in differences.items():
            if report["name"] in seen:
                others = ", ".join(f"{host} {version or 'none'}" for host, version in by_host.items()
                                   if host != report["name"])
                report["warnings"].append(f"{package} {mine.get(package) or 'none'} here differs between hosts: {others}")


def judge_workers(report: dict[str, Any], host: Host, workers: dict[str, Any],
                  mine: dict[str, str | None]) -> None:
    """A Dask host is as good as each of its workers: each one is checked, and named."""
    report["workers"] = workers
    for address, worker in workers.items():
        if isinstance(worker, dict) and worker.get("error"):
            report["problems"].append(f"worker {address}: the harness failed there: {worker['error']}")
            continue
        missing = [REQUIRED[name] for name in worker.get("missing") or [] if name in REQUIRED]
        if missing:
            report["problems"].append(f"worker {address} lacks {', '.join(missing)}: install them "
                                      "in the workers' Python environment")
        if host.isolation == "sandbox" and worker.get("sandbox") is False:
            report["problems"].append(f"worker {address} cannot sandbox tasks, so the host gets none")
        if worker.get("sklearn") not in (None, mine.get("sklearn")):
            report["warnings"].append(f"worker {address}: scikit-learn {worker.get('sklearn')} "
                                      f"differs from the organiser's {mine.get('sklearn')}")
    report["problems"] = list(dict.fromkeys(report["problems"]))
    report["ok"] = not report["problems"]


def record(db: Database, report: dict[str, Any]) -> None:
    stored_hosts.record(db, report["name"], report["checked_at"], report["ok"], report)
    floor = report.get("memory_floor")
    if floor:
        stored_hosts.record_floor(db, report["name"], floor["bytes"], report["checked_at"],
                                  f"{floor['measured_by']}, {floor['isolation']}")


def check_hosts(workspace: Workspace, name: str | None = None) -> list[dict[str, Any]]:
    """Check one host, or every host of hosts.toml side by side; record each report."""
    from datarun.executors.environments import with_environments
    from datarun.store import environments as stored_envs

    hosts = with_environments(workspace, load_hosts(workspace.hosts_file))  # as the dispatcher runs them
    chosen = [get_host(hosts, name)] if name else list(hosts.values())
    _ = workspace.id  # read once here, not by each checking thread
    with ThreadPoolExecutor(max_workers=max(1, len(chosen))) as pool:
        reports = list(pool.map(lambda host: check_host(workspace, host), chosen))
    envs = stored_envs.load(workspace.environments_path)
    for report in reports:
        env = envs.get(report["name"])
        report["environment"] = None if env is None else {
            key: env.get(key) for key in ("python", "requirements", "versions", "problems", "made_at")}
    note_differences(reports, envs)
    db = open_db(workspace)
    try:
        with transaction(db):
            for report in reports:
                record(db, report)
    finally:
        db.conn.close()
    return reports


def host_rows(workspace: Workspace) -> list[dict[str, Any]]:
    """hosts.toml's hosts with their last check, for `host list`."""
    hosts = load_hosts(workspace.hosts_file)
    db = open_db(workspace)
    try:
        checks = stored_hosts.last_checks(db)
    finally:
        db.conn.close()
    rows = []
    for host in hosts.values():
        row = host.to_dict()
        check = checks.get(host.name)
        row["checked_at"] = check.checked_at if check else None
        row["ok"] = check.ok if check else None
        rows.append(row)
    return rows
