"""`datarun submit` and `datarun submission list|show`."""

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
    warn_unsandboxed,
)

submission_app = typer.Typer(help="List and inspect submissions.", no_args_is_help=True)
app.add_typer(submission_app, name="submission")



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
        emit_json("submit", result)
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
            from datarun.problems.registered import get_problem

            get_problem(db, problem)
        rows = list_submissions(db, problem)
    if json_out:
        from datarun.cli.shapes import submission_row

        emit_json("submission-list", {"submissions": [submission_row(row) for row in rows]})
    else:
        print_renderable(submissions_table(rows))


@submission_app.command("show")
def show(
    submission_id: Annotated[str, typer.Argument(metavar="ID", help="The submission's id.")],
    code: Annotated[bool, typer.Option("--code", help="Show the participant's code (raw when piped).")] = False,
    raw: Annotated[bool, typer.Option(
        "--raw", help="With --code, piped: the files' exact bytes, control characters included "
        "(piped without it: the text without line numbers, control characters stripped).")] = False,
    private: Annotated[bool, typer.Option(
        "--private", help="Organisers: add the test scores, and scores not yet public.")] = False,
    json_out: JsonOption = False,
) -> None:
    """Per-fold scores, times, CPU, memory, state and errors of a submission (or its code).

    The public view shows train and validation scores once the event's scores are public,
    never a test score; --private shows them all."""
    from datarun.board.views import public_submission
    from datarun.challenge.submissions import error_tail, submission_code
    from datarun.problems.registered import get_problem

    with handled():
        workspace, db = open_workspace()
        if code:
            files = submission_code(workspace, db, submission_id)
        else:
            sub = public_submission(workspace, db, submission_id, private)
            score_names = get_problem(db, sub["problem"])["score_names"]
    if code:
        if json_out:
            emit_json("submission-code", {"submission_id": int(submission_id), "files": files})
            return
        _print_code(files, raw)
        return
    if json_out:
        from datarun.cli.shapes import submission as shaped

        emit_json("submission", shaped(sub))
        return
    from datarun.cli.app import output_width
    from datarun.cli.render import submission_table

    print_renderable(submission_table(sub, score_names, output_width()))
    print_renderable(f"event {sub['event']}")
    if sub["scores_hidden"]:
        from datarun.challenge.events import format_when

        print_renderable(f"scores not public until {format_when(sub['scores_public_at'])}; "
                         "organisers see them with --private")
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


def _print_code(files: dict[str, str], raw: bool) -> None:
    """The code as highlighted text with line numbers on a terminal. Piped, the files' text
    alone (no line numbers, no headers), so `submission show ID --code > estimator.py`
    recovers the file; control characters are still stripped (a pipe may end on a terminal:
    `| cat`), unless `--raw` asks for the exact bytes, which a terminal never receives.
    Several files are each preceded by a `==> NAME <==` line (as `head` does)."""
    import sys

    from datarun.safetext import printable

    terminal = sys.stdout.isatty()
    if not terminal or raw:
        for filename, text in files.items():
            if len(files) > 1:
                sys.stdout.write(f"==> {printable(filename)} <==\n")
            sys.stdout.write(text if raw and not terminal else printable(text))
        return
    from rich.syntax import Syntax

    for filename, text in files.items():
        print_renderable(f"── {filename}")
        print_renderable(Syntax(printable(text), "python", line_numbers=True))


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
        emit_json("submission-hide", {"id": row["id"], "hidden_at": row["hidden_at"], "hidden_reason": row["hidden_reason"]})
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
        emit_json("submission-hide", {"id": row["id"], "hidden_at": None, "hidden_reason": None})
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
        emit_json("submission-select", choice)
    else:
        err(f"team {choice['team']} in event {choice['event']}: final submissions "
            f"{', '.join(map(str, choice['submission_ids']))} (at most {choice['max_final']})")
