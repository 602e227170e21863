"""datarun's command line: Typer commands that parse, call the core, and render.

Each command group lives in its own module and registers on the one `app`. Commands
call plain core functions inside `handled()`, which maps datarun's exceptions to a
one-line message and an exit code, so no core code ever exits the process.
"""

from datarun.cli.app import app, main

__all__ = ["app", "main"]
