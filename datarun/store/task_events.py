"""What happened to a task that its row does not keep: a result refused, a bundle refused.

A task row holds its present (state, attempt, last error); when the dispatcher refuses a
result that is not the attempt's own, or a host will not take a bundle because a folder
of that key is already there, the task simply moves on (back to the queue, a new
attempt), and the row forgets why. These events keep it, for `submission show` and
`datarun logs`. Written by the dispatcher (datarun.dispatch.collect).
"""

from __future__ import annotations

import time
from typing import Any

from datarun.store.db import Database, transaction

KINDS = ("result_refused", "bundle_refused")


def record_event(db: Database, task_id: int, attempt: int, host: str | None, kind: str, text: str) -> None:
    """Note an event once per attempt and kind: the first reason is the one kept (what the
    given-up attempt's folder yields at later syncs, until it is removed, is not news)."""
    assert kind in KINDS, kind
    with transaction(db):
        if db.execute("SELECT 1 FROM task_events WHERE task = ? AND attempt = ? AND kind = ?",
                      [task_id, attempt, kind]).fetchone():
            return
        db.execute("INSERT INTO task_events (task, attempt, host, at, kind, text) VALUES (?, ?, ?, ?, ?, ?)",
                   [task_id, attempt, host, time.time(), kind, text])


def events_of(db: Database, task_ids: list[int]) -> dict[int, list[dict[str, Any]]]:
    """Each task's events, oldest first: {task id: [{"attempt", "host", "at", "kind", "text"}]}."""
    found: dict[int, list[dict[str, Any]]] = {task_id: [] for task_id in task_ids}
    for start in range(0, len(task_ids), 500):
        chunk = task_ids[start:start + 500]
        marks = ",".join("?" * len(chunk))
        for row in db.execute(f"SELECT task, attempt, host, at, kind, text FROM task_events "
                              f"WHERE task IN ({marks}) ORDER BY id", chunk):
            found[row[0]].append(dict(zip(("attempt", "host", "at", "kind", "text"), row[1:], strict=True)))
    return found
