"""`datarun host setup`: a virtual environment on a host for the problems it serves.

The requirements are those of the problems named (`[environment] requirements`, or the
kit's requirements.txt), together with those of the problems set up on that host before,
so one environment per host serves them all (pip says so when they conflict). The harness
makes it on the host with the host's own Python and pip settings
(`datarun.remote.envs`), and the versions pip resolved are recorded
(`datarun.store.environments`). From then on the host's harness and runner run with the
environment's Python, so the problems' tasks import what it holds.

A problem's first setup also records its versions on the problem; with `[environment]
strict = true` its tasks then go only to hosts whose environment has those same versions
(`strict_reason`, asked by placement).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from datarun.errors import UsageError
from datarun.executors import open_executor
from datarun.executors.hosts import Host, get_host, load_hosts
from datarun.problems.resources import environment_of
from datarun.store import environments as stored_envs
from datarun.store import problems as stored_problems
from datarun.store import taskqueries
from datarun.store.db import Database
from datarun.store.workspace import Workspace


def with_environments(workspace: Workspace, hosts: Mapping[str, Host]) -> dict[str, Host]:
    """The hosts, each with the Python of its environment where `host setup` made one."""
    envs = stored_envs.load(workspace.environments_path)
    return {name: replace(host, python=envs[name]["python"]) if envs.get(name, {}).get("python") else host
            for name, host in hosts.items()}


def setup_host(workspace: Workspace, db: Database, name: str, problems: list[str]) -> dict[str, Any]:
    """Make the host's environment for `problems` (every registered one when none is named)
    and those set up there before; record it. The report `host setup` prints."""
    from datarun.problems.registered import get_problem

    host = get_host(load_hosts(workspace.hosts_file), name)
    known = stored_problems.names(db)
    named = problems or known
    if not named:
        raise UsageError("no problem registered yet: run `datarun problem add KIT` first")
    before = stored_envs.load(workspace.environments_path).get(name, {})
    served = list(dict.fromkeys([*named, *(p for p in before.get("problems", []) if p in known)]))
    specs = {problem: get_problem(db, problem) for problem in served}
    requirements = list(dict.fromkeys(r for spec in specs.values() for r in environment_of(spec)["requirements"]))
    busy = [task for task in taskqueries.running(db, name)]
    if busy:
        raise UsageError(f"host {name} runs {len(busy)} task(s) of this workspace: set it up when they "
                         "are finished (`datarun status`)")
    executor = open_executor(workspace, host)  # the host's own Python, not an environment's
    try:
        answer = executor.setup_environment(requirements)
    finally:
        executor.close()
    entry = {"python": answer["python"], "folder": answer.get("folder"), "requirements": requirements,
             "versions": answer.get("versions") or {}, "problems": served, "made_at": time.time()}
    stored_envs.record(workspace.environments_path, name, entry)
    recorded = []
    for problem, spec in specs.items():
        env = environment_of(spec)
        if env["requirements"] and not env["versions"]:
            versions = {key: value for key, value in entry["versions"].items()
                        if key in _names(env["requirements"])}
            stored_problems.set_spec_keys(db, problem, {"environment": {**env, "versions": versions}})
            recorded.append(problem)
    return {"host": name, **entry, "made": bool(answer.get("made")), "recorded_for": recorded}


def _names(requirements: list[str]) -> set[str]:
    from datarun.remote.envs import _names as names

    return set(names(requirements))


def strict_reason(env: Mapping[str, Any] | None, problem_env: Mapping[str, Any]) -> str | None:
    """Why a host's environment may not run a strict problem's tasks, or None."""
    if not problem_env.get("strict") or not problem_env.get("versions"):
        return None
    if env is None:
        return "no environment: run `datarun host setup` for it"
    have = env.get("versions") or {}
    for package, version in sorted(problem_env["versions"].items()):
        if have.get(package) != version:
            return f"{package} {have.get(package) or 'missing'} here, {version} recorded (strict)"
    return None
