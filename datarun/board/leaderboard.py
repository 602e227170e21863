"""Leaderboard rows, built as plain data with SQL; rendering is elsewhere.

A submission is on the leaderboard once every fold is done. Its official score is the
bagged validation score of the problem's first score type (the test scores appear only
in the private view). Times and CPU are totals over the folds, memory the largest peak
of any fold: what the submission cost, and the most it needed at once.

A leaderboard shows one event's submissions, or all of a problem's. In the public view,
the scores of an event whose `public_opens` is still ahead are withheld: such rows carry
no score, no contributivity and no rank (their order would leak the ranking), and come
last, in submission order. The private view (organisers) shows everything.

A RAMP kit whose predictions cannot be combined (its `Predictions.combine` raises, as it
would in ramp-test) has no bagged scores and no contributivity: its rows show the mean of
the fold scores instead, and the board carries one line saying so (`note`, printed under
the table, a `note` column in the CSV).

`csv_columns` / `csv_rows` flatten a board for `--csv`; docs/LEADERBOARD.md lists the
columns, whose names are stable, and the rule that keeps a team name from running as a
spreadsheet formula.
"""

import datetime as dt
import json
import math
import time

from datarun.problems.registry import get_problem
from datarun.safetext import csv_row

HIDDEN_FIELDS = ("score", "contributivity")


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    mean = sum(values) / len(values)
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))


def _hidden_events(db, problem_name: str, now: float) -> dict[str, float]:
    """The problem's events whose scores are not public yet: {name: public_opens}."""
    if "events" not in db.table_names():
        return {}
    return dict(db.execute(
        "SELECT name, public_opens FROM events WHERE problem = ? AND public_opens > ?",
        [problem_name, now]).fetchall())


def leaderboard(db, problem_name: str, private: bool = False, event: str | None = None,
                now: float | None = None) -> dict:
    """The ranked submissions of a problem, or of one of its events (`event`)."""
    from datarun.board.scorer import score_directions

    problem = get_problem(db, problem_name)
    if event is not None:
        from datarun.challenge.events import resolve_event

        event = resolve_event(db, problem_name, event)["name"]
    now = time.time() if now is None else now
    hidden_events = {} if private else _hidden_events(db, problem_name, now)
    names = problem["score_names"]
    official = names[0]
    lower = score_directions(problem)
    submissions = {
        row["id"]: row
        for row in db.query(
            "SELECT s.id, s.team, s.name, s.event, s.created_at, count(t.id) AS folds, "
            "sum(t.state = 'done') AS done, sum(t.train_time) AS train_time, "
            "sum(t.valid_time) AS valid_time, sum(t.test_time) AS test_time, "
            "sum(t.cpu_time) AS cpu_time, max(t.peak_memory) AS peak_memory "
            "FROM submissions s JOIN tasks t ON t.submission = s.id WHERE s.problem = ? "
            "AND (? IS NULL OR s.event = ?) GROUP BY s.id HAVING done = folds",
            [problem_name, event, event],
        )
    }
    bagged: dict[int, dict] = {}
    notes: dict[int, str] = {}  # why a submission has no bagged scores
    for sid, split, score, value, note in db.execute(
        "SELECT b.submission, b.split, b.score, b.value, b.note FROM bagged_scores b "
        "JOIN submissions s ON s.id = b.submission WHERE s.problem = ?", [problem_name]):
        bagged.setdefault(sid, {}).setdefault(split, {})[score] = value
        if note:
            notes[sid] = note
    fold_scores: dict[int, dict[str, list]] = {}
    test_fold_scores: dict[int, dict[str, list]] = {}
    for sid, split, score, value in db.execute(
        "SELECT t.submission, sc.split, sc.score, sc.value FROM scores sc JOIN tasks t "
        "ON t.id = sc.task JOIN submissions s ON s.id = t.submission WHERE s.problem = ? "
        "AND sc.split IN ('valid', 'test')", [problem_name]):
        chosen = fold_scores if split == "valid" else test_fold_scores
        chosen.setdefault(sid, {}).setdefault(score, []).append(value)
    contributivity = {}
    if "contributivity" in db.table_names():
        contributivity = dict(db.execute(
            "SELECT submission, value FROM contributivity WHERE problem = ?", [problem_name]).fetchall())
    rows = []
    for sid, sub in submissions.items():
        valid = bagged.get(sid, {}).get("valid", {})
        row = {
            "id": sid,
            "team": sub["team"],
            "submission": sub["name"],
            "event": sub["event"],
            "score": valid.get(official),
            "valid": {name: valid.get(name) for name in names},
            "valid_mean": {},
            "valid_std": {},
            "contributivity": contributivity.get(sid),
            "train_time": sub["train_time"],
            "valid_time": sub["valid_time"],
            "test_time": sub["test_time"],
            "cpu_time": sub["cpu_time"],
            "peak_memory": sub["peak_memory"],
            "submitted_at": sub["created_at"],
        }
        for name in names:
            row["valid_mean"][name], row["valid_std"][name] = _mean_std(fold_scores.get(sid, {}).get(name, []))
        row["note"] = notes.get(sid)
        if row["note"]:  # not bagged: the mean of the fold scores stands in
            row["valid"] = dict(row["valid_mean"])
            row["score"] = row["valid"][official]
        if private:
            test = bagged.get(sid, {}).get("test", {})
            row["test"] = {name: test.get(name) for name in names}
            if row["note"]:
                row["test"] = {name: _mean_std(test_fold_scores.get(sid, {}).get(name, []))[0]
                               for name in names}
        row["scores_hidden"] = sub["event"] in hidden_events
        if row["scores_hidden"]:
            for key in HIDDEN_FIELDS:
                row[key] = None
            for key in ("valid", "valid_mean", "valid_std"):
                row[key] = {name: None for name in names}
        rows.append(row)

    def sort_key(row):
        if row["scores_hidden"]:
            return (2, row["submitted_at"], row["id"])
        value = row["score"]
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return (1, 0.0, row["id"])
        return (0, value if lower[official] else -value, row["id"])

    rows.sort(key=sort_key)
    for rank, row in enumerate(rows, 1):
        row["rank"] = None if row["scores_hidden"] else rank
    shown_hidden = {name: when for name, when in hidden_events.items()
                    if any(row["event"] == name for row in rows) or name == event}
    blend = None
    blend_note = None
    if "blends" in db.table_names() and (private or not shown_hidden):
        found = list(db.query(
            "SELECT score, combined_valid, best_single_valid, combined_test, note FROM blends "
            "WHERE problem = ?", [problem_name]))
        if found:
            blend = found[0]
            blend_note = blend.pop("note")
            if not private:
                blend.pop("combined_test")
    return {
        "problem": problem_name,
        "event": event,
        "blend": blend,
        "hidden_events": shown_hidden,
        "notice": _notice(shown_hidden),
        "note": _note([row["note"] for row in rows if row["note"]], blend_note),
        "official_score": official,
        "scores": names,
        "lower_is_better": lower,
        "private": private,
        "rows": rows,
        "limits": problem["limits"],
        "spec": json.loads(problem["spec"]) if isinstance(problem.get("spec"), str) else problem.get("spec"),
    }


def _note(bagging: list[str], blend: str | None) -> str | None:
    """One line: why scores are fold means (no bagging) and why there is no contributivity."""
    parts = []
    if bagging:
        parts.append(f"{bagging[0]}; the scores shown are means over folds")
    if blend and not (bagging and blend.split(": ", 1)[1] == bagging[0].split(": ", 1)[1]):
        parts.append(blend)
    elif blend:
        parts[0] = "no bagged scores and no contributivity: " + parts[0].split(": ", 1)[1]
    return "; ".join(parts) or None


def _notice(hidden_events: dict[str, float]) -> str | None:
    from datarun.challenge.events import format_when

    if not hidden_events:
        return None
    parts = ", ".join(f"event {name} until {format_when(when)}"
                      for name, when in sorted(hidden_events.items()))
    return f"scores not public yet ({parts}); organisers see them with --private"


def csv_columns(board: dict) -> list[str]:
    """The flat column names of a board, in order (documented in docs/LEADERBOARD.md)."""
    columns = ["rank", "id", "team", "submission", "event", "score"]
    for name in board["scores"]:
        columns += [f"valid_{name}", f"valid_mean_{name}", f"valid_std_{name}"]
    if board["private"]:
        columns += [f"test_{name}" for name in board["scores"]]
    columns += ["contributivity", "train_time", "valid_time", "test_time", "cpu_time",
                "peak_memory", "submitted_at", "scores_hidden", "note"]
    return columns


def csv_rows(board: dict) -> list[dict]:
    """One flat dict a leaderboard row, keyed by `csv_columns`; None is an empty cell.

    Text cells that a spreadsheet would run as a formula are escaped (`safetext.csv_cell`)."""
    flat_rows = []
    for row in board["rows"]:
        flat = {key: row[key] for key in ("rank", "id", "team", "submission", "event", "score")}
        for name in board["scores"]:
            flat[f"valid_{name}"] = row["valid"][name]
            flat[f"valid_mean_{name}"] = row["valid_mean"][name]
            flat[f"valid_std_{name}"] = row["valid_std"][name]
        if board["private"]:
            for name in board["scores"]:
                flat[f"test_{name}"] = row["test"][name]
        for key in ("contributivity", "train_time", "valid_time", "test_time", "cpu_time",
                    "peak_memory"):
            flat[key] = row[key]
        submitted = row["submitted_at"]
        flat["submitted_at"] = (None if submitted is None else dt.datetime.fromtimestamp(
            submitted, dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z"))
        flat["scores_hidden"] = int(row["scores_hidden"])
        flat["note"] = row.get("note") or board.get("note")
        flat_rows.append(csv_row(flat))
    return flat_rows
