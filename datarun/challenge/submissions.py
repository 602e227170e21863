"""Storing submissions: validate the folder, store its files, queue one task per fold.

A submission's files are kept in the blob store, addressed by content; the submission is
identified for de-duplication by the hash of its file names and contents, so the same
code sent again by the same team on the same problem is recognised and not run again.
Everything is checked before anything is stored, and the rows go in one transaction.
"""

from __future__ import annotations

import ast
import errno
import hashlib
import os
import stat
import time
from pathlib import Path
from typing import Any

from datarun.challenge.events import enforce_rules, resolve_event
from datarun.errors import NotFound, UsageError
from datarun.problems.registered import get_problem
from datarun.problems.workflows import CODE_FILE_CAP, Workflow, workflow_for
from datarun.safetext import check_name
from datarun.sizes import format_cap, format_size
from datarun.store import actions, taskqueries, tasks
from datarun.store import problems as stored_problems
from datarun.store import submissions as stored
from datarun.store.blobs import BlobStore, sha256_bytes
from datarun.store.db import Database, transaction
from datarun.store.task_events import events_of
from datarun.store.workspace import Workspace

DATA_CAP = "a data file (the problem's: problem add --data-file-cap)"
# A submission file is opened without following a link and without blocking on a FIFO.
OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
MAX_NAME = 100
# training_output/ is what ramp-test leaves in a RAMP submission folder.
IGNORED = {"__pycache__", ".DS_Store", ".ipynb_checkpoints", "training_output"}


def _check_label(value: str, what: str) -> str:
    """A team or submission name: NFKC, trimmed, no invisible characters (datarun.safetext)."""
    value = check_name(value, what)
    if not value:
        raise UsageError(f"{what} must not be empty")
    if len(value) > MAX_NAME:
        raise UsageError(f"{what} is longer than {MAX_NAME} characters")
    return value


def _defined_names(tree: ast.Module) -> set[str]:
    names = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.ImportFrom | ast.Import):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
    return names


def _kind(mode: int) -> str:
    for test, kind in ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return kind
    return "not a plain file"


def _refuse_unless_plain(name: str, info: os.stat_result) -> None:
    if not stat.S_ISREG(info.st_mode):
        raise UsageError(f"{name} is {_kind(info.st_mode)}, not a regular file: submit plain files only")


def is_code(name: str) -> bool:
    """A workflow's code file (.py); any other element (external_data.csv) is a data file."""
    return name.endswith(".py")


def _cap(name: str, workflow) -> tuple[int, str]:
    """(bytes, what it caps): code files 512 kB, data files the problem's data-file cap."""
    if is_code(name):
        return CODE_FILE_CAP, "a code file"
    return workflow.data_file_cap, DATA_CAP


def _check_opened(name: str, info: os.stat_result, cap: int, what: str) -> None:
    """What is decided on the opened file itself (fstat), so nothing can be swapped in
    between the check and the read."""
    _refuse_unless_plain(name, info)
    if info.st_nlink != 1:
        raise UsageError(f"{name} has {info.st_nlink} hard links (its content is also elsewhere): "
                         "submit a copy of its own")
    if info.st_size > cap:
        raise UsageError(f"{name} is {format_size(info.st_size)}; the cap is {format_cap(cap)} "
                         f"{what}")


def _read_plain_file(entry: Path, folder: Path, workflow: Workflow, allowed: set[str]) -> bytes:
    """The bytes of one submission file, which must be a regular file with one link.

    A first look (lstat) names links, folders and unexpected names, and keeps FIFOs and
    devices from being opened at all; the file is then opened without following a link
    and without blocking (a FIFO swapped in meanwhile cannot hang `submit`), and what
    decides is fstat on that open descriptor, then at most the cap is read."""
    name = entry.name
    first = os.lstat(entry)
    if stat.S_ISLNK(first.st_mode):
        raise UsageError(f"{name} is a link (to {os.readlink(entry)}); submit plain files only, "
                         "nothing outside the folder")
    if stat.S_ISDIR(first.st_mode):
        raise UsageError(f"unexpected folder {name}/ in {folder}: the {workflow.name} workflow "
                         f"takes only {', '.join(sorted(allowed))}")
    if name not in allowed:
        raise UsageError(f"unexpected file {name} in {folder}: the {workflow.name} workflow takes "
                         f"only {', '.join(sorted(allowed))}")
    _refuse_unless_plain(name, first)
    try:
        fd = os.open(entry, OPEN_FLAGS)
    except OSError as error:
        if error.errno == errno.ELOOP:  # became a link since the first look
            raise UsageError(f"{name} is a link; submit plain files only, nothing outside the "
                             "folder") from None
        raise UsageError(f"cannot read {name}: {error.strerror or error}") from None
    cap, what = _cap(name, workflow)
    try:
        _check_opened(name, os.fstat(fd), cap, what)
        chunks, size = [], 0
        while size <= cap:
            chunk = os.read(fd, min(cap + 1 - size, 1 << 24))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    finally:
        os.close(fd)
    if size > cap:  # it grew while it was read
        raise UsageError(f"{name} is over the cap of {format_cap(cap)} {what}")
    return b"".join(chunks)


def read_submission_folder(folder: Path, workflow: Workflow) -> dict[str, bytes]:
    """The submission's files {name: bytes}, after every check; raise UsageError on the first fault."""
    folder = Path(folder)
    allowed, required = set(workflow.files), set(workflow.required)
    if not folder.exists():
        raise UsageError(f"submission folder {folder} does not exist")
    if not folder.is_dir():
        raise UsageError(f"{folder} is not a folder: pass the folder that holds {', '.join(sorted(required))}")
    files: dict[str, bytes] = {}
    for entry in sorted(folder.iterdir(), key=lambda p: p.name):
        name = entry.name
        if name in IGNORED:
            continue
        data = _read_plain_file(entry, folder, workflow, allowed)
        if not is_code(name):  # a workflow's data file: any bytes
            files[name] = data
            continue
        if b"\0" in data:
            raise UsageError(f"{name} is a binary file; submissions are Python source text")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise UsageError(f"{name} is not UTF-8 text; save it as UTF-8") from None
        if name.endswith(".py"):
            try:
                tree = ast.parse(text, filename=name)
            except SyntaxError as error:
                raise UsageError(f"{name} line {error.lineno}: {error.msg}") from None
            for function in workflow.functions.get(name, ()):
                if function not in _defined_names(tree):
                    raise UsageError(f"{name} does not define {function}(): the {workflow.name} workflow calls it")
        files[name] = data
    missing = sorted(required - set(files))
    if missing:
        raise UsageError(f"no {missing[0]} in {folder}: the {workflow.name} workflow needs {', '.join(sorted(required))}")
    return files


def files_digest(file_hashes: dict[str, str]) -> str:
    digest = hashlib.sha256()
    for name in sorted(file_hashes):
        digest.update(f"{name}\0{file_hashes[name]}\n".encode())
    return digest.hexdigest()


def submit(workspace: Workspace, db: Database, problem_name: str, folder: Path, team: str,
           name: str | None = None, event: str | None = None, force: bool = False,
           now: float | None = None) -> dict[str, Any]:
    """Store a submission to an event and queue its tasks; an identical earlier one is returned instead.

    `event` defaults to the problem's default event. The event's rules are checked under
    the write lock, after the duplicate check (an identical resubmission stores nothing, so
    no rule applies to it); `force` stores a submission that breaks them and records which.
    """
    problem = get_problem(db, problem_name)
    workflow = workflow_for(problem)
    team = _check_label(team, "team")
    name = _check_label(name if name is not None else Path(folder).resolve().name, "submission name")
    target = resolve_event(db, problem["name"], event)
    files = read_submission_folder(Path(folder), workflow)
    file_hashes = {filename: sha256_bytes(data) for filename, data in files.items()}
    digest = files_digest(file_hashes)
    folds = stored_problems.fold_numbers(db, problem["name"])
    now = time.time() if now is None else now
    with transaction(db):
        same = stored.same_code(db, problem["name"], team, digest)
        if same:
            return {"id": same["id"], "name": same["name"], "created": False, "tasks": len(folds),
                    "problem": problem["name"], "team": team, "event": same["event"], "forced": None}
        forced = enforce_rules(db, target, team, now, force)
        # Blobs go in only once the submission is accepted: a refusal leaves nothing behind.
        store = BlobStore(workspace.blobs_dir)
        for data in files.values():
            store.put_bytes(data)
        submission_id = stored.insert(db, problem["name"], target["name"], team, name, digest,
                                      file_hashes, now, forced)
        tasks.create(db, submission_id, folds, now)
    return {"id": submission_id, "name": name, "created": True, "tasks": len(folds),
            "problem": problem["name"], "team": team, "event": target["name"], "forced": forced}


def submission_state(states: list[str]) -> str:
    """A submission's state, derived from its tasks' states: done when every fold is, running
    while any runs or some finished and others wait, failed (or else cancelled) once every
    fold has finished and some did not succeed."""
    if states and all(s == "done" for s in states):
        return "done"
    if any(s == "running" for s in states):
        return "running"
    finished = all(s in tasks.FINISHED for s in states)
    for state in ("failed", "cancelled"):
        if state in states:
            return state if finished else "running"
    return "queued"


def get_submission(db: Database, submission_id: int | str) -> dict[str, Any]:
    try:
        key = int(submission_id)
    except (TypeError, ValueError):
        raise UsageError(f"a submission id is a number, got {submission_id!r}") from None
    row = stored.get(db, key)
    if row is None:
        raise NotFound(f"no submission {key}: `datarun submission list` shows the ids")
    return row


def list_submissions(db: Database, problem: str | None = None) -> list[dict[str, Any]]:
    rows = []
    for row, states in stored.with_task_states(db, problem):
        row["state"] = submission_state(states)
        row["tasks"] = {s: states.count(s) for s in map(str, tasks.TaskState) if s in states}
        rows.append(row)
    return rows


SPLITS = ("train", "valid", "test")


def describe_submission(workspace: Workspace, db: Database, submission_id: int | str) -> dict[str, Any]:
    """A submission with its per-fold tasks, scores and bagged scores (for `submission show`)."""
    row = get_submission(db, submission_id)
    stored.attach_details(db, [row], SPLITS)
    row["state"] = submission_state([task["state"] for task in row["tasks"]])
    events = events_of(db, [task["id"] for task in row["tasks"]])
    for task in row["tasks"]:
        task["events"] = events[task["id"]]
    return row


def describe_submissions(db: Database, problem: str, event: str | None = None,
                         splits: tuple[str, ...] = SPLITS, environment: bool = False) -> dict[int, dict[str, Any]]:
    """`describe_submission` for every submission of a problem (or of one of its events), by id.

    Only the scores of `splits` are read: a public view passes ("train", "valid") and so
    never holds a test score. The tasks' `environment` (host and library versions) is read
    only when asked for.
    """
    rows = stored.of_problem(db, problem, event)
    stored.attach_details(db, rows, tuple(splits), problem, event, environment)
    for row in rows:
        row["state"] = submission_state([task["state"] for task in row["tasks"]])
    return {row["id"]: row for row in rows}


def error_tail(error: str | None, lines: int = 3) -> list[str]:
    """The last `lines` non-empty lines of a task's recorded error (a traceback's end)."""
    if not error:
        return []
    return [line for line in error.strip().splitlines() if line.strip()][-lines:]


def submission_code(workspace: Workspace, db: Database, submission_id: int | str) -> dict[str, str]:
    row = get_submission(db, submission_id)
    store = BlobStore(workspace.blobs_dir)
    return {name: store.get_bytes(digest).decode("utf-8") for name, digest in sorted(row["files"].items())}


# -- what an organiser changes afterwards ------------------------------------------------


def hide_submission(db: Database, submission_id: int | str, reason: str | None = None,
                    now: float | None = None) -> dict[str, Any]:
    """Take a submission off every board, blend and page; it is kept, and the change recorded.

    It still counts in its team's event rules (interval, number of submissions)."""
    row = get_submission(db, submission_id)
    if row["hidden_at"] is not None:
        raise UsageError(f"submission {row['id']} is hidden already (`datarun submission unhide "
                         f"{row['id']}` shows it again)")
    reason = reason.strip() if reason else None
    now = time.time() if now is None else now
    with transaction(db):
        stored.set_hidden(db, row["id"], now, reason)
        actions.record(db, "submission_hidden", row["id"], {"reason": reason}, at=now)
    return get_submission(db, row["id"])


def unhide_submission(db: Database, submission_id: int | str, now: float | None = None) -> dict[str, Any]:
    """Put a hidden submission back on the boards (recorded)."""
    row = get_submission(db, submission_id)
    if row["hidden_at"] is None:
        raise UsageError(f"submission {row['id']} is not hidden")
    with transaction(db):
        stored.set_hidden(db, row["id"], None, None)
        actions.record(db, "submission_unhidden", row["id"], None, at=now)
    return get_submission(db, row["id"])


def select_final(db: Database, submission_ids: list[str], now: float | None = None) -> dict[str, Any]:
    """Make these submissions their team's final choice in their event, for its private
    leaderboard (`leaderboard --final`); replaces the team's earlier choice (recorded)."""
    from datarun.challenge.events import get_event

    rows = [get_submission(db, sid) for sid in submission_ids]
    if not rows:
        raise UsageError("submission select: give the ids of the submissions to choose")
    ids = sorted({row["id"] for row in rows})
    first = rows[0]
    for row in rows[1:]:
        if (row["team"], row["event"]) != (first["team"], first["event"]):
            raise UsageError(f"submissions {first['id']} and {row['id']} are not of one team in one event "
                             f"({first['team']} in {first['event']}, {row['team']} in {row['event']}): "
                             "a choice is one team's")
    hidden = [row["id"] for row in rows if row["hidden_at"] is not None]
    if hidden:
        raise UsageError(f"submission {hidden[0]} is hidden: it cannot be a final submission")
    event = get_event(db, first["event"])
    if event["max_final"] is None and event["default"]:  # an open event takes no rules
        raise UsageError(f"event {event['name']!r} is problem {event['problem']!r}'s default event and takes "
                         "no final choice: every submission is on its private leaderboard (an event of its "
                         f"own takes one: `datarun event add NAME --problem {event['problem']} --max-final N`)")
    if event["max_final"] is None:
        raise UsageError(f"event {event['name']!r} takes no final choice: every submission is on its "
                         f"private leaderboard (`datarun event edit {event['name']} --max-final N` sets one)")
    if len(ids) > event["max_final"]:
        raise UsageError(f"{len(ids)} submissions chosen, but event {event['name']!r} takes at most "
                         f"{event['max_final']} final submissions a team")
    now = time.time() if now is None else now
    with transaction(db):
        stored.set_final(db, ids, first["team"], event["name"], now)
        actions.record(db, "final_selected", first["team"], {"event": event["name"], "submissions": ids},
                       at=now)
    return {"team": first["team"], "event": event["name"], "submission_ids": ids,
            "max_final": event["max_final"]}


def remove_problem(db: Database, name: str, force: bool = False) -> dict[str, Any]:
    """Remove a problem from the workspace: refused while it has submissions unless `force`,
    and always while one of its tasks runs. Its blobs stay in the store (content-addressed,
    they may be shared); the removal is recorded."""
    problem = get_problem(db, name)
    with transaction(db):
        count = stored.count_by_problem(db).get(problem["name"], 0)
        if count and not force:
            raise UsageError(f"problem {problem['name']!r} has {count} submission{'s' if count > 1 else ''}: "
                             "pass --force to remove it with them (their scores and events go too)")
        running = taskqueries.running_of_problem(db, problem["name"])
        if running:
            raise UsageError(f"problem {problem['name']!r} has {running} task{'s' if running > 1 else ''} "
                             "running: cancel its submissions first (`datarun cancel ID`)")
        removed_tasks = tasks.delete_of_problem(db, problem["name"])
        gone = stored_problems.delete(db, problem["name"])
        actions.record(db, "problem_removed", problem["name"], {"forced": force, **gone})
    return {"name": problem["name"], "removed": True, "submissions": gone["submissions"], "tasks": removed_tasks,
            "events": gone["events"]}
