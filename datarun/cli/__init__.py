"""datarun's command line: Typer commands that parse, call the core, and render.

Each command group lives in its own module and registers on the one `app` (`app.py`,
with the global options and the error-mapping wrapper) when imported here, in the order
`--help` lists them. Commands call plain core functions inside `handled()`, which maps
datarun's exceptions to a one-line message and an exit code, so no core code ever exits
the process.
"""

from importlib import import_module

from datarun.cli.app import app

GROUPS = ("workspace", "problem", "submission", "event", "train", "host", "leaderboard", "demo",
          "tasks", "export", "db", "site", "owner")
for _group in GROUPS:
    import_module(f"datarun.cli.{_group}")


def main(prog_name: str | None = None) -> None:
    app(prog_name=prog_name)


__all__ = ["app", "main"]
