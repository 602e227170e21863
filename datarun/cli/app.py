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
from typer.core import TyperGroup

from datarun.errors import (
    EXIT_CODES,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    KIND_INTERRUPTED,
    KIND_USAGE,
    DatarunError,
)

EXIT_HELP = "Exit codes: " + "; ".join(f"{code} {text}" for code, text in EXIT_CODES.items()) + "."


def _usage_line(error) -> str:
    """Click's usage error as datarun's one line: what is wrong, and where the help is."""
    message = error.format_message().strip().rstrip(".")
    message = message[:1].lower() + message[1:]
    ctx = getattr(error, "ctx", None)
    where = f" (`{ctx.command_path} --help`)" if ctx is not None else ""
    return " ".join(message.split()) + where


class DatarunGroup(TyperGroup):
    """The top-level group: Click's own errors (an unknown option, a missing argument) end
    like datarun's: one `error: ...` line, exit 2, and the error object under --json."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        words = list(sys.argv[1:] if args is None else args)
        try:
            code = super().main(words, prog_name, complete_var, False, **extra)
        except typer.Abort:
            code = _fail_outside(KIND_INTERRUPTED, "interrupted", EXIT_INTERRUPTED, words)
        except Exception as error:
            if not (hasattr(error, "format_message") and hasattr(error, "exit_code")):
                raise  # not Click's: a bug, with its traceback
            kind, exit_code = (KIND_USAGE, EXIT_USAGE) if hasattr(error, "ctx") else ("invalid", error.exit_code)
            code = _fail_outside(kind, _usage_line(error), exit_code, words)
        sys.exit(code if isinstance(code, int) else 0)


def _fail_outside(kind: str, message: str, exit_code: int, words: list[str]) -> int:
    """`fail` for errors raised before or around a command (no `handled()` there)."""
    from datarun.safetext import printable

    message = printable(message)
    print(f"error: {message}", file=sys.stderr)
    options = words[:words.index("--")] if "--" in words else words
    if "--json" in options:
        from datarun.contract import error_object

        json.dump(error_object(kind, message, exit_code), sys.stdout)
        sys.stdout.write("\n")
    return exit_code


app = typer.Typer(
    cls=DatarunGroup,
    name="datarun",
    help="Train and test data-challenge submissions on cross-validation folds, on your own "
    "servers.\n\n" + EXIT_HELP,
    no_args_is_help=True,
    add_completion=True,  # --install-completion / --show-completion for bash, zsh, fish
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_enable=False,  # never print locals: they can hold keys
    rich_markup_mode=None,
)


class State:
    workspace: Path | None = None
    json: bool = False  # the running command was asked for JSON on stdout


state = State()


def _note_json(value: bool) -> bool:
    if value:
        state.json = True
    return value


# Every command that prints data takes this option: errors then come as JSON too
# (docs/JSON.md), which `handled()` knows from `state.json`.
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON on stdout (docs/JSON.md).",
                                          callback=_note_json)]


def note_json_file(value: Path | None) -> Path | None:
    """For `--json FILE` options: FILE '-' is JSON on stdout."""
    if value is not None and str(value) == "-":
        state.json = True
    return value


def _version(value: bool) -> None:
    if value:
        from datarun import __version__

        print(f"datarun {__version__}")
        raise typer.Exit(0)


@app.callback()
def _global(
    workspace: Annotated[
        Path | None,
        typer.Option("--workspace", "-w", help="The workspace folder (default: $DATARUN_HOME, "
                     "else the nearest parent folder with .datarun/)."),
    ] = None,
    version: Annotated[bool, typer.Option(
        "--version", help="Print datarun's version and exit.", is_eager=True,
        callback=_version)] = False,
) -> None:
    state.workspace = workspace
    state.json = False


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


def emit_json(kind: str, data: dict[str, Any]) -> None:
    """The output of kind `kind` (docs/JSON.md, docs/schema/<kind>.json) on stdout: one object,
    its `schema` key first, moments in ISO 8601 UTC (datarun.contract).

    Text from tasks and hosts is kept raw here: json.dump escapes every control and non-ASCII
    character (ensure_ascii), so no escape sequence reaches a terminal."""
    from datarun.contract import contract

    json.dump(contract(kind, data), sys.stdout, indent=2 if sys.stdout.isatty() else None,
              default=str, allow_nan=False)
    sys.stdout.write("\n")


def json_requested() -> bool:
    """Whether the running command was asked for JSON on stdout (`--json`, or `--json -`)."""
    return state.json


def fail(kind: str, message: str, exit_code: int, as_json: bool) -> None:
    """One `error: ...` line on stderr, the error object on stdout under --json; then exit."""
    print(f"error: {message}", file=sys.stderr)
    if as_json:
        from datarun.contract import error_object

        json.dump(error_object(kind, message, exit_code), sys.stdout)
        sys.stdout.write("\n")
    raise typer.Exit(exit_code)


def output_width() -> int | None:
    """The width tables must fit: the terminal's; when piped, $COLUMNS if set, else none
    (nobody's window to fit: every column, no padding)."""
    import os
    import shutil

    columns = os.environ.get("COLUMNS", "")
    if columns.isdigit() and int(columns) > 0:
        return int(columns)
    if sys.stdout.isatty():
        return shutil.get_terminal_size().columns
    return None


def print_renderable(renderable) -> None:
    """Print a rich renderable, or a plain string taken literally (no markup: it may hold user
    text) and made printable. Tables are made printable cell by cell (datarun.cli.render).

    On a terminal, rich fits it to the window. Piped, it is rendered as wide as it needs
    (or $COLUMNS) and each line's trailing padding is dropped, so a file gets the table's
    own width."""
    from io import StringIO

    from rich.console import Console

    from datarun.safetext import printable

    if isinstance(renderable, str):
        renderable = printable(renderable)
    if sys.stdout.isatty():
        Console(soft_wrap=False).print(renderable, markup=False, highlight=False)
        return
    buffer = StringIO()
    console = Console(file=buffer, width=output_width() or 10_000, soft_wrap=False,
                      color_system=None, force_terminal=False)
    console.print(renderable, markup=False, highlight=False)
    sys.stdout.write("".join(line.rstrip() + "\n" for line in buffer.getvalue().splitlines()))


@contextmanager
def handled():
    """Turn datarun's errors into `error: ...` on stderr and their exit code (and, under
    `--json`, the error object on stdout: docs/JSON.md)."""
    try:
        yield
    except DatarunError as error:
        from datarun.safetext import printable

        text = printable(error).strip()
        message = text.splitlines()[0] if text else type(error).__name__
        fail(error.kind, message, error.exit_code, json_requested())
    except KeyboardInterrupt:
        if json_requested():
            fail(KIND_INTERRUPTED, "interrupted", EXIT_INTERRUPTED, True)
        print("interrupted", file=sys.stderr)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except Exception as error:
        # A full disk anywhere a core function did not name it itself (the database, most
        # often): one line naming the folder, never a traceback.
        from datarun.store.space import disk_full_message, folder_of, is_disk_full

        folder = folder_of(error, _state_folder())
        if not is_disk_full(error, folder):
            raise
        fail("disk_full", disk_full_message(folder), EXIT_FAILED, json_requested())


def _state_folder() -> Path | str:
    """The workspace's .datarun folder (where the database is), for a message."""
    try:
        return get_workspace().state_dir
    except DatarunError:
        return Path.cwd()
