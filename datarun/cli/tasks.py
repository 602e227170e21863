"""`datarun retry`, `datarun cancel` and `datarun logs`: the operator's hands on tasks."""

import sys
from typing import Annotated

import typer

from datarun.cli.app import JsonOption, app, emit_json, err, err_hosts, handled, open_workspace
from datarun.cli.shapes import history_action, refers_to_submission
from datarun.errors import EXIT_FAILED

SubmissionArgument = Annotated[str, typer.Argument(metavar="SUBMISSION", help="The submission's id.")]


@app.command()
def retry(submission: SubmissionArgument, json_out: JsonOption = False) -> None:
    """Re-queue a submission's failed and cancelled tasks (errors cleared, host losses forgotten)."""
    from datarun.dispatch.controls import retry_submission

    with handled():
        workspace, db = open_workspace()
        result = retry_submission(workspace, db, submission)
    if json_out:
        emit_json("retry", refers_to_submission(result))
    else:
        err(f"submission {result['submission']}: {len(result['requeued'])} tasks re-queued; "
            "`datarun train` (or cron's `datarun dispatch`) runs them")


@app.command()
def cancel(submission: SubmissionArgument, json_out: JsonOption = False) -> None:
    """Stop a submission: kill its running tasks on their hosts, never start its queued ones."""
    from datarun.dispatch.controls import cancel_submission

    with handled():
        workspace, db = open_workspace()
        result = cancel_submission(workspace, db, submission)
    if json_out:
        emit_json("cancel", refers_to_submission(result))
    else:
        err(f"submission {result['submission']}: {len(result['cancelled'])} tasks cancelled "
            f"({len(result['running'])} running, {len(result['queued'])} queued)")
    err_hosts(result["host_errors"])
    if result["host_errors"]:
        raise typer.Exit(EXIT_FAILED)


@app.command()
def logs(
    task: Annotated[str, typer.Argument(metavar="TASK", help="The task's id (`datarun submission show` lists them).")],
    json_out: JsonOption = False,
) -> None:
    """Print a task's captured output (stdout and stderr, head and tail when long)."""
    from datarun.dispatch.controls import task_log

    with handled():
        workspace, db = open_workspace()
        result = task_log(workspace, db, task)
    if json_out:
        emit_json("task-log", refers_to_submission(result))  # the raw text, escaped by JSON
        return
    from datarun.safetext import printable

    for event in result["events"]:  # what its row does not keep: refused results or bundles
        err(f"attempt {event['attempt']}: {event['text']}")
    text = printable(result["log"])  # the task wrote it: no escape sequence reaches the terminal
    sys.stdout.write(text)
    if text and not text.endswith("\n"):
        sys.stdout.write("\n")
    if result["error"]:  # what ended it: the traceback the harness recorded, or the limit hit
        sys.stdout.write(f"── {result['error_kind'] or 'error'}\n")
        error = printable(result["error"])
        sys.stdout.write(error if error.endswith("\n") else error + "\n")


@app.command("history")
def history_command(
    subject: Annotated[str | None, typer.Argument(
        metavar="[SUBJECT]", help="Only the changes to this submission id, event, problem or team.")] = None,
    json_out: JsonOption = False,
) -> None:
    """What organisers changed after the fact (hidden submissions, edited or removed events,
    removed problems, final choices), oldest first."""
    from datarun.store import actions

    with handled():
        _, db = open_workspace()
        rows = actions.listed(db, subject)
    if json_out:
        emit_json("history", {"actions": [history_action(row) for row in rows]})
        return
    from datarun.cli.app import print_renderable

    for row in rows:
        print_renderable(history_line(row))


def history_line(row: dict) -> str:
    """One recorded change for people: when (UTC), what, and its detail with moments as
    dates (`closes_at 2030-01-02 00:00 UTC -> 2031-01-02 00:00 UTC`), never epoch seconds."""
    from datarun.challenge.events import format_span, format_when

    def shown(key: str, value) -> str:
        if value is None:
            return "none"
        if key.endswith("_at") or key in ("opens", "closes", "public_opens"):
            return format_when(value)
        if key == "min_interval":
            return format_span(value)
        if isinstance(value, bool):
            return "yes" if value else "no"
        if isinstance(value, list | tuple):
            return ", ".join(map(str, value)) or "none"
        return str(value)

    detail = row["detail"] or {}
    if row["action"] == "event_edited" and detail:
        before, after = detail.get("before") or {}, detail.get("after") or {}
        parts = [f"{_rule(key)} {shown(key, before.get(key))} -> {shown(key, after.get(key))}"
                 for key in after]
    else:
        parts = [f"{'submission_ids' if key == 'submissions' and row['action'] == 'final_selected' else key} "
                 f"{shown(key, value)}" for key, value in detail.items()]
    text = f"{format_when(row['recorded_at'])}  {row['action']} {row['subject']}"
    return text + (f": {', '.join(parts)}" if parts else "")


def _rule(key: str) -> str:
    """An event rule as `event show --json` names it."""
    return {"opens": "opens_at", "closes": "closes_at", "public_opens": "public_opens_at"}.get(key, key)
