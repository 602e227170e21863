"""The organiser's side of a sensitive problem: asking its hosts, never holding its data.

A sensitive problem's data, labels and predictions stay on the hosts its owner prepared
(`datarun.problems.owner`, `datarun.remote.sensitive`). Registering it checks through a
host that the prepared data with the manifest's hash is there; its per-task scores come
back sealed in each result (`datarun.dispatch.results.read_sealed_result`); its bagged
scores and blends are asked of a host holding it, which computes them with the same code
the organiser uses for open problems and answers with numbers only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from datarun.errors import DatarunError, HostError, UsageError
from datarun.store.workspace import Workspace


def is_sensitive(problem: dict) -> bool:
    return bool(problem.get("sensitive"))


def hosts_of(problem: dict) -> list[str]:
    return list((problem.get("sensitive") or {}).get("hosts") or [])


def ask(workspace: Workspace, problem: dict, request: dict[str, Any],
        hosts: list[str] | None = None) -> dict[str, Any]:
    """A `sensitive` request about the problem, answered by the first of its hosts that can."""
    from datarun.executors import open_executor
    from datarun.executors.hosts import load_hosts

    registry = load_hosts(workspace.hosts_file)
    errors = []
    for name in hosts or hosts_of(problem):
        if name not in registry:
            errors.append(f"host {name} is not in hosts.toml")
            continue
        executor = open_executor(workspace, registry[name])
        try:
            executor.connect()
            return executor.sensitive(dict(request, data=problem["data_hash"]))
        except DatarunError as error:
            errors.append(str(error))
        finally:
            executor.close()
    raise HostError(f"problem {problem['name']}: no host holding its data answered ({'; '.join(errors)}): "
                    "check the host with `datarun host check`, or ask its data owner")


def register(workspace: Workspace, db, kit_dir: Path, hosts: list[str], manifest_path: Path,
             data_file_cap: int | None = None) -> dict:
    """`problem add KIT --sensitive --host H --manifest F`: check each host holds the prepared
    data the manifest names, then record the problem bound to those hosts. Nothing is stored
    unless every host agrees with the manifest."""
    from datarun.executors.hosts import load_hosts
    from datarun.problems.owner import check_against_kit, read_manifest, store_sensitive
    from datarun.problems.registered import describe_problem
    from datarun.problems.registry import _refuse_registered

    manifest = read_manifest(manifest_path)
    check_against_kit(kit_dir, manifest)
    name = manifest["problem"]
    _refuse_registered(db, name)
    if not hosts:
        raise UsageError(f"problem {name}: a sensitive problem needs --host, the data owner's host "
                         "that holds its prepared data")
    registry = load_hosts(workspace.hosts_file)
    for host in hosts:
        if host not in registry:
            raise UsageError(f"problem {name}: host {host} is not in hosts.toml: add it with "
                             "`datarun host add` first")
    from datarun.executors.floors import check_memory_limit
    from datarun.problems.kits import MEMORY_WHERE, load_kit
    from datarun.problems.rampdata import DEFAULT_MEMORY
    from datarun.problems.rampkit import is_ramp_kit

    memory = DEFAULT_MEMORY if is_ramp_kit(kit_dir) else load_kit(kit_dir).limits.memory
    check_memory_limit(workspace, db, memory, MEMORY_WHERE, hosts=hosts)
    problem = {"name": name, "data_hash": manifest["data_hash"]}
    for host in hosts:
        try:
            answer = ask(workspace, problem, {"op": "check"}, hosts=[host])
        except HostError as error:
            if "holds no sensitive data set" in str(error):
                raise UsageError(f"problem {name}: host {host} holds no prepared data with hash "
                                 f"{manifest['data_hash'][:12]}...: have its owner run `datarun owner "
                                 "prepare` there, with the workdir of hosts.toml") from None
            raise
        theirs = answer.get("manifest") or {}
        if not answer.get("complete") or answer.get("data_hash") != manifest["data_hash"]:
            raise UsageError(f"problem {name}: the data on host {host} does not have the manifest's hash "
                             f"{manifest['data_hash'][:12]}...: have its owner prepare it again")
        for field in ("folds_hash", "n_train", "n_test", "classes", "score_names", "folds", "kind"):
            if theirs.get(field) != manifest[field]:
                raise UsageError(f"problem {name}: host {host} holds a {field} other than the manifest's: "
                                 "use the manifest its owner's last `datarun owner prepare` printed")
        if answer.get("scoring_error"):
            raise UsageError(f"problem {name}: host {host} cannot score its tasks: "
                             f"{str(answer['scoring_error'])[:300]}")
        if answer.get("refused"):
            raise UsageError(f"problem {name}: the data owner of host {host} refuses its tasks: ask them "
                             "to allow it (`datarun owner allow`)")
    store_sensitive(workspace, db, kit_dir, manifest, hosts, data_file_cap)
    return describe_problem(workspace, db, name)


def check_problem(workspace: Workspace, db, name: str) -> dict:
    """`problem check NAME`: per host of a sensitive problem, whether it answers, refuses its
    tasks, and which fully done submissions lost their predictions there (purged by the owner):
    those can no longer be bagged anew nor blended."""
    from datarun.problems.registered import get_problem

    problem = get_problem(db, name)
    if not is_sensitive(problem):
        raise UsageError(f"problem {name} is not sensitive: its predictions are in this workspace")
    submissions = {str(sid): folds for sid, folds in _done_folds(db, name).items()}
    hosts = {}
    for host in hosts_of(problem):
        try:
            answer = ask(workspace, problem, {"op": "kept", "submissions": submissions}, hosts=[host])
            hosts[host] = {"answered": True, "refuses_tasks": bool(answer.get("refused")),
                           "predictions_gone": [int(s) for s in answer.get("missing") or []], "error": None}
        except DatarunError as error:
            hosts[host] = {"answered": False, "refuses_tasks": None, "predictions_gone": [], "error": str(error)}
    return {"problem": name, "hosts": hosts}


def _done_folds(db, problem: str) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for sid, fold in db.execute(
            "SELECT t.submission, t.fold FROM tasks t JOIN submissions s ON s.id = t.submission "
            "WHERE s.problem = ? AND t.state = 'done' ORDER BY t.submission, t.fold", [problem]).fetchall():
        out.setdefault(sid, []).append(fold)
    return out
