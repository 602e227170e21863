"""`datarun status`: task counts per problem and per host, read with SQL only (fast to start)."""

from __future__ import annotations

from typing import Any

from datarun.executors.hosts import load_hosts
from datarun.store import hosts as stored_hosts
from datarun.store import problems as stored_problems
from datarun.store import taskqueries
from datarun.store.db import Database, workspace_id
from datarun.store.space import free_bytes, low_space_warning
from datarun.store.submissions import count_by_problem
from datarun.store.workspace import Workspace


def _first_problem(check: stored_hosts.Check | None) -> str | None:
    if check is None or check.ok:
        return None
    problems = check.report.get("problems")
    return str(problems[0]) if isinstance(problems, list) and problems else None


def unfit_tasks(workspace: Workspace, db: Database, hosts: dict) -> list[dict[str, Any]]:
    """The queued tasks no host can take as hosts.toml and the last checks stand, and why
    (the same report `train` and `dispatch` give, under the problems' own limits)."""
    from datarun.dispatch.schedule import blocked_hosts, unfit
    from datarun.executors import unfit_reason
    from datarun.problems.registered import get_problem
    from datarun.problems.resources import needs_of

    queued = taskqueries.next_queued(db, -1)
    if not queued:
        return []
    problems = {name: get_problem(db, name) for name in {task.problem for task in queued}}
    reasons = {name: reason for name, host in hosts.items() if (reason := unfit_reason(host))}
    from datarun.executors.environments import strict_reason
    from datarun.problems.resources import environment_of
    from datarun.store import environments as stored_envs

    envs = stored_envs.load(workspace.environments_path)
    return [u.to_dict() for u in unfit(queued, hosts, blocked_hosts(db, hosts, reasons),
                                       lambda task: problems[task.problem]["limits"],
                                       lambda task: needs_of(problems[task.problem]),
                                       lambda host, task: strict_reason(envs.get(host),
                                                                        environment_of(problems[task.problem])))]


def workspace_status(workspace: Workspace, db: Database) -> dict[str, Any]:
    problems = taskqueries.counts_by_problem(db)
    for name in stored_problems.names(db):
        problems.setdefault(name, taskqueries.no_counts())
    submissions = count_by_problem(db)
    report: dict[str, dict[str, Any]] = {name: {**counts, "submissions": submissions.get(name, 0)}
                                         for name, counts in problems.items()}
    hosts_used = taskqueries.counts_by_host(db)
    checks = stored_hosts.last_checks(db)
    hosts = {}
    registry = load_hosts(workspace.hosts_file)
    for name, host in registry.items():
        counts = hosts_used.get(name, taskqueries.no_counts())
        check = checks.get(name)
        hosts[name] = {
            "executor": host.executor,
            "slots": host.slots,
            # A host holds up to twice its slots: those beyond the slots wait in its inbox.
            "slots_in_use": min(counts["running"], host.slots),
            "waiting_on_host": max(0, counts["running"] - host.slots),
            "done": counts["done"],
            "failed": counts["failed"],
            "checked_ok": None if check is None else check.ok,
            # Why its last check found it unusable (e.g. it cannot sandbox): it gets no tasks.
            "problem": _first_problem(check),
            "isolation": host.isolation,
            "gpus": host.gpus,
            "tags": list(host.tags),
        }
        if host.executor not in ("local", "ssh"):
            # Asked live, and only for these hosts: `status` stays quick where there are none.
            from datarun.executors.daskconnect import cluster_status

            cluster = hosts[name]["cluster"] = cluster_status(workspace, host)
            threads = sum(worker.get("threads") or 0 for worker in cluster.get("workers") or ())
            if host.slots_from_workers and threads:  # no `slots` given: the workers' total
                hosts[name].update(slots=threads, slots_in_use=min(counts["running"], threads),
                                   waiting_on_host=max(0, counts["running"] - threads))
    free = free_bytes(workspace.state_dir)
    warnings = [low_space_warning("the workspace", workspace.state_dir, free)]
    for name, host in registry.items():
        check = checks.get(name)
        disk_free = check.report.get("disk_free") if check is not None else None
        hosts[name]["disk_free"] = disk_free if isinstance(disk_free, int) else None
        if isinstance(disk_free, int):  # as its last `host check` found it
            warnings.append(low_space_warning(f"host {name}", host.workdir, disk_free))
    return {"workspace": {"root": str(workspace.root), "id": workspace_id(db), "free_space": free},
            "problems": dict(sorted(report.items())), "hosts": hosts,
            "unfit": unfit_tasks(workspace, db, registry),
            "warnings": [warning for warning in warnings if warning]}
