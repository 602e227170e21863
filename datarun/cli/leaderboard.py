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
    best_per_team: Annotated[bool, typer.Option(
        "--best-per-team", help="Only each team's best submission, ranked again.")] = False,
    final: Annotated[bool, typer.Option(
        "--final", help="Organisers, with --event: the private leaderboard, each team's final "
        "submissions (chosen with `submission select`, else its best public ones up to the "
        "event's --max-final) ranked by test score.")] = False,
) -> None:
    """The ranked submissions of a problem, by bagged validation score."""
    from datarun.board.leaderboard import leaderboard
    from datarun.errors import UsageError

    with handled():
        if json_out and csv_out:
            raise UsageError("--json and --csv both print on stdout: choose one")
        if final and event is None:
            raise UsageError("--final is an event's private leaderboard: give --event")
        if final and best_per_team:
            raise UsageError("--final and --best-per-team are two views: choose one")
        _, db = open_workspace()
        board = leaderboard(db, problem, private=private or final, event=event)
        if best_per_team:
            from datarun.board.standings import best_per_team as best_view

            board = best_view(board)
        elif final:
            from datarun.board.standings import final_standings
            from datarun.challenge.events import get_event
            from datarun.store.submissions import finals

            board = final_standings(board, finals(db, board["event"]), get_event(db, board["event"])["max_final"])
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
