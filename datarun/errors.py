"""datarun's exceptions and the exit codes they map to.

Core functions raise these and never exit the process; the CLI's one wrapper
(`datarun.cli.app.handled`) turns them into a one-line message and an exit code.
"""

# DatarunError and UsageError are defined with the harness, whose scoring code (shared with
# the hosts, which score sensitive problems) raises them; the others derive from them here.
from datarun.remote.errors import DatarunError, UsageError

__all__ = ["DatarunError", "UsageError", "NotFound", "Busy", "HostError", "Failed"]

# The exit codes, written once: `datarun --help` and the README quote this table.
EXIT_OK = 0
EXIT_FAILED = 1  # some task or host failed
EXIT_USAGE = 2  # usage error or bad input; nothing was changed
EXIT_BUSY = 3  # another dispatcher holds the workspace lock (`dispatch`, `host clean`)
EXIT_INTERRUPTED = 130

EXIT_CODES = {
    EXIT_OK: "success",
    EXIT_FAILED: "some task or host failed",
    EXIT_USAGE: "usage error or bad input (nothing stored was changed)",
    EXIT_BUSY: "another dispatcher is running in this workspace",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C)",
}


class NotFound(DatarunError):
    """An unknown problem, submission, task, host or workspace."""

    kind = "not_found"


class Busy(DatarunError):
    exit_code = EXIT_BUSY
    kind = "busy"


class HostError(DatarunError):
    """A host could not be reached or cannot run tasks."""

    exit_code = EXIT_FAILED
    kind = "host"


class Failed(DatarunError):
    """The command ran, but some of the work it asked for failed."""

    exit_code = EXIT_FAILED
    kind = "failed"


# Error kinds that no exception class carries: Click's own usage errors (an unknown
# option, a missing argument) and Ctrl-C.
KIND_USAGE = "usage"
KIND_INTERRUPTED = "interrupted"


class DiskFull(DatarunError):
    """A folder datarun writes to has no space left: the host's fault, never the team's."""

    exit_code = EXIT_FAILED
    kind = "disk_full"


class HostDiskFull(HostError):
    """A host's working folder has no space left: its tasks go back to the queue, and the
    host gets no new task in this dispatcher run."""

    kind = "host_disk_full"
