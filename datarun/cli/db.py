"""`datarun db backup`: the workspace database, copied safely while datarun runs."""

from pathlib import Path
from typing import Annotated

import typer

from datarun.cli.app import JsonOption, app, emit_json, err, get_workspace, handled

db_app = typer.Typer(help="The workspace database.", no_args_is_help=True)
app.add_typer(db_app, name="db")


@db_app.command("backup")
def backup(
    file: Annotated[Path, typer.Argument(help="Where to write the copy (a new file).")],
    force: Annotated[bool, typer.Option("--force", help="Replace FILE if it exists.")] = False,
    json_out: JsonOption = False,
) -> None:
    """Copy the database consistently, even while a dispatcher or submit writes to it."""
    from datarun.store.backup import backup_database

    with handled():
        result = backup_database(get_workspace(), file, force=force)
    if json_out:
        emit_json("backup", result)
    else:
        rows = ", ".join(f"{count} {name}" for name, count in result["rows"].items())
        err(f"backed up to {result['path']} ({result['bytes']} bytes: {rows})")
