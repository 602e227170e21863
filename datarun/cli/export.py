"""`datarun export`: a submission as ramp-test's training_output/, a problem's tasks as CSV/JSON."""

from pathlib import Path
from typing import Annotated

import typer

from datarun.cli.app import app, emit_json, err, handled, note_json_file, open_workspace


@app.command("export")
def export_command(
    target: Annotated[str, typer.Argument(
        help="A submission id (with --ramp) or a problem name (with --csv or --json).")],
    ramp: Annotated[Path | None, typer.Option(
        "--ramp", help="Write the submission's folds to this folder in ramp-test's "
        "training_output/ layout.")] = None,
    csv_file: Annotated[Path | None, typer.Option(
        "--csv", help="Write every task of the problem, scores and measurements, as CSV to "
        "this file ('-': stdout).")] = None,
    json_file: Annotated[Path | None, typer.Option(
        "--json", help="The same as JSON (docs/JSON.md), to this file ('-': stdout).",
        callback=note_json_file)] = None,
    private: Annotated[bool, typer.Option(
        "--private", help="Organisers: add the test scores, and scores not yet public "
        "(with --csv or --json; --ramp always writes the test predictions).")] = False,
) -> None:
    """Export results for other tools: RAMP's training_output/, or a flat table of tasks."""
    from datarun.errors import UsageError

    with handled():
        chosen = [name for name, value in (("--ramp", ramp), ("--csv", csv_file),
                                           ("--json", json_file)) if value is not None]
        if len(chosen) != 1:
            raise UsageError("give exactly one of --ramp DIR (a submission), --csv FILE or "
                             "--json FILE (a problem)"
                             + (f", not {' and '.join(chosen)}" if chosen else ""))
        workspace, db = open_workspace()
        try:
            if ramp is not None:
                from datarun.board.export import export_ramp

                summary = export_ramp(workspace, db, target, ramp, private)
            else:
                from datarun.board.export import export_tasks

                fmt, out = ("csv", csv_file) if csv_file is not None else ("json", json_file)
                summary = export_tasks(db, target, None if str(out) == "-" else out, fmt, private)
        finally:
            db.conn.close()
    if ramp is not None:
        err(f"Wrote submission {summary['submission_id']}'s {summary['folds']} folds to "
            f"{summary['folder']} (ramp-test's training_output/ layout)")
        if summary.get("note"):
            err(f"note: {summary['note']}: no bagged_scores.csv written")
        if summary["test_left_out"]:
            err("test predictions and scores left out: `--private` (organisers) adds them")
        return
    if summary["text"] is not None:
        if fmt == "json":
            import json

            emit_json("task-export", json.loads(summary["text"]))
        else:
            print(summary["text"], end="")
        return
    err(f"Wrote {summary['tasks']} tasks of problem {summary['problem']} to {summary['file']}")
