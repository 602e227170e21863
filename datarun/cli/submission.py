"""`datarun submit` and `datarun submission list|show`."""

from pathlib import Path
from typing import Annotated

import typer

from datarun.cli.app import (
    app,
    emit_json,
    err,
    handled,
    open_workspace,
    print_renderable,
    warn_unsandboxed,
)

submission_app = typer.Typer(help="List and inspect submissions.", no_args_is_help=True)
app.add_typer(submission_app, name="submission")

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")]


@app.command()
def submit(
    problem: Annotated[str, typer.Argument(help="The problem's name.")],
    folder: Annotated[Path, typer.Argument(help="The folder holding the submission's files.")],
    team: Annotated[str, typer.Option("--team", help="The team submitting.")],
    name: Annotated[str | None, typer.Option("--name", help="The submission's name (default: the folder's name).")] = None,
    event: Annotated[str | None, typer.Option("--event", help="The event submitted to (default: the problem's open-to-all event).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Organisers: store it even if it breaks the event's rules; the override is recorded on the submission.")] = False,
    json_out: JsonOption = False,
) -> None:
    """Store a submission and queue one task per fold (run them with `datarun train`).

    The event's rules are enforced: when it opens and closes, who takes part, the interval
    between one team's submissions and their number.
    """
    from datarun.challenge.submissions import submit as submit_core

    with handled():
        workspace, db = open_workspace()
        result = submit_core(workspace, db, problem, folder, team, name, event=event, force=force)
    warn_unsandboxed(workspace)
    if result["created"]:
        from datarun.dispatch.runners import warm_runners

        warm_runners(workspace)  # its imports overlap with whatever the organiser does next
    if json_out:
        emit_json(result)
    elif result["created"]:
        err(f"submission {result['id']} ({result['team']} / {result['name']}) stored in event "
            f"{result['event']}; {result['tasks']} tasks queued")
        if result["forced"]:
            err(f"forced past the event's rules: {result['forced']}")
    else:
        err(f"identical to submission {result['id']} ({result['team']} / {result['name']}); not run again")


@submission_app.command("list")
def list_command(
    problem: Annotated[str | None, typer.Option("--problem", help="Only this problem's submissions.")] = None,
    json_out: JsonOption = False,
) -> None:
    """List submissions with their state."""
    from datarun.challenge.submissions import list_submissions
    from datarun.cli.render import submissions_table

    with handled():
        _, db = open_workspace()
        if problem:
            from datarun.problems.registry import get_problem

            get_problem(db, problem)
        rows = list_submissions(db, problem)
    if json_out:
        emit_json(rows)
    else:
        print_renderable(submissions_table(rows))


@submission_app.command("show")
def show(
    submission_id: Annotated[str, typer.Argument(metavar="ID", help="The submission's id.")],
    code: Annotated[bool, typer.Option("--code", help="Show the participant's code.")] = False,
    json_out: JsonOption = False,
) -> None:
    """Per-fold scores, times, CPU, memory, state and errors of a submission (or its code)."""
    from datarun.challenge.submissions import describe_submission, error_tail, submission_code
    from datarun.problems.registry import get_problem

    with handled():
        workspace, db = open_workspace()
        if code:
            files = submission_code(workspace, db, submission_id)
        else:
            sub = describe_submission(workspace, db, submission_id)
            score_names = get_problem(db, sub["problem"])["score_names"]
    if code:
        if json_out:
            emit_json(files)
            return
        from rich.syntax import Syntax

        from datarun.safetext import printable

        for filename, text in files.items():
            print_renderable(f"── {filename}")
            # A participant's code may hold escape characters in its strings.
            print_renderable(Syntax(printable(text), "python", line_numbers=True))
        return
    if json_out:
        emit_json(sub)
        return
    from datarun.cli.render import submission_table

    print_renderable(submission_table(sub, score_names))
    print_renderable(f"event {sub['event']}")
    if sub.get("hidden_at") is not None:
        from datarun.challenge.events import format_when

        reason = f": {sub['hidden_reason']}" if sub.get("hidden_reason") else ""
        print_renderable(f"hidden since {format_when(sub['hidden_at'])}{reason} (off every board; "
                         f"`datarun submission unhide {sub['id']}`)")
    if sub.get("final_at") is not None:
        print_renderable("chosen by its team as a final submission")
    if sub.get("forced"):
        print_renderable(f"submitted with --force, overriding: {sub['forced']}")
    for task in sub["tasks"]:
        if task["error"]:
            tail = error_tail(task["error"])
            print_renderable(f"fold {task['fold']} {task['error_kind']}: " + " | ".join(tail))
        for event in task["events"]:
            print_renderable(f"fold {task['fold']} attempt {event['attempt']}: {event['text']}")
    environment = next((t["environment"] for t in sub["tasks"] if t["environment"]), None)
    if environment:
        print_renderable("ran with " + ", ".join(f"{k} {v}" for k, v in sorted(environment.items())))


def _refresh_blends(workspace, db, problem: str) -> None:
    """A board's blend follows its submissions at once, not at the next dispatch."""
    from datarun.board.contrib import update_contributivity

    update_contributivity(workspace, db, problem)


@submission_app.command("hide")
def hide(
    submission_id: Annotated[str, typer.Argument(metavar="ID", help="The submission's id.")],
    reason: Annotated[str | None, typer.Option("--reason", help="Why, kept in the record.")] = None,
    json_out: JsonOption = False,
) -> None:
    """Take a submission off the leaderboards, blends and site; it is kept, and the change
    recorded (`datarun history`). It still counts in its team's event limits."""
    from datarun.challenge.submissions import hide_submission

    with handled():
        workspace, db = open_workspace()
        row = hide_submission(db, submission_id, reason)
        _refresh_blends(workspace, db, row["problem"])
    if json_out:
        emit_json({"id": row["id"], "hidden_at": row["hidden_at"], "hidden_reason": row["hidden_reason"]})
    else:
        err(f"submission {row['id']} ({row['team']} / {row['name']}) hidden")


@submission_app.command("unhide")
def unhide(
    submission_id: Annotated[str, typer.Argument(metavar="ID", help="The submission's id.")],
    json_out: JsonOption = False,
) -> None:
    """Put a hidden submission back on the leaderboards, blends and site (recorded)."""
    from datarun.challenge.submissions import unhide_submission

    with handled():
        workspace, db = open_workspace()
        row = unhide_submission(db, submission_id)
        _refresh_blends(workspace, db, row["problem"])
    if json_out:
        emit_json({"id": row["id"], "hidden_at": None, "hidden_reason": None})
    else:
        err(f"submission {row['id']} ({row['team']} / {row['name']}) shown again")


@submission_app.command("select")
def select(
    submission_ids: Annotated[list[str], typer.Argument(
        metavar="ID...", help="The team's final submissions (one team, one event).")],
    json_out: JsonOption = False,
) -> None:
    """Choose a team's final submissions for its event's private leaderboard (`leaderboard
    --event E --final`), up to the event's --max-final; replaces its earlier choice."""
    from datarun.challenge.submissions import select_final

    with handled():
        _, db = open_workspace()
        choice = select_final(db, submission_ids)
    if json_out:
        emit_json(choice)
    else:
        err(f"team {choice['team']} in event {choice['event']}: final submissions "
            f"{', '.join(map(str, choice['submission_ids']))} (at most {choice['max_final']})")
