"""Pure renderers: rows in, rich Tables out. Nothing here reads state or prints.

Every cell, title and caption goes through `add_row` / `Table(...)` helpers that pass it
through `datarun.safetext.printable`: names, errors and versions come from participants
and hosts, and a terminal must never receive their escape sequences.
"""

import datetime as dt

from rich.table import Table as _RichTable

from datarun.safetext import printable
from datarun.sizes import format_duration, format_size


def Table(*, title: str | None = None, caption: str | None = None, **options) -> _RichTable:  # noqa: N802
    """A rich Table whose title and caption are printable text."""
    return _RichTable(title=None if title is None else printable(title),
                      caption=None if caption is None else printable(caption), **options)


def add_row(table: _RichTable, *cells) -> None:
    """Add a row of cells, each made printable (None: an empty cell)."""
    table.add_row(*("" if cell is None else printable(cell) for cell in cells))


def _score(value) -> str:
    if value is None:
        return "-"
    return f"{value:.4f}"


def _when(timestamp) -> str:
    if timestamp is None:
        return "-"
    return dt.datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M")


def leaderboard_table(board: dict) -> _RichTable:
    names = board["scores"]
    official = board["official_score"]
    scope = board["problem"] + (f" / event {board['event']}" if board.get("event") else "")
    title = f"{scope} — {'private' if board['private'] else 'public'} leaderboard"
    blend = board.get("blend")
    caption = None
    if blend and blend.get("combined_valid") is not None:
        caption = (f"blended {blend['score']} (valid, mean over folds): {_score(blend['combined_valid'])}, "
                   f"best single {_score(blend['best_single_valid'])}")
        if blend.get("combined_test") is not None:
            caption += f"; blended test {_score(blend['combined_test'])}"
    if board.get("note"):
        caption = (caption + "\n" if caption else "") + f"note: {board['note']}"
    table = Table(title=title, title_justify="left", caption=caption, caption_justify="left")
    table.add_column("rank", justify="right")
    table.add_column("team")
    table.add_column("submission")
    # Only when some submission has a failed fold: how many of its folds were scored.
    partial = any(row.get("state") == "partial" for row in board["rows"])
    if partial:
        table.add_column("folds", justify="right")
    arrow = "↓" if board["lower_is_better"][official] else "↑"
    table.add_column(f"{official} {arrow}", justify="right")
    for name in names[1:]:
        table.add_column(name, justify="right")
    if board["private"]:
        for name in names:
            table.add_column(f"test {name}", justify="right")
    table.add_column("contrib", justify="right")
    for column in ("train", "valid", "test", "cpu", "memory"):
        table.add_column(column, justify="right")
    table.add_column("submitted")
    for row in board["rows"]:
        rank = "-" if row.get("rank") is None else str(row["rank"])
        cells = [rank, row["team"], row["submission"]]
        if partial:
            cells.append(f"{row['folds_scored']}/{row['folds']}")
        cells.append(_score(row["score"]))
        cells += [_score(row["valid"][name]) for name in names[1:]]
        if board["private"]:
            cells += [_score(row["test"][name]) for name in names]
        contrib = row.get("contributivity")
        cells.append("-" if contrib is None else f"{contrib:.0%}")
        cells += [format_duration(row["train_time"]), format_duration(row["valid_time"]),
                  format_duration(row["test_time"]), format_duration(row["cpu_time"]),
                  format_size(row["peak_memory"]), _when(row["submitted_at"])]
        add_row(table, *cells)
    return table


def submissions_table(rows: list[dict]) -> _RichTable:
    table = Table(title="submissions", title_justify="left")
    for column in ("id", "problem", "team", "name", "state", "tasks", "submitted"):
        table.add_column(column, justify="right" if column == "id" else "left")
    for row in rows:
        tasks = " ".join(f"{n} {state}" for state, n in row["tasks"].items())
        add_row(table, str(row["id"]), row["problem"], row["team"], row["name"], row["state"], tasks,
                      _when(row["created_at"]))
    return table


def submission_table(sub: dict, score_names: list[str]) -> _RichTable:
    title = f"submission {sub['id']}: {sub['team']} / {sub['name']} on {sub['problem']} — {sub['state']}"
    table = Table(title=title, title_justify="left")
    table.add_column("fold", justify="right")
    table.add_column("state")
    for name in score_names:
        table.add_column(f"valid {name}", justify="right")
    for column in ("train", "valid", "test", "cpu", "memory", "measured by", "host"):
        table.add_column(column, justify="right" if column not in ("host", "measured by") else "left")
    for task in sub["tasks"]:
        valid = task["scores"].get("valid", {})
        state = task["state"] if not task["error_kind"] else f"{task['state']}: {task['error_kind']}"
        add_row(table, str(task["fold"]), state, *[_score(valid.get(n)) for n in score_names],
                      format_duration(task["train_time"]), format_duration(task["valid_time"]),
                      format_duration(task["test_time"]), format_duration(task["cpu_time"]),
                      format_size(task["peak_memory"]),
                      (task.get("environment") or {}).get("measured_by") or "-", task["host"] or "-")
    if sub["bagged"].get("valid"):
        table.add_section()
        add_row(table, "bagged", "", *[_score(sub["bagged"]["valid"].get(n)) for n in score_names],
                      "", "", "", "", "", "", "")
    return table


def status_tables(status: dict) -> list[_RichTable]:
    problems = Table(title="tasks per problem", title_justify="left")
    for column in ("problem", "submissions", "queued", "running", "done", "failed", "cancelled"):
        problems.add_column(column, justify="left" if column == "problem" else "right")
    for name, counts in status["problems"].items():
        add_row(problems, name, str(counts["submissions"]), str(counts["queued"]), str(counts["running"]),
                str(counts["done"]), str(counts["failed"]), str(counts["cancelled"]))
    hosts = Table(title="hosts", title_justify="left")
    for column in ("host", "executor", "slots in use", "done", "failed", "check"):
        hosts.add_column(column, justify="left" if column in ("host", "executor", "check") else "right")
    for name, host in status["hosts"].items():
        check = {None: "not checked", True: "ok", False: "NOT OK"}[host["checked_ok"]]
        if host.get("problem"):
            check += f": {host['problem']}"
        if host.get("isolation") == "none":
            check += " (no sandbox)"
        in_use = f"{host['slots_in_use']}/{host['slots']}"
        if host.get("waiting_on_host"):
            in_use += f" (+{host['waiting_on_host']} waiting)"
        add_row(hosts, name, host["executor"], in_use, str(host["done"]),
                      str(host["failed"]), check)
    tables = [problems, hosts]
    clusters = {name: host["cluster"] for name, host in status["hosts"].items() if "cluster" in host}
    if clusters:
        workers = Table(title="cluster workers", title_justify="left")
        for column in ("host", "worker", "threads", "tasks"):
            workers.add_column(column, justify="left" if column in ("host", "worker") else "right")
        for name, cluster in clusters.items():
            if cluster.get("error"):
                add_row(workers, name, cluster["error"], "", "")
                continue
            for worker in cluster.get("workers") or []:
                add_row(workers, name, f"{worker['name']} {worker['address']}", str(worker["threads"]),
                        str(worker["tasks"]))
            for job in cluster.get("jobs") or []:
                add_row(workers, name, f"job {job['job']} {job['state']} {job['time']}", "", "")
            if not (cluster.get("workers") or cluster.get("jobs")):
                add_row(workers, name, "no workers now", "", "")
        tables.append(workers)
    return tables


def _utc(timestamp) -> str:
    from datarun.challenge.events import format_when

    return format_when(timestamp)


def _rules(event: dict) -> str:
    from datarun.challenge.events import format_span

    rules = []
    if event["min_interval"] is not None:
        rules.append(f"one per {format_span(event['min_interval'])}")
    if event["max_submissions"] is not None:
        rules.append(f"at most {event['max_submissions']}")
    return ", ".join(rules) or "-"


def events_table(events: list[dict]) -> _RichTable:
    table = Table(title="events", title_justify="left")
    for column in ("event", "problem", "state", "opens", "closes", "public from", "teams allowed",
                   "limits", "submissions"):
        table.add_column(column, justify="right" if column == "submissions" else "left")
    for event in events:
        allowed = "all" if event["participants"] is None else str(len(event["participants"]))
        name = event["name"] + (" (default)" if event["default"] else "")
        add_row(table, name, event["problem"], event["state"], _utc(event["opens"]),
                      _utc(event["closes"]), _utc(event["public_opens"]), allowed, _rules(event),
                      str(event["submissions"]))
    return table


def event_tables(event: dict) -> list[_RichTable]:
    settings = Table(title=f"event {event['name']} on {event['problem']} — {event['state']}",
                     title_justify="left", show_header=False)
    settings.add_column("setting")
    settings.add_column("value")
    participants = event["participants"]
    rows = [
        ("opens", _utc(event["opens"])),
        ("closes", _utc(event["closes"])),
        ("scores public from", _utc(event["public_opens"])),
        ("participants", "every team" if participants is None else ", ".join(participants)),
        ("limits per team", _rules(event)),
        ("submissions", f"{event['submissions']} from {event['teams']} teams"),
    ]
    for key, value in rows:
        add_row(settings, key, value)
    teams = Table(title="submissions per team", title_justify="left")
    for column in ("team", "submissions", "forced", "last submitted"):
        teams.add_column(column, justify="left" if column in ("team", "last submitted") else "right")
    for row in event["by_team"]:
        add_row(teams, row["team"], str(row["submissions"]), str(row["forced"]),
                      _utc(row["last_submitted_at"]))
    return [settings, teams] if event["by_team"] else [settings]
