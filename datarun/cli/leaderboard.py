"""`datarun leaderboard`."""

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


@app.command("leaderboard")
def leaderboard_command(
    problem: Annotated[str, typer.Argument(help="The problem's name.")],
    event: Annotated[str | None, typer.Option(
        "--event", help="Only this event's submissions (default: all of the problem's).")] = None,
    private: Annotated[bool, typer.Option(
        "--private", help="Organisers: add the test scores, and show scores not yet public.")] = False,
    json_out: JsonOption = False,
    csv_out: Annotated[bool, typer.Option(
        "--csv", help="Print CSV on stdout, one flat column per value (docs/LEADERBOARD.md).")] = False,
) -> None:
    """The ranked submissions of a problem, by bagged validation score."""
    from datarun.board.leaderboard import leaderboard
    from datarun.errors import UsageError

    with handled():
        if json_out and csv_out:
            raise UsageError("--json and --csv both print on stdout: choose one")
        _, db = open_workspace()
        board = leaderboard(db, problem, private=private, event=event)
    if board["notice"]:
        err(board["notice"])
    if json_out:
        from datarun.cli.shapes import leaderboard as shaped

        emit_json("leaderboard", shaped(board))
    elif csv_out:
        import csv
        import sys

        from datarun.board.leaderboard import csv_columns, csv_rows

        writer = csv.DictWriter(sys.stdout, fieldnames=csv_columns(board), lineterminator="\n")
        writer.writeheader()
        writer.writerows(csv_rows(board))
    else:
        from datarun.cli.app import output_width
        from datarun.cli.render import leaderboard_table

        print_renderable(leaderboard_table(board, output_width()))
