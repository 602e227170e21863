"""datarun's base errors, defined on the harness's side of the line.

The scoring code (`scoring/`) is shared by the organiser's machine and the hosts, which
score sensitive problems where their data lives; it refuses bad input with `UsageError`.
Defining the classes here lets that one copy raise the very class the organiser's CLI
maps to a message and an exit code (`datarun.errors` re-exports them), while the harness
still imports nothing of datarun.
"""

EXIT_USAGE = 2  # datarun.errors's table: usage error or bad input


class DatarunError(Exception):
    """An error the user can act on; its message is one line that says what to fix."""

    exit_code = EXIT_USAGE
    # Its name in `--json` error objects (docs/JSON.md): what a program reading it may act on.
    kind = "invalid"


class UsageError(DatarunError):
    """Bad input: a kit, a submission, an option, a config file."""

    kind = "invalid"
