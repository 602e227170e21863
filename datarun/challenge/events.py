"""Events: who may submit to a problem, when, and how often, and when scores go public.

An event is a competition on one problem. Its rules are checked when a submission is
stored, inside the same write transaction as the insert, so two teams' concurrent
submissions can never both slip under a limit. The rules are evaluated by a pure
function (`rule_violations`) from the event, the team and the team's earlier submission
times; an organiser may override them with `--force`, and the messages of the rules
broken are kept on the submission row so the override stays visible.

Every problem has a default event, named like the problem, open to every team with no
limits. It is created lazily (on the first submission without `--event`, or when events
are listed), so registering a problem needs to know nothing about events.

Dates are ISO 8601; one without a zone is UTC. They are stored, and given in `--json`,
as UTC epoch seconds, like every other time datarun records.
"""

import csv
import datetime as dt
import io
import json
import math
import re
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from datarun.errors import NotFound, UsageError
from datarun.safetext import check_name, name_key
from datarun.sizes import parse_duration

NAME_RE = re.compile(r"^[a-z0-9_-]+$")
MAX_TEAM = 100
PARTICIPANTS_HELP = "one team name a line (# comments), or a .csv file with a 'team' column"


# -- dates and durations ------------------------------------------------------------


def parse_when(text: str, what: str) -> float:
    """UTC epoch seconds from an ISO 8601 date or date-time; no zone means UTC."""
    try:
        value = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise UsageError(
            f"{what}: {text!r} is not an ISO 8601 date; use e.g. 2026-12-01, "
            "2026-12-01T09:00 or 2026-12-01T09:00+02:00"
        ) from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.timestamp()


def format_when(timestamp: float | None) -> str:
    if timestamp is None:
        return "-"
    value = dt.datetime.fromtimestamp(timestamp, dt.UTC)
    return value.strftime("%Y-%m-%d %H:%M:%S UTC" if value.second else "%Y-%m-%d %H:%M UTC")


def format_span(seconds: float) -> str:
    """A wait or an interval in words, rounded up: '15 minutes', '2 hours', '40 seconds'."""
    seconds = max(seconds, 1)
    if seconds < 120:
        count, unit = math.ceil(seconds), "second"
    elif seconds < 7200 or seconds % 3600:
        count, unit = math.ceil(seconds / 60), "minute"
    else:
        count, unit = math.ceil(seconds / 3600), "hour"
    return f"{count} {unit}{'' if count == 1 else 's'}"


# -- participants -------------------------------------------------------------------


def _team_name(team: str) -> tuple[str, str | None]:
    """The team name as stored (NFKC, trimmed) and what is wrong with it, if anything."""
    try:
        team = check_name(team, "team")
    except UsageError as error:
        return team, str(error)
    if not team:
        return team, "empty team name"
    if len(team) > MAX_TEAM:
        return team, f"team name longer than {MAX_TEAM} characters"
    return team, None


def _csv_entries(text: str, filename: str) -> list[tuple[int, str]]:
    # strict: a stray quote is an error to report, not a field to guess at.
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    column, width, entries = None, 0, []
    try:
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue
            if column is None:
                header = [cell.strip().lower() for cell in row]
                if "team" not in header:
                    raise UsageError(
                        f"participants file {filename} line {reader.line_num}: no 'team' column "
                        f"in the header ({', '.join(header)})")
                column, width = header.index("team"), len(header)
                continue
            if len(row) != width:
                raise UsageError(
                    f"participants file {filename} line {reader.line_num}: {len(row)} fields, "
                    f"the header has {width}")
            entries.append((reader.line_num, row[column].strip()))
    except csv.Error as error:
        raise UsageError(f"participants file {filename} line {reader.line_num}: {error}") from None
    return entries


def read_participants(path: Path) -> list[str]:
    """The team names of a participants file, in file order; UsageError with the line at fault."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"participants file {path} does not exist")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        raise UsageError(f"participants file {path.name} line {line}: not UTF-8 text") from None
    if path.suffix.lower() == ".csv":
        entries = _csv_entries(text, path.name)
    else:
        entries = []
        for number, line in enumerate(text.splitlines(), 1):
            # Strip only spaces so that a tab (a pasted spreadsheet row) is refused below.
            team = line.strip(" \r")
            if team and not team.startswith("#"):
                entries.append((number, team))
    teams: dict[str, int] = {}
    for number, team in entries:
        team, fault = _team_name(team)
        if fault:
            raise UsageError(f"participants file {path.name} line {number}: {fault}")
        if team in teams:
            raise UsageError(f"participants file {path.name} line {number}: team {team!r} is "
                             f"listed twice (first on line {teams[team]})")
        teams[team] = number
    if not teams:
        raise UsageError(f"participants file {path.name} lists no teams: {PARTICIPANTS_HELP}")
    return list(teams)


# -- events -------------------------------------------------------------------------


def _decode(row: dict) -> dict:
    row = dict(row)
    row["default"] = bool(row.pop("is_default"))
    row["participants"] = json.loads(row["participants"]) if row["participants"] else None
    return row


def _create_default_events(db, problem: str | None = None) -> None:
    # One statement, so it is atomic without a transaction of its own; OR IGNORE makes
    # two concurrent callers harmless (and skips a problem whose name an event took).
    sql = ("INSERT OR IGNORE INTO events (name, problem, is_default, created_at) "
           "SELECT p.name, p.name, 1, ? FROM problems p WHERE NOT EXISTS "
           "(SELECT 1 FROM events e WHERE e.problem = p.name AND e.is_default = 1)")
    args: list = [time.time()]
    if problem is not None:
        sql += " AND p.name = ?"
        args.append(problem)
    db.execute(sql, args)


def get_event(db, name: str) -> dict:
    name = name_key(name)
    rows = list(db.query("SELECT * FROM events WHERE name = ?", [name]))
    if not rows:
        # It may be a default event not created yet.
        _create_default_events(db)
        rows = list(db.query("SELECT * FROM events WHERE name = ?", [name]))
    if not rows:
        known = [r["name"] for r in db.query("SELECT name FROM events ORDER BY name")]
        hint = f"known: {', '.join(known)}" if known else "none yet: `datarun event add`"
        raise NotFound(f"unknown event {name!r} ({hint})")
    return _decode(rows[0])


def default_event(db, problem: str) -> dict:
    """The problem's open-to-all event, created on first use."""
    _create_default_events(db, problem)
    row = db.execute(
        "SELECT name FROM events WHERE problem = ? AND is_default = 1", [problem]).fetchone()
    if row is None:
        other = db.execute("SELECT problem FROM events WHERE name = ?", [problem]).fetchone()
        raise UsageError(f"event {problem!r} of problem {other[0]!r} has the name of this "
                         f"problem's default event; submit with --event")
    return get_event(db, row[0])


def resolve_event(db, problem: str, name: str | None) -> dict:
    """The event a submission to `problem` goes to: `name`, else the problem's default."""
    if name is None:
        return default_event(db, problem)
    event = get_event(db, name)
    if event["problem"] != problem:
        raise UsageError(f"event {name!r} is for problem {event['problem']!r}, not {problem!r}")
    return event


def add_event(db, name: str, problem: str, opens: str | None = None, closes: str | None = None,
              public_opens: str | None = None, participants: Path | None = None,
              min_interval: str | None = None, max_submissions: int | None = None) -> dict:
    """Create an event on a problem; everything is checked before anything is stored."""
    from datarun.problems.registry import get_problem

    name = check_name(name or "", "event name")
    if not NAME_RE.match(name):
        raise UsageError(f"event name {name!r}: use lowercase letters, digits, '-' and '_'")
    get_problem(db, problem)
    if db.execute("SELECT 1 FROM problems WHERE name = ?", [name]).fetchone():
        raise UsageError(f"event name {name!r} is taken by the default event of problem {name!r}; "
                         "choose another name")
    times = {}
    for key, text in (("opens", opens), ("closes", closes), ("public_opens", public_opens)):
        times[key] = None if text is None else parse_when(text, "--" + key.replace("_", "-"))
    if times["opens"] is not None and times["closes"] is not None and times["closes"] <= times["opens"]:
        raise UsageError(f"--closes ({format_when(times['closes'])}) must be after --opens "
                         f"({format_when(times['opens'])})")
    if (times["opens"] is not None and times["public_opens"] is not None
            and times["public_opens"] < times["opens"]):
        raise UsageError(f"--public-opens ({format_when(times['public_opens'])}) must not be "
                         f"before --opens ({format_when(times['opens'])})")
    teams = read_participants(participants) if participants is not None else None
    interval = parse_duration(min_interval, "--min-interval") if min_interval is not None else None
    if max_submissions is not None and max_submissions < 1:
        raise UsageError(f"--max-submissions must be at least 1, got {max_submissions}")
    try:
        db.execute(
            "INSERT INTO events (name, problem, is_default, opens, closes, public_opens, "
            "participants, min_interval, max_submissions, created_at) "
            "VALUES (?, ?, 0, ?, ?, ?, ?, ?, ?, ?)",
            [name, problem, times["opens"], times["closes"], times["public_opens"],
             json.dumps(teams) if teams is not None else None, interval, max_submissions,
             time.time()],
        )
    except sqlite3.IntegrityError:
        other = get_event(db, name)
        raise UsageError(f"event {name!r} already exists (on problem {other['problem']!r}); "
                         "choose another name") from None
    return get_event(db, name)


def event_state(event: dict, now: float) -> str:
    if event["opens"] is not None and now < event["opens"]:
        return "upcoming"
    if event["closes"] is not None and now >= event["closes"]:
        return "closed"
    return "open"


def scores_public(event: dict, now: float) -> bool:
    return event["public_opens"] is None or now >= event["public_opens"]


def list_events(db, problem: str | None = None, now: float | None = None) -> list[dict]:
    """Every event (the problems' default events included), by problem then name."""
    now = time.time() if now is None else now
    if problem is not None:
        from datarun.problems.registry import get_problem

        get_problem(db, problem)
    _create_default_events(db, problem)
    sql = ("SELECT e.*, count(s.id) AS submissions, count(DISTINCT s.team) AS teams "
           "FROM events e LEFT JOIN submissions s ON s.event = e.name")
    args = []
    if problem is not None:
        sql += " WHERE e.problem = ?"
        args.append(problem)
    sql += " GROUP BY e.name ORDER BY e.problem, e.is_default DESC, e.name"
    events = []
    for row in db.query(sql, args):
        event = _decode(row)
        event["state"] = event_state(event, now)
        event["scores_public"] = scores_public(event, now)
        events.append(event)
    return events


def describe_event(db, name: str, now: float | None = None) -> dict:
    """An event's settings, state, and each team's submission count and last submission."""
    now = time.time() if now is None else now
    event = get_event(db, name)
    event["state"] = event_state(event, now)
    event["scores_public"] = scores_public(event, now)
    event["by_team"] = [
        dict(row) for row in db.query(
            "SELECT team, count(*) AS submissions, max(created_at) AS last_submitted_at, "
            "sum(forced IS NOT NULL) AS forced FROM submissions WHERE event = ? "
            "GROUP BY team ORDER BY team", [event["name"]])
    ]
    event["submissions"] = sum(team["submissions"] for team in event["by_team"])
    event["teams"] = len(event["by_team"])
    return event


# -- rules --------------------------------------------------------------------------


@dataclass(frozen=True)
class Violation:
    rule: str  # not_open | closed | not_participant | wait | limit
    message: str


def rule_violations(event: dict, team: str, times: list[float], now: float) -> list[Violation]:
    """The rules a submission by `team` at `now` would break; `times` are its earlier ones."""
    name = event["name"]
    broken = []
    if event["opens"] is not None and now < event["opens"]:
        broken.append(Violation("not_open", f"event {name!r} is not open yet: it opens "
                                f"{format_when(event['opens'])}"))
    if event["closes"] is not None and now >= event["closes"]:
        broken.append(Violation("closed", f"event {name!r} closed {format_when(event['closes'])}"))
    if event["participants"] is not None and team not in event["participants"]:
        broken.append(Violation("not_participant", f"team {team!r} is not a participant of event "
                                f"{name!r} (`datarun event show {name}` lists them)"))
    if event["min_interval"] is not None and times:
        wait = max(times) + event["min_interval"] - now
        if wait > 0:
            broken.append(Violation("wait", f"wait {format_span(wait)}: event {name!r} takes one "
                                    f"submission per team every {format_span(event['min_interval'])}"))
    if event["max_submissions"] is not None and len(times) >= event["max_submissions"]:
        broken.append(Violation("limit", f"limit reached: team {team!r} has made {len(times)} of "
                                f"the {event['max_submissions']} submissions event {name!r} allows"))
    return broken


def enforce_rules(db, event: dict, team: str, now: float, force: bool = False) -> str | None:
    """Refuse a submission that breaks the event's rules, unless forced.

    Returns what a forced submission overrode (stored on its row), else None. Call it in
    the transaction that inserts the submission, so the counts it reads are current.
    """
    times = [row[0] for row in db.execute(
        "SELECT created_at FROM submissions WHERE event = ? AND team = ?", [event["name"], team])]
    broken = rule_violations(event, team, times, now)
    if not broken:
        return None
    if not force:
        raise UsageError(f"{broken[0].message} (an organiser can override with --force)")
    return "; ".join(v.message for v in broken)
