"""A head start for `problem add` of a RAMP kit, taken by the entry point (`datarun.launch`).

Reading a RAMP kit costs one `import rampwf` (scikit-learn, scipy, pandas: about a
second) plus the kit's own data functions; the CLI's own start (Typer, the database)
costs a few tenths more. They need nothing of each other, so `main` forks before loading
the CLI: the child reads and checks the kit (`rampdata.prepare_kit`, into a scratch
folder) on one core while the parent loads the CLI, parses the command and opens the
workspace on the other; the parent then stores what the child prepared. The command's
wall time is then about one `import rampwf` plus reading the data.

The child is only a head start: the parent uses its work only if the parsed command is
the one guessed from the arguments (same kit, same --env), and reads the kit itself when
the guess was wrong or the child failed for any reason but a refusal of the kit (whose
one-line message it reports as its own). This module and `datarun.launch` are outside
`datarun.cli` so that nothing imports Typer before the fork. `DATARUN_PREFETCH=0` switches it off.
"""

import atexit
import json
import os
import shutil
import signal
import sys
import tempfile
import traceback
from pathlib import Path

PENDING: "Prefetch | None" = None
GLOBAL_OPTIONS = {"-w", "--workspace"}


def _guess(argv: list[str]) -> tuple[Path, dict[str, str]] | None:
    """(kit, env) when argv is `[-w DIR] problem add KIT [--env N=V]... [options]`."""
    i = 0
    while i < len(argv) and argv[i] in GLOBAL_OPTIONS:
        i += 2
    if argv[i:i + 2] != ["problem", "add"]:
        return None
    kit, env, rest = None, {}, argv[i + 2:]
    j = 0
    while j < len(rest):
        token = rest[j]
        if token in ("--env", "--data-file-cap"):
            if j + 1 >= len(rest):
                return None
            if token == "--env":
                name, equals, value = rest[j + 1].partition("=")
                if not equals:
                    return None
                env[name] = value
            j += 2
        elif token == "--json":
            j += 1
        elif token.startswith("-") or kit is not None:
            return None  # anything unusual: the CLI reads the kit itself
        else:
            kit = token
            j += 1
    if kit is None:
        return None
    folder = Path(kit).expanduser()
    if not (folder / "problem.py").is_file() or (folder / "problem.toml").exists():
        return None
    return folder.resolve(), env


class Prefetch:
    def __init__(self, kit: Path, env: dict[str, str], pid: int, fd: int, folder: Path):
        self.kit, self.env, self.pid, self.fd, self.folder = kit, env, pid, fd, folder

    def matches(self, kit: Path, env: dict[str, str]) -> bool:
        return Path(kit).expanduser().resolve() == self.kit and env == self.env

    def result(self) -> Path | None:
        """The prepared folder; UsageError for a refused kit; None when the CLI should read
        the kit itself (the child crashed or was killed)."""
        from datarun.errors import UsageError

        with os.fdopen(self.fd, "rb") as pipe:
            text = pipe.read()
        self.fd = -1
        try:
            _, status = os.waitpid(self.pid, 0)
        except ChildProcessError:
            status = 1
        self.pid = -1
        try:
            answer = json.loads(text)
        except ValueError:
            return None
        if status != 0:
            return None
        if "error" in answer:
            raise UsageError(answer["error"])
        return self.folder if answer.get("ok") else None

    def discard(self) -> None:
        if self.pid > 0:
            try:
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
            self.pid = -1
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        shutil.rmtree(self.folder, ignore_errors=True)


def _child(kit: Path, env: dict[str, str], folder: Path, write_fd: int) -> None:
    """Read the kit into `folder`; write one JSON answer; never return."""
    code = 0
    try:
        os.dup2(2, 1)  # the kit's prints go to stderr, as in the CLI's own reading
        from datarun.errors import UsageError
        from datarun.problems.rampdata import prepare_kit

        try:
            prepare_kit(kit, env, folder)
            answer: dict[str, object] = {"ok": True}
        except UsageError as error:
            answer = {"error": str(error)}
    except BaseException:  # the CLI will read the kit itself and show what goes wrong
        answer = {"crash": traceback.format_exc()}
        code = 1
    try:
        os.write(write_fd, json.dumps(answer).encode())
        os.close(write_fd)
    finally:
        os._exit(code)


def start(argv: list[str]) -> None:
    """Fork the kit's reading when argv is a RAMP kit's `problem add` (before the CLI loads)."""
    global PENDING
    if os.environ.get("DATARUN_PREFETCH") == "0":
        return
    guess = _guess(argv)
    if guess is None:
        return
    kit, env = guess
    folder = Path(tempfile.mkdtemp(prefix="datarun-kit-"))
    read_fd, write_fd = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        _child(kit, env, folder, write_fd)
    os.close(write_fd)
    PENDING = Prefetch(kit, env, pid, read_fd, folder)
    atexit.register(PENDING.discard)


def take(kit: Path, env: dict[str, str]) -> Prefetch | None:
    """The head start for this kit and env, if there is one; any other is dropped."""
    global PENDING
    pending, PENDING = PENDING, None
    if pending is None:
        return None
    if not pending.matches(kit, env):
        pending.discard()
        return None
    return pending

