"""`datarun leaderboard`."""

from typing import Annotated

import typer

from datarun.cli.app import app, emit_json, handled, open_workspace, print_renderable


@app.command("leaderboard")
def leaderboard_command(
    problem: Annotated[str, typer.Argument(help="The problem's name.")],
    private: Annotated[bool, typer.Option("--private", help="Add the test scores (organisers only).")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")] = False,
) -> None:
    """The ranked submissions of a problem, by bagged validation score."""
    from datarun.leaderboard import leaderboard

    with handled():
        _, db = open_workspace()
        board = leaderboard(db, problem, private=private)
    if json_out:
        emit_json(board)
        return
    from datarun.render import leaderboard_table

    print_renderable(leaderboard_table(board))
