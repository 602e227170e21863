"""`datarun status`: task counts per problem and per host, read with SQL only (fast to start)."""

from __future__ import annotations

from typing import Any

from datarun.executors.hosts import load_hosts
from datarun.store import hosts as stored_hosts
from datarun.store import problems as stored_problems
from datarun.store import tasks
from datarun.store.db import Database, workspace_id
from datarun.store.submissions import count_by_problem
from datarun.store.workspace import Workspace


def _first_problem(check: stored_hosts.Check | None) -> str | None:
    if check is None or check.ok:
        return None
    problems = check.report.get("problems")
    return str(problems[0]) if isinstance(problems, list) and problems else None


def workspace_status(workspace: Workspace, db: Database) -> dict[str, Any]:
    problems = tasks.counts_by_problem(db)
    for name in stored_problems.names(db):
        problems.setdefault(name, tasks.no_counts())
    submissions = count_by_problem(db)
    report: dict[str, dict[str, Any]] = {name: {**counts, "submissions": submissions.get(name, 0)}
                                         for name, counts in problems.items()}
    hosts_used = tasks.counts_by_host(db)
    checks = stored_hosts.last_checks(db)
    hosts = {}
    for name, host in load_hosts(workspace.hosts_file).items():
        counts = hosts_used.get(name, tasks.no_counts())
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
        }
    return {"workspace": {"root": str(workspace.root), "id": workspace_id(db)},
            "problems": dict(sorted(report.items())), "hosts": hosts}
