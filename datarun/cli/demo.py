"""`datarun demo`."""

from pathlib import Path
from typing import Annotated

import typer

from datarun.cli.app import JsonOption, app, emit_json, err, handled, print_renderable


@app.command()
def demo(
    directory: Annotated[Path | None, typer.Option("--dir", help="Make the demo workspace here (default: a new temporary folder).")] = None,
    json_out: JsonOption = False,
) -> None:
    """Register the example kits, submit their submissions, train them on this machine, show the
    leaderboards, and write the demo's site."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from datarun.demo import run_demo

    console = Console(stderr=True)
    # The bar appears with the first progress, so a refusal (a workspace already there, no
    # examples/) prints its one line alone.
    progress = Progress(TextColumn("training"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[detail]}"), TimeElapsedColumn(),
                        console=console, disable=json_out)
    bar = progress.add_task("demo", total=None, detail="")

    def on_progress(counts: dict[str, int]) -> None:
        if not progress.live.is_started:
            progress.start()
        finished = counts["done"] + counts["failed"] + counts["cancelled"]
        progress.update(bar, total=counts["total"], completed=finished,
                        detail=f"{counts['running']} running, {counts['failed']} failed")

    with handled():
        try:
            result = run_demo(directory, on_progress=on_progress)
        finally:
            if progress.live.is_started:
                progress.stop()
    if json_out:
        from datarun.cli.shapes import leaderboard as shaped

        emit_json("demo", {**result, "leaderboards": [shaped(b) for b in result["leaderboards"]]})
        return
    from datarun.cli.render import leaderboard_table

    err(f"workspace: {result['workspace']}")
    from datarun.cli.app import output_width

    for board in result["leaderboards"]:
        print_renderable(leaderboard_table(board, output_width()))
    print_renderable("Failed submissions, as recorded:")
    for failure in result["failures"]:
        tail = (failure["error"] or "").strip().splitlines()
        print_renderable(f"  #{failure['id']} {failure['team']} / {failure['name']} on {failure['problem']}: "
                         f"{failure['error_kind']} — {tail[-1] if tail else ''}")
    err(f"explore it: datarun -w {result['workspace']} status | leaderboard PROBLEM | submission show ID")
    err(f"its site (public view; `datarun site` keeps it current): {result['site']}")
