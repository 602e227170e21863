"""The core's answers in the vocabulary of the JSON contract (docs/JSON.md).

Pure functions, dict in, dict out. The core keeps its own names (its renderers, the site
and the CSV columns read them); what a `--json` reader sees follows one vocabulary:

- an object's own id is `id` and its own name `name`; it refers to another object by id
  as `<kind>_id` (`submission_id`, `task_id`), by name as `<kind>` (`problem`, `event`,
  `team`, `host`, `submission`);
- a moment is a key ending in `_at` (`submitted_at`, `started_at`, `finished_at`), one
  name per moment: `submitted_at` is when a submission was stored, `started_at` and
  `finished_at` when a task's process ran, by its host's clock;
- durations are seconds (`*_time`, `min_interval`), sizes bytes (`memory`, `peak_memory`,
  `freed`).
"""

from __future__ import annotations

from typing import Any


def _renamed(row: dict[str, Any], names: dict[str, str]) -> dict[str, Any]:
    return {names.get(key, key): value for key, value in row.items()}


def task_event(event: dict[str, Any]) -> dict[str, Any]:
    return _renamed(event, {"at": "recorded_at"})


def leaderboard(board: dict[str, Any]) -> dict[str, Any]:
    body = dict(board)
    body.setdefault("view", None)  # the whole board; `best_per_team` or `final` when narrowed
    body["rows"] = [_renamed(row, {"submission": "name"}) for row in board["rows"]]
    body["hidden_events"] = [{"name": name, "public_opens_at": when}
                             for name, when in sorted(board["hidden_events"].items())]
    return body


def submission_row(row: dict[str, Any]) -> dict[str, Any]:
    return _renamed(row, {"created_at": "submitted_at"})


def submission(details: dict[str, Any]) -> dict[str, Any]:
    body = submission_row(details)
    body["tasks"] = []
    for task in details["tasks"]:
        task = _renamed(task, {"ran_from": "started_at", "ran_to": "finished_at"})
        task["events"] = [task_event(event) for event in task.get("events", [])]
        body["tasks"].append(task)
    return body


def event(details: dict[str, Any]) -> dict[str, Any]:
    return _renamed(details, {"opens": "opens_at", "closes": "closes_at",
                              "public_opens": "public_opens_at"})


def history_action(row: dict[str, Any]) -> dict[str, Any]:
    """One recorded change: its detail in the same vocabulary (an edited event's rules as
    `event` names them, a final choice's submissions as `submission_ids`)."""
    detail = row["detail"]
    if row["action"] == "event_edited" and detail:
        detail = {side: event(rules) for side, rules in detail.items()}
    elif row["action"] == "final_selected" and detail:
        detail = _renamed(detail, {"submissions": "submission_ids"})
    return dict(row, detail=detail)


def refers_to_submission(result: dict[str, Any]) -> dict[str, Any]:
    """retry, cancel, logs, export --ramp: the submission they act on is `submission_id`."""
    body = _renamed(result, {"submission": "submission_id", "task": "task_id"})
    if "events" in body:
        body["events"] = [task_event(item) for item in body["events"]]
    return body
