"""The Typer app, its global options, and the one error-mapping wrapper.

The command groups import this module and add their commands to `app`; this module
imports none of them (datarun/cli/__init__.py does), so the CLI has no import cycle.
"""

import json
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from datarun.errors import EXIT_CODES, EXIT_FAILED, EXIT_INTERRUPTED, DatarunError

EXIT_HELP = "Exit codes: " + "; ".join(f"{code} {text}" for code, text in EXIT_CODES.items()) + "."

app = typer.Typer(
    name="datarun",
    help="Train and test data-challenge submissions on cross-validation folds, on your own "
    "servers.\n\n" + EXIT_HELP,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,  # never print locals: they can hold keys
    rich_markup_mode=None,
)


class State:
    workspace: Path | None = None


state = State()


@app.callback()
def _global(
    workspace: Annotated[
        Path | None,
        typer.Option("--workspace", "-w", help="The workspace folder (default: $DATARUN_HOME, "
                     "else the nearest parent folder with .datarun/)."),
    ] = None,
) -> None:
    state.workspace = workspace


def get_workspace():
    from datarun.store.workspace import find_workspace

    return find_workspace(state.workspace)


def open_workspace():
    """The workspace and its opened database (call inside `handled()`)."""
    from datarun.store.db import open_db

    workspace = get_workspace()
    return workspace, open_db(workspace)


def err(message: str) -> None:
    """Chatter and progress go to stderr; stdout is for data. Messages quote hosts and
    tasks, so they are made printable (datarun.safetext) on the way out."""
    from datarun.safetext import printable

    print(printable(message), file=sys.stderr)


def err_hosts(errors: dict[str, str]) -> None:
    """One line per host that failed, naming the host once."""
    for host, message in errors.items():
        named = message.startswith((f"host {host}:", f"host {host} "))
        err(message if named else f"host {host}: {message}")


def warn_unsandboxed(workspace) -> None:
    """One line on stderr when a host runs submissions outside the sandbox."""
    from datarun.errors import DatarunError
    from datarun.executors.hosts import load_hosts, no_sandbox_warning

    try:
        line = no_sandbox_warning(load_hosts(workspace.hosts_file))
    except DatarunError:
        return  # a bad hosts.toml is reported by the command that needs it
    if line:
        err(line)


def emit_json(data: Any) -> None:
    """JSON on stdout. Text from tasks and hosts is kept raw here: json.dump escapes every
    control and non-ASCII character (ensure_ascii), so no escape sequence reaches a terminal."""
    json.dump(data, sys.stdout, indent=2 if sys.stdout.isatty() else None, default=str)
    sys.stdout.write("\n")


def print_renderable(renderable) -> None:
    """Print a rich renderable, or a plain string taken literally (no markup: it may hold user
    text) and made printable. Tables are made printable cell by cell (datarun.cli.render)."""
    from rich.console import Console

    from datarun.safetext import printable

    if isinstance(renderable, str):
        renderable = printable(renderable)

    console = Console(soft_wrap=False)
    if not console.is_terminal:
        # Piped or captured: nobody's window to fit, so never squash a wide leaderboard.
        console = Console(soft_wrap=False, width=max(console.width, 200))
    console.print(renderable, markup=False, highlight=False)


@contextmanager
def handled():
    """Turn datarun's errors into `error: ...` on stderr and their exit code."""
    try:
        yield
    except DatarunError as error:
        from datarun.safetext import printable

        text = printable(error).strip()
        message = text.splitlines()[0] if text else type(error).__name__
        print(f"error: {message}", file=sys.stderr)
        raise typer.Exit(error.exit_code) from None
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except Exception as error:
        # A full disk anywhere a core function did not name it itself (the database, most
        # often): one line naming the folder, never a traceback.
        from datarun.store.space import disk_full_message, folder_of, is_disk_full

        folder = folder_of(error, _state_folder())
        if not is_disk_full(error, folder):
            raise
        print(f"error: {disk_full_message(folder)}", file=sys.stderr)
        raise typer.Exit(EXIT_FAILED) from None


def _state_folder() -> Path | str:
    """The workspace's .datarun folder (where the database is), for a message."""
    try:
        return get_workspace().state_dir
    except DatarunError:
        return Path.cwd()
