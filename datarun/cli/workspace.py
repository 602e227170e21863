"""`datarun init`: create a workspace."""

from pathlib import Path
from typing import Annotated

import typer

from datarun.cli.app import JsonOption, app, emit_json, err, handled


@app.command()
def init(
    directory: Annotated[Path, typer.Argument(help="The folder to make a workspace of.")] = Path("."),
    json_out: JsonOption = False,
) -> None:
    """Create a workspace: hosts.toml (with the local host) and .datarun/."""
    from datarun.store.workspace import init_workspace

    with handled():
        workspace = init_workspace(directory)
    if json_out:
        emit_json("init", {"id": workspace.id, "root": str(workspace.root),
                           "hosts_file": str(workspace.hosts_file)})
    else:
        err(f"Initialised a datarun workspace in {workspace.root} (id {workspace.id})")
