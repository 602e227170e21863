"""`datarun status`: task counts per problem and per host, read with SQL only (fast to start)."""

from datarun.executors.hosts import load_hosts

STATES = ("queued", "running", "done", "failed")


def workspace_status(workspace, db) -> dict:
    problems: dict[str, dict] = {}
    for name, state, count in db.execute(
        "SELECT s.problem, t.state, count(*) FROM tasks t JOIN submissions s ON s.id = t.submission "
        "GROUP BY s.problem, t.state"
    ):
        problems.setdefault(name, dict.fromkeys(STATES, 0))[state] = count
    for (name,) in db.execute("SELECT name FROM problems"):
        problems.setdefault(name, dict.fromkeys(STATES, 0))
    submissions = dict(db.execute("SELECT problem, count(*) FROM submissions GROUP BY problem").fetchall())
    for name, counts in problems.items():
        counts["submissions"] = submissions.get(name, 0)
    hosts_used: dict[str, dict] = {}
    for host, state, count in db.execute(
        "SELECT host, state, count(*) FROM tasks WHERE host IS NOT NULL GROUP BY host, state"
    ):
        hosts_used.setdefault(host, dict.fromkeys(STATES, 0))[state] = count
    import json

    checks, host_problems = {}, {}
    for name, ok, report in db.execute("SELECT name, ok, report FROM hosts"):
        checks[name] = ok
        try:
            found = json.loads(report or "{}").get("problems") or []
        except ValueError:
            found = []
        host_problems[name] = found[0] if found and not ok else None
    hosts = {}
    for name, host in load_hosts(workspace.hosts_file).items():
        counts = hosts_used.get(name, dict.fromkeys(STATES, 0))
        hosts[name] = {
            "executor": host.executor,
            "slots": host.slots,
            # A host holds up to twice its slots: those beyond the slots wait in its inbox.
            "slots_in_use": min(counts["running"], host.slots),
            "waiting_on_host": max(0, counts["running"] - host.slots),
            "done": counts["done"],
            "failed": counts["failed"],
            "checked_ok": None if name not in checks else bool(checks[name]),
            # Why its last check found it unusable (e.g. it cannot sandbox): it gets no tasks.
            "problem": host_problems.get(name),
            "isolation": host.isolation,
        }
    from datarun.store.db import workspace_id

    return {"workspace": {"root": str(workspace.root), "id": workspace_id(db)},
            "problems": dict(sorted(problems.items())), "hosts": hosts}
