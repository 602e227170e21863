"""`datarun event add|edit|remove|list|show`: competitions on a problem and their rules."""

from pathlib import Path
from typing import Annotated

import typer

from datarun.cli.app import (
    JsonOption,
    app,
    emit_json,
    err,
    handled,
    open_workspace,
    print_renderable,
)
from datarun.cli.shapes import event as shaped

event_app = typer.Typer(help="Events: who may submit to a problem, when, and how often.",
                        no_args_is_help=True)
app.add_typer(event_app, name="event")

DATE_HELP = "ISO 8601 date or date-time, e.g. 2026-12-01 or 2026-12-01T09:00+01:00 (no zone: UTC)."
CLOSES_HELP = ("When submissions close. " + DATE_HELP
               + " A date without a time closes at the end of that day.")
MAX_FINAL_HELP = ("How many final submissions each team may choose for the private leaderboard "
                  "(`datarun submission select`); a team that chooses none has its best public ones.")


@event_app.command("add")
def add(
    name: Annotated[str, typer.Argument(help="The event's name: lowercase letters, digits, '-', '_'.")],
    problem: Annotated[str, typer.Option("--problem", help="The problem the event is on.")],
    opens: Annotated[str | None, typer.Option("--opens", help="When submissions open. " + DATE_HELP)] = None,
    closes: Annotated[str | None, typer.Option("--closes", help=CLOSES_HELP)] = None,
    public_opens: Annotated[str | None, typer.Option(
        "--public-opens", help="When the public leaderboard starts showing scores (before: "
        "`leaderboard --private` only). " + DATE_HELP)] = None,
    participants: Annotated[Path | None, typer.Option(
        "--participants", help="The teams allowed to submit (default: every team): a text file "
        "with one team name a line (blank lines and # comments ignored), or a .csv file with a "
        "'team' column.")] = None,
    min_interval: Annotated[str | None, typer.Option(
        "--min-interval", help="The least time between two submissions of one team, e.g. 15m, 2h.")] = None,
    max_submissions: Annotated[int | None, typer.Option(
        "--max-submissions", help="The most submissions one team may make (at least 1).")] = None,
    max_final: Annotated[int | None, typer.Option("--max-final", help=MAX_FINAL_HELP)] = None,
    json_out: JsonOption = False,
) -> None:
    """Create an event on a problem. `submit --event NAME` then enforces its rules."""
    from datarun.challenge.events import add_event

    with handled():
        _, db = open_workspace()
        event = add_event(db, name, problem, opens=opens, closes=closes, public_opens=public_opens,
                          participants=participants, min_interval=min_interval,
                          max_submissions=max_submissions, max_final=max_final)
    if json_out:
        emit_json("event", shaped(event))
    else:
        teams = "every team" if event["participants"] is None else f"{len(event['participants'])} teams"
        err(f"event {event['name']} added on problem {event['problem']}, open to {teams}")


@event_app.command("edit")
def edit(
    name: Annotated[str, typer.Argument(help="The event's name.")],
    opens: Annotated[str | None, typer.Option("--opens", help="When submissions open. " + DATE_HELP)] = None,
    closes: Annotated[str | None, typer.Option("--closes", help=CLOSES_HELP)] = None,
    public_opens: Annotated[str | None, typer.Option(
        "--public-opens", help="When the public leaderboard starts showing scores. " + DATE_HELP)] = None,
    participants: Annotated[Path | None, typer.Option(
        "--participants", help="A new participants file (replaces the list).")] = None,
    min_interval: Annotated[str | None, typer.Option(
        "--min-interval", help="The least time between two submissions of one team, e.g. 15m.")] = None,
    max_submissions: Annotated[int | None, typer.Option(
        "--max-submissions", help="The most submissions one team may make.")] = None,
    max_final: Annotated[int | None, typer.Option("--max-final", help=MAX_FINAL_HELP)] = None,
    clear: Annotated[list[str] | None, typer.Option(
        "--clear", help="Take a rule away (repeatable): opens, closes, public-opens, participants, "
        "min-interval, max-submissions, max-final.")] = None,
    json_out: JsonOption = False,
) -> None:
    """Change an event's rules; the change is recorded (`datarun history`)."""
    from datarun.board.contrib import update_contributivity
    from datarun.challenge.events import edit_event

    with handled():
        workspace, db = open_workspace()
        event = edit_event(db, name, opens=opens, closes=closes, public_opens=public_opens,
                           participants=participants, min_interval=min_interval,
                           max_submissions=max_submissions, max_final=max_final, clear=clear)
        # A new --public-opens moves submissions in or out of the public blend.
        update_contributivity(workspace, db, event["problem"])
    if json_out:
        from datarun.cli.shapes import event as shaped

        emit_json("event", shaped(event))
    else:
        err(f"event {event['name']} changed")


@event_app.command("remove")
def remove(
    name: Annotated[str, typer.Argument(help="The event's name.")],
    json_out: JsonOption = False,
) -> None:
    """Remove an event that has no submissions (recorded)."""
    from datarun.challenge.events import remove_event

    with handled():
        _, db = open_workspace()
        event = remove_event(db, name)
    if json_out:
        emit_json("event-remove", {"name": event["name"], "problem": event["problem"], "removed": True})
    else:
        err(f"event {event['name']} removed from problem {event['problem']}")


@event_app.command("list")
def list_command(
    problem: Annotated[str | None, typer.Option("--problem", help="Only this problem's events.")] = None,
    json_out: JsonOption = False,
) -> None:
    """Every event with its dates, state and submission count."""
    from datarun.challenge.events import list_events
    from datarun.cli.render import events_table

    with handled():
        _, db = open_workspace()
        events = list_events(db, problem)
    if json_out:
        emit_json("event-list", {"events": [shaped(e) for e in events]})
    else:
        print_renderable(events_table(events))


@event_app.command("show")
def show(
    name: Annotated[str, typer.Argument(help="The event's name.")],
    json_out: JsonOption = False,
) -> None:
    """An event's rules, participants and each team's submissions."""
    from datarun.challenge.events import describe_event
    from datarun.cli.render import event_tables

    with handled():
        _, db = open_workspace()
        event = describe_event(db, name)
    if json_out:
        emit_json("event", shaped(event))
    else:
        for table in event_tables(event):
            print_renderable(table)
