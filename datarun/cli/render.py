"""Pure renderers: rows in, rich Tables out. Nothing here reads state or prints.

Every cell, title and caption goes through `add_row` / `Table(...)` helpers that pass it
through `datarun.safetext.printable`: names, errors and versions come from participants
and hosts, and a terminal must never receive their escape sequences.
"""

import datetime as dt
from dataclasses import dataclass, field
from typing import Literal

from rich.cells import cell_len
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


@dataclass
class Column:
    """A column of a table that fits a width: `drop` orders which go first when the table is
    too wide (lowest first, the rightmost of equals first; None: never dropped); a `name`
    column (team, submission) is abbreviated with "…" rather than dropped. Numbers are
    never cut: a column is shown whole or not at all."""

    header: str
    cells: list[str] = field(default_factory=list)
    justify: Literal["left", "right"] = "right"
    drop: int | None = None
    name: bool = False

    def width(self) -> int:
        return max([cell_len(self.header), *(cell_len(c) for c in self.cells)])


NAME_MIN = 10  # a team or submission name is never abbreviated below this many cells


def fit_columns(columns: list[Column], width: int | None) -> tuple[list[Column], list[Column], dict[int, int]]:
    """(kept, dropped, {index in kept: width}) for a table that fits `width` (None: all of
    them, at their natural widths). Name columns count at most NAME_MIN cells while
    deciding what to drop; whatever room is left is then shared out among them."""
    kept = list(columns)
    dropped: list[Column] = []

    def table_width(cols):  # rich's box: "│ " + cell + " " per column, then "│"
        return sum((min(col.width(), NAME_MIN) if col.name else col.width()) + 3 for col in cols) + 1

    order = sorted((c for c in columns if c.drop is not None),
                   key=lambda c: (c.drop, -columns.index(c)))
    while width is not None and table_width(kept) > width and order:
        column = order.pop(0)
        kept.remove(column)
        dropped.append(column)
    widths = {i: column.width() for i, column in enumerate(kept)}
    if width is not None:
        names = [i for i, column in enumerate(kept) if column.name]
        room = width - (sum(widths[i] + 3 for i in widths if i not in names) + 1 + 3 * len(names))
        wanted = {i: widths[i] for i in names}
        # Give each name what it needs, smallest first, sharing what is left evenly.
        for position, i in enumerate(sorted(names, key=lambda i: wanted[i])):
            share = max(room // (len(names) - position), min(wanted[i], NAME_MIN))
            widths[i] = min(wanted[i], share)
            room -= widths[i]
    return kept, dropped, widths


def fitted_table(columns: list[Column], rows: int, width: int | None, *, title: str | None = None,
                 caption: str | None = None, sections: tuple[int, ...] = ()) -> _RichTable:
    """A table of the columns that fit `width`, naming the dropped ones in its caption."""
    kept, dropped, widths = fit_columns(columns, width)
    if dropped:
        names = ", ".join(column.header for column in columns if column in dropped)
        caption = (caption + "\n" if caption else "") + f"not shown at this width: {names} (--json has all)"
    table = Table(title=title, title_justify="left", caption=caption, caption_justify="left")
    for index, column in enumerate(kept):
        table.add_column(column.header, justify=column.justify, no_wrap=True,
                         overflow="ellipsis" if column.name else "fold", width=widths[index])
    for index in range(rows):
        if index in sections:
            table.add_section()
        add_row(table, *(column.cells[index] for column in kept))
    return table


def _score(value) -> str:
    if value is None:
        return "-"
    return f"{value:.4f}"


def _when(timestamp) -> str:
    if timestamp is None:
        return "-"
    return dt.datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M")


# When a leaderboard is wider than the terminal, columns go in this order (lowest first); rank,
# team, submission, the official score and (privately) its test score always stay, the
# names abbreviated with "…" if need be. The README quotes it.
LEADERBOARD_DROP_ORDER = ("submitted", "valid and test time", "train time", "memory", "cpu",
                          "other test scores", "other validation scores", "contributivity", "folds")


def leaderboard_table(board: dict, width: int | None = None) -> _RichTable:
    """A leaderboard as a table that fits `width` (None: every column)."""
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
    rows = board["rows"]
    name = "name" if rows and "name" in rows[0] else "submission"

    def column(header, values, drop=None, justify="right", is_name=False):
        return Column(header, [str(v) for v in values], justify, drop, is_name)

    arrow = "↓" if board["lower_is_better"][official] else "↑"
    columns = [
        column("rank", ["-" if r.get("rank") is None else r["rank"] for r in rows]),
        column("team", [r["team"] for r in rows], justify="left", is_name=True),
        column("submission", [r[name] for r in rows], justify="left", is_name=True),
    ]
    # Only when some submission has a failed fold: how many of its folds were scored.
    if any(row.get("state") == "partial" for row in rows):
        columns.append(column("folds", [f"{r['folds_scored']}/{r['folds']}" for r in rows], drop=8))
    columns.append(column(f"{official} {arrow}", [_score(r["score"]) for r in rows]))
    columns += [column(n, [_score(r["valid"][n]) for r in rows], drop=6) for n in names[1:]]
    if board["private"]:
        columns.append(column(f"test {official}", [_score(r["test"][official]) for r in rows]))
        columns += [column(f"test {n}", [_score(r["test"][n]) for r in rows], drop=5) for n in names[1:]]
    columns.append(column("contrib", ["-" if r.get("contributivity") is None
                                      else f"{r['contributivity']:.0%}" for r in rows], drop=7))
    columns += [
        column("train", [format_duration(r["train_time"]) for r in rows], drop=2),
        column("valid", [format_duration(r["valid_time"]) for r in rows], drop=1),
        column("test", [format_duration(r["test_time"]) for r in rows], drop=1),
        column("cpu", [format_duration(r["cpu_time"]) for r in rows], drop=4),
        column("memory", [format_size(r["peak_memory"]) for r in rows], drop=3),
        column("submitted", [_when(r["submitted_at"]) for r in rows], drop=0, justify="left"),
    ]
    return fitted_table(columns, len(rows), width, title=title, caption=caption)


def submissions_table(rows: list[dict]) -> _RichTable:
    table = Table(title="submissions", title_justify="left")
    for column in ("id", "problem", "team", "name", "state", "tasks", "submitted"):
        table.add_column(column, justify="right" if column == "id" else "left")
    for row in rows:
        tasks = " ".join(f"{n} {state}" for state, n in row["tasks"].items())
        add_row(table, str(row["id"]), row["problem"], row["team"], row["name"], row["state"], tasks,
                      _when(row["created_at"]))
    return table


def submission_table(sub: dict, score_names: list[str], width: int | None = None) -> _RichTable:
    """A submission's folds (with each task's id, for `datarun logs TASK`), fitting `width`."""
    title = f"submission {sub['id']}: {sub['team']} / {sub['name']} on {sub['problem']} — {sub['state']}"
    tasks = sub["tasks"]
    bagged = sub["bagged"].get("valid")
    extra = 1 if bagged else 0

    def column(header, values, drop=None, justify="right", bag=""):
        return Column(header, [str(v) for v in values] + ([bag] if extra else []), justify, drop)

    columns = [
        column("fold", [t["fold"] for t in tasks], bag="bagged"),
        column("task", [t.get("id", "-") for t in tasks]),
        column("state", [t["state"] if not t["error_kind"] else f"{t['state']}: {t['error_kind']}"
                         for t in tasks], justify="left"),
    ]
    for index, name in enumerate(score_names):
        columns.append(column(f"valid {name}",
                              [_score(t["scores"].get("valid", {}).get(name)) for t in tasks],
                              drop=None if index == 0 else 6,
                              bag=_score(bagged.get(name)) if bagged else ""))
    columns += [
        column("train", [format_duration(t["train_time"]) for t in tasks], drop=3),
        column("valid", [format_duration(t["valid_time"]) for t in tasks], drop=1),
        column("test", [format_duration(t["test_time"]) for t in tasks], drop=1),
        column("cpu", [format_duration(t["cpu_time"]) for t in tasks], drop=5),
        column("memory", [format_size(t["peak_memory"]) for t in tasks], drop=4),
        column("measured by", [(t.get("environment") or {}).get("measured_by") or "-" for t in tasks],
               drop=0, justify="left"),
        column("host", [t["host"] or "-" for t in tasks], drop=2, justify="left"),
    ]
    return fitted_table(columns, len(tasks) + extra, width, title=title,
                        sections=(len(tasks),) if extra else ())


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
