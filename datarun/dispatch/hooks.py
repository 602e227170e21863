"""Hooks: an organiser's command run when a submission is scored or fails.

`datarun.toml` in the workspace folder (the workspace's own settings; optional):

    [hooks]
    on_scored = ["/srv/challenge/notify", "scored"]   # a list of arguments, or a string
    on_failed = "/srv/challenge/notify failed"         # split like a shell would, never run by one
    timeout = "30s"                                     # default 30s

The command gets the event as one JSON object on its standard input (`event_payload`:
the submission, its team, problem and event, and its public official score once the
event's scores are public, or the failed folds' error kinds and the tail of each error).
It runs in the workspace folder, on a thread of its own: the dispatcher never waits for
it. A hook that exits non-zero, runs past its timeout (it is killed) or cannot start is
logged, one line in `.datarun/hooks.log` and on stderr, and changes nothing else. A
command that ends (`dispatch`, `train`) waits for its running hooks, up to their
timeout, before it exits, so cron's short-lived `dispatch` still delivers them.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shlex
import signal
import subprocess
import tempfile
import threading
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datarun.errors import UsageError
from datarun.sizes import parse_duration

CONFIG_FILE = "datarun.toml"
HOOK_KINDS = {"on_scored": "submission_scored", "on_failed": "submission_failed"}
DEFAULT_TIMEOUT = 30.0
PAYLOAD_SCHEMA = "datarun/hook/1"


def iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass
class Hooks:
    commands: dict[str, list[str]] = field(default_factory=dict)  # event kind -> argv
    timeout: float = DEFAULT_TIMEOUT


def load_hooks(root: Path) -> Hooks:
    """The `[hooks]` of the workspace's datarun.toml (none without the file)."""
    path = Path(root) / CONFIG_FILE
    if not path.is_file():
        return Hooks()
    try:
        data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise UsageError(f"{CONFIG_FILE}: not valid TOML: {error}") from None
    unknown = sorted(set(data) - {"hooks"})
    if unknown:
        raise UsageError(f"{CONFIG_FILE}: unknown table or key {unknown[0]!r} (known: [hooks])")
    table = data.get("hooks", {})
    if not isinstance(table, dict):
        raise UsageError(f"{CONFIG_FILE}: 'hooks' must be a table ([hooks])")
    unknown = sorted(set(table) - set(HOOK_KINDS) - {"timeout"})
    if unknown:
        raise UsageError(f"{CONFIG_FILE}: [hooks] {unknown[0]}: unknown key (known: on_scored, "
                         "on_failed, timeout)")
    hooks = Hooks()
    if "timeout" in table:
        hooks.timeout = parse_duration(table["timeout"], f"{CONFIG_FILE}: [hooks] timeout")
    for key, kind in HOOK_KINDS.items():
        if key not in table:
            continue
        value = table[key]
        if isinstance(value, str):
            try:
                argv = shlex.split(value)
            except ValueError as error:
                raise UsageError(f"{CONFIG_FILE}: [hooks] {key}: {error}") from None
        elif isinstance(value, list) and all(isinstance(part, str) for part in value):
            argv = list(value)
        else:
            raise UsageError(f"{CONFIG_FILE}: [hooks] {key} must be a command: a string or a list of strings")
        if not argv:
            raise UsageError(f"{CONFIG_FILE}: [hooks] {key} is empty: give the command to run")
        hooks.commands[kind] = argv
    return hooks


def event_payload(db, kind: str, submission_id: int, now: float | None = None) -> dict[str, Any]:
    """What a hook reads on its standard input: one submission's news, as a participant may
    see it (no test score, and no score at all before its event's scores are public)."""
    from datarun.challenge.events import get_event, scores_public
    from datarun.challenge.submissions import error_tail, get_submission
    from datarun.problems.registered import get_problem

    now = time.time() if now is None else now
    row = get_submission(db, submission_id)
    problem = get_problem(db, row["problem"])
    public = scores_public(get_event(db, row["event"]), now)
    payload: dict[str, Any] = {
        "schema": PAYLOAD_SCHEMA, "kind": kind, "notified_at": iso(now),
        "submission_id": row["id"], "submission": row["name"], "team": row["team"],
        "problem": row["problem"], "event": row["event"], "submitted_at": iso(row["created_at"]),
        "scores_public": public,
    }
    if kind == "submission_scored":
        official = problem["score_names"][0]
        value = None
        if public:
            found = db.execute("SELECT value FROM bagged_scores WHERE submission = ? AND split = 'valid' "
                               "AND score = ?", [row["id"], official]).fetchone()
            value = found[0] if found else None
        payload["score"] = {"name": official, "value": value}
    else:
        payload["failures"] = [
            {"task_id": task_id, "fold": fold, "error_kind": kind_, "error_tail": error_tail(error)}
            for task_id, fold, kind_, error in db.execute(
                "SELECT id, fold, error_kind, error FROM tasks WHERE submission = ? AND state = 'failed' "
                "ORDER BY fold", [row["id"]])]
    return payload


class HookRunner:
    """Runs the hooks off the dispatcher's thread, each with its time limit; logs failures."""

    def __init__(self, root: Path, log_path: Path, hooks: Hooks):
        self.root = Path(root)
        self.log_path = Path(log_path)
        self.hooks = hooks
        self.threads: list[threading.Thread] = []
        self.failures: list[str] = []  # one line per failed hook, for the command to print
        self.lock = threading.Lock()

    def fire(self, kind: str, payload: dict[str, Any]) -> None:
        argv = self.hooks.commands.get(kind)
        if argv is None:
            return
        data = json.dumps(payload).encode()
        what = f"hook {kind} for submission {payload.get('submission_id')}"
        thread = threading.Thread(target=self._run, args=(argv, data, what), name="datarun-hook", daemon=True)
        self.threads.append(thread)
        thread.start()

    def _run(self, argv: list[str], data: bytes, what: str) -> None:
        # Its own session, so a timeout kills whatever it started too; its stderr goes to a
        # file rather than a pipe that a child left in the background could hold open.
        with tempfile.TemporaryFile() as errors:
            try:
                process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                           stderr=errors, cwd=self.root, start_new_session=True)
            except OSError as error:
                self._failed(f"{what}: cannot run {argv[0]}: {error.strerror or error}")
                return
            try:
                try:
                    process.stdin.write(data)  # type: ignore[union-attr]
                    process.stdin.close()  # type: ignore[union-attr]
                except BrokenPipeError:
                    pass  # a hook need not read its input
                status = process.wait(timeout=self.hooks.timeout)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                process.wait()
                self._failed(f"{what}: {argv[0]} ran past its timeout of {self.hooks.timeout:g}s "
                             "and was killed")
                return
            if status != 0:
                errors.seek(0)
                lines = errors.read(64_000).decode("utf-8", "replace").strip().splitlines()
                tail = f": {lines[-1][:200]}" if lines else ""
                self._failed(f"{what}: {argv[0]} exited with status {status}{tail}")

    def _failed(self, line: str) -> None:
        with self.lock:
            self.failures.append(line)
            try:
                with open(self.log_path, "a") as handle:
                    handle.write(f"{iso(time.time())} {line}\n")
            except OSError:
                pass  # the line still reaches stderr through `failures`

    def wait(self) -> list[str]:
        """Let the running hooks end (each is killed at its timeout); the failures' lines."""
        for thread in self.threads:
            thread.join(self.hooks.timeout + 5)
        with self.lock:
            return list(self.failures)
