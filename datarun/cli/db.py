"""`datarun db backup|restore`: the workspace's whole state, saved safely while datarun runs."""

from pathlib import Path
from typing import Annotated

import typer

from datarun.cli.app import JsonOption, app, emit_json, err, get_workspace, handled

db_app = typer.Typer(help="The workspace's state: back it up, restore it.", no_args_is_help=True)
app.add_typer(db_app, name="db")


@db_app.command("backup")
def backup(
    file: Annotated[Path, typer.Argument(help="Where to write the backup (a new file: a .tar.gz archive).")],
    force: Annotated[bool, typer.Option("--force", help="Replace FILE if it exists.")] = False,
    json_out: JsonOption = False,
) -> None:
    """Save the workspace's whole state (database, blob store with code, predictions and data,
    hosts.toml, pinned host keys) consistently, even while a dispatcher or submit writes."""
    from datarun.store.backup import backup_workspace

    with handled():
        result = backup_workspace(get_workspace(), file, force=force)
    if json_out:
        emit_json("backup", result)
    else:
        rows = ", ".join(f"{count} {name}" for name, count in result["rows"].items())
        err(f"backed up to {result['path']} ({result['bytes']} bytes: {rows}, {result['blobs']} blobs)")


@db_app.command("restore")
def restore(
    file: Annotated[Path, typer.Argument(help="A backup written by `datarun db backup`.")],
    folder: Annotated[Path, typer.Argument(help="A new or empty folder for the restored workspace.")],
    json_out: JsonOption = False,
) -> None:
    """Make a workspace from a backup, in a new or empty folder. It gets an id of its own;
    tasks that were running when the backup was taken are queued again."""
    from datarun.store.backup import restore_workspace

    with handled():
        result = restore_workspace(file, folder)
    if json_out:
        emit_json("restore", result)
    else:
        err(f"restored into {result['root']} (workspace id {result['workspace_id']}); "
            f"{result['requeued']} tasks that were running are queued again: `datarun -w "
            f"{result['root']} train` runs them")
