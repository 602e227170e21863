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

Dates are ISO 8601; one without a zone is UTC; a closing date without a time closes at the
end of that day (the last day is open). They are stored, and given in `--json`,
as UTC epoch seconds, like every other time datarun records.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import math
import re
import time
from dataclasses import dataclass
from pathlib import Path

from datarun.errors import NotFound, UsageError
from datarun.problems.registered import get_problem
from datarun.safetext import check_name, name_key
from datarun.sizes import parse_duration
from datarun.store import actions
from datarun.store import events as stored_events
from datarun.store import problems as stored_problems
from datarun.store import submissions as stored_submissions
from datarun.store.db import Database, transaction
from datarun.store.events import Event

NAME_RE = re.compile(r"^[a-z0-9_-]+$")
MAX_TEAM = 100
PARTICIPANTS_HELP = "one team name a line (# comments), or a .csv file with a 'team' column"


# -- dates and durations ------------------------------------------------------------


def parse_when(text: str, what: str, end_of_day: bool = False) -> float:
    """UTC epoch seconds from an ISO 8601 date or date-time; no zone means UTC.

    With `end_of_day` (a closing date), a bare date means the end of that day: `--closes
    2026-12-31` keeps the 31st open and closes at 2027-01-01 00:00 UTC."""
    text = text.strip()
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(
            f"{what}: {text!r} is not an ISO 8601 date; use e.g. 2026-12-01, "
            "2026-12-01T09:00 or 2026-12-01T09:00+02:00"
        ) from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    if end_of_day and _BARE_DATE.match(text):
        value += dt.timedelta(days=1)
    return value.timestamp()


_BARE_DATE = re.compile(r"^\d{4}-?\d{2}-?\d{2}$")


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
        at = raw[: error.start].count(b"\n") + 1
        raise UsageError(f"participants file {path.name} line {at}: not UTF-8 text") from None
    entries: list[tuple[int, str]]
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


def get_event(db: Database, name: str) -> Event:
    name = name_key(name)
    event = stored_events.get(db, name)
    if event is None:
        # It may be a default event not created yet.
        stored_events.create_defaults(db)
        event = stored_events.get(db, name)
    if event is None:
        known = stored_events.names(db)
        hint = f"known: {', '.join(known)}" if known else "none yet: `datarun event add`"
        raise NotFound(f"unknown event {name!r} ({hint})")
    return event


def default_event(db: Database, problem: str) -> Event:
    """The problem's open-to-all event, created on first use."""
    stored_events.create_defaults(db, problem)
    name = stored_events.default_of(db, problem)
    if name is None:
        other = stored_events.get(db, problem)
        raise UsageError(f"event {problem!r} of problem {other['problem'] if other else '?'!r} has "
                         "the name of this problem's default event; submit with --event")
    return get_event(db, name)


def resolve_event(db: Database, problem: str, name: str | None) -> Event:
    """The event a submission to `problem` goes to: `name`, else the problem's default."""
    if name is None:
        return default_event(db, problem)
    event = get_event(db, name)
    if event["problem"] != problem:
        raise UsageError(f"event {name!r} is for problem {event['problem']!r}, not {problem!r}")
    return event


def add_event(db: Database, name: str, problem: str, opens: str | None = None, closes: str | None = None,
              public_opens: str | None = None, participants: Path | None = None,
              min_interval: str | None = None, max_submissions: int | None = None,
              max_final: int | None = None) -> Event:
    """Create an event on a problem; everything is checked before anything is stored."""
    name = check_name(name or "", "event name")
    if not NAME_RE.match(name):
        raise UsageError(f"event name {name!r}: use lowercase letters, digits, '-' and '_'")
    get_problem(db, problem)
    if stored_problems.exists(db, name):
        raise UsageError(f"event name {name!r} is taken by the default event of problem {name!r}; "
                         "choose another name")
    times: dict[str, float | None] = {}
    for key, text in (("opens", opens), ("closes", closes), ("public_opens", public_opens)):
        times[key] = None if text is None else parse_when(text, "--" + key.replace("_", "-"),
                                                          end_of_day=key == "closes")
    opening, closing, public = times["opens"], times["closes"], times["public_opens"]
    _check_dates(opening, closing, public)
    teams = read_participants(participants) if participants is not None else None
    interval = parse_duration(min_interval, "--min-interval") if min_interval is not None else None
    _check_counts(max_submissions, max_final)
    if not stored_events.insert(db, name, problem, opening, closing, public, teams, interval,
                                max_submissions, max_final):
        other = get_event(db, name)
        raise UsageError(f"event {name!r} already exists (on problem {other['problem']!r}); "
                         "choose another name")
    return get_event(db, name)


def _check_dates(opening: float | None, closing: float | None, public: float | None) -> None:
    if opening is not None and closing is not None and closing <= opening:
        raise UsageError(f"--closes ({format_when(closing)}) must be after --opens "
                         f"({format_when(opening)})")
    if opening is not None and public is not None and public < opening:
        raise UsageError(f"--public-opens ({format_when(public)}) must not be "
                         f"before --opens ({format_when(opening)})")


def _check_counts(max_submissions: int | None, max_final: int | None) -> None:
    if max_submissions is not None and max_submissions < 1:
        raise UsageError(f"--max-submissions must be at least 1, got {max_submissions}")
    if max_final is not None and max_final < 1:
        raise UsageError(f"--max-final must be at least 1, got {max_final}")


# What `event edit --clear` may take away, and the option that sets each.
CLEARABLE = {"opens": "--opens", "closes": "--closes", "public-opens": "--public-opens",
             "participants": "--participants", "min-interval": "--min-interval",
             "max-submissions": "--max-submissions", "max-final": "--max-final"}


def edit_event(db: Database, name: str, opens: str | None = None, closes: str | None = None,
               public_opens: str | None = None, participants: Path | None = None,
               min_interval: str | None = None, max_submissions: int | None = None,
               max_final: int | None = None, clear: list[str] | None = None) -> Event:
    """Change an event's rules: the options given, and those named in `clear` taken away.

    Everything is checked against the event as it will be before anything is stored; the
    change, with the values before and after, is recorded. Submissions already stored stay
    whatever the new rules say (the rules are checked when a submission arrives)."""
    event = get_event(db, name)
    clear = list(clear or [])
    for key in clear:
        if key not in CLEARABLE:
            raise UsageError(f"--clear {key}: not a rule to clear; use one of {', '.join(CLEARABLE)}")
    given = {"opens": opens, "closes": closes, "public-opens": public_opens,
             "participants": participants, "min-interval": min_interval,
             "max-submissions": max_submissions, "max-final": max_final}
    both = [key for key in clear if given[key] is not None]
    if both:
        raise UsageError(f"{CLEARABLE[both[0]]} and --clear {both[0]} contradict each other: give one")
    if event["default"] and (clear or any(value is not None for value in given.values())):
        raise UsageError(f"event {event['name']!r} is problem {event['problem']!r}'s default event, "
                         "open to all: make an event with `datarun event add` for rules")
    changes: dict[str, object] = {}
    for key, column in (("opens", "opens"), ("closes", "closes"), ("public-opens", "public_opens")):
        if given[key] is not None:
            changes[column] = parse_when(str(given[key]), "--" + key, end_of_day=key == "closes")
    if participants is not None:
        changes["participants"] = read_participants(participants)
    if min_interval is not None:
        changes["min_interval"] = parse_duration(min_interval, "--min-interval")
    _check_counts(max_submissions, max_final)
    if max_submissions is not None:
        changes["max_submissions"] = max_submissions
    if max_final is not None:
        changes["max_final"] = max_final
    for key in clear:
        changes[key.replace("-", "_")] = None
    if not changes:
        raise UsageError(f"event edit {event['name']}: nothing to change; give a rule's option "
                         "(--closes, --max-submissions, ...) or --clear RULE")
    after = {**event, **changes}
    _check_dates(after["opens"], after["closes"], after["public_opens"])
    before = {key: event[key] for key in changes}
    with transaction(db):
        stored_events.update(db, event["name"], changes)
        actions.record(db, "event_edited", event["name"], {"before": before, "after": changes})
    return get_event(db, event["name"])


def remove_event(db: Database, name: str) -> Event:
    """Remove an event that has no submissions (a problem's default event stays)."""
    event = get_event(db, name)
    if event["default"]:
        raise UsageError(f"event {event['name']!r} is problem {event['problem']!r}'s default event: "
                         "it goes with the problem (`datarun problem remove`)")
    with transaction(db):
        count = stored_submissions.count_of_event(db, event["name"])
        if count:
            raise UsageError(f"event {event['name']!r} has {count} submission{'s' if count > 1 else ''}: "
                             "it cannot be removed; hide them (`datarun submission hide ID`) or "
                             "close the event (`datarun event edit --closes`)")
        stored_events.delete(db, event["name"])
        actions.record(db, "event_removed", event["name"], {"problem": event["problem"]})
    return event


def event_state(event: Event, now: float) -> str:
    if event["opens"] is not None and now < event["opens"]:
        return "upcoming"
    if event["closes"] is not None and now >= event["closes"]:
        return "closed"
    return "open"


def scores_public(event: Event, now: float) -> bool:
    return event["public_opens"] is None or now >= event["public_opens"]


def list_events(db: Database, problem: str | None = None, now: float | None = None) -> list[Event]:
    """Every event (the problems' default events included), by problem then name."""
    now = time.time() if now is None else now
    if problem is not None:
        get_problem(db, problem)
    stored_events.create_defaults(db, problem)
    events = []
    for event in stored_events.listed(db, problem):
        event["state"] = event_state(event, now)
        event["scores_public"] = scores_public(event, now)
        events.append(event)
    return events


def describe_event(db: Database, name: str, now: float | None = None) -> Event:
    """An event's settings, state, and each team's submission count and last submission."""
    now = time.time() if now is None else now
    event = get_event(db, name)
    event["state"] = event_state(event, now)
    event["scores_public"] = scores_public(event, now)
    event["by_team"] = stored_events.by_team(db, event["name"])
    event["submissions"] = sum(team["submissions"] for team in event["by_team"])
    event["teams"] = len(event["by_team"])
    return event


# -- rules --------------------------------------------------------------------------


@dataclass(frozen=True)
class Violation:
    rule: str  # not_open | closed | not_participant | wait | limit
    message: str


def rule_violations(event: Event, team: str, times: list[float], now: float) -> list[Violation]:
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


def enforce_rules(db: Database, event: Event, team: str, now: float, force: bool = False) -> str | None:
    """Refuse a submission that breaks the event's rules, unless forced.

    Returns what a forced submission overrode (stored on its row), else None. Call it in
    the transaction that inserts the submission, so the counts it reads are current.
    """
    times = stored_events.submission_times(db, event["name"], team)
    broken = rule_violations(event, team, times, now)
    if not broken:
        return None
    if not force:
        raise UsageError(f"{broken[0].message} (an organiser can override with --force)")
    return "; ".join(v.message for v in broken)
