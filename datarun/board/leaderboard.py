"""Leaderboard rows, built as plain data with SQL; rendering is elsewhere.

A submission is on the leaderboard once every fold is finished and at least one is done.
Its official score is the bagged validation score of the problem's first score type (the
test scores appear only in the private view). Times and CPU are totals over the folds,
memory the largest peak of any fold: what the submission cost, and the most it needed at
once.

Ranks go to rows with an official score only, best first; equal scores share a rank and
the next rank skips (1, 2, 2, 4: "standard competition ranking"); rows tied on score are
listed by id. A submission with a failed fold (`state` "partial") is listed with its
scored folds' means, unranked, with no bagged score and no contributivity: it is not
blended. Rows without an official score (undefined on these rows, e.g. roc_auc where a
class never appears in the validation rows) are listed unranked after the ranked ones.

A leaderboard shows one event's submissions, or all of a problem's. In the public view,
the scores of an event whose `public_opens` is still ahead are withheld: such rows carry
no score, no contributivity and no rank (their order would leak the ranking), and come
last, in submission order. The private view (organisers) shows everything. Every figure a
board shows (ranks, contributivity, the blended and best single scores) is computed from
the submissions it shows: the blend of the board's scope (`datarun.board.scopes`).

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

from datarun.problems.registered import get_problem
from datarun.safetext import csv_row

HIDDEN_FIELDS = ("score", "contributivity")


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    mean = sum(values) / len(values)
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))


def competition_ranks(values: list[float], lower_is_better: bool) -> list[int]:
    """1 + the number of strictly better values, for each value: ties share a rank and the
    next rank skips (1, 2, 2, 4)."""
    ordered = sorted(values, reverse=not lower_is_better)
    first: dict[float, int] = {}
    for position, value in enumerate(ordered, 1):
        first.setdefault(value, position)
    return [first[value] for value in values]


def _defined(value) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def _blend_of(db, problem_name: str, scope: str, shown: list[int]) -> tuple[dict | None, dict, bool]:
    """(blend summary, {submission: contributivity}, current) of the board's scope.

    `shown`: the fully trained submissions the board shows in that scope. Figures stored
    for another set of submissions (not recomputed yet) are not shown."""
    if "blends" not in db.table_names():
        return None, {}, not shown
    found = list(db.query(
        "SELECT considered, score, combined_valid, best_single_valid, combined_test, note FROM blends "
        "WHERE problem = ? AND scope = ?", [problem_name, scope]))
    if not found:
        return None, {}, not shown
    blend = found[0]
    if json.loads(blend.pop("considered")) != shown:
        return None, {}, False
    shares = dict(db.execute(
        "SELECT submission, value FROM contributivity WHERE problem = ? AND scope = ?",
        [problem_name, scope]).fetchall())
    return dict(blend, scope=scope), shares, True


def leaderboard(db, problem_name: str, private: bool = False, event: str | None = None,
                now: float | None = None) -> dict:
    """The ranked submissions of a problem, or of one of its events (`event`)."""
    from datarun.board.scopes import board_scope, hidden_events
    from datarun.board.scorer import score_directions

    problem = get_problem(db, problem_name)
    if event is not None:
        from datarun.challenge.events import resolve_event

        event = resolve_event(db, problem_name, event)["name"]
    now = time.time() if now is None else now
    hidden = {} if private else hidden_events(db, problem_name, now)
    names = problem["score_names"]
    official = names[0]
    lower = score_directions(problem)
    submissions = {
        row["id"]: row
        for row in db.query(
            "SELECT s.id, s.team, s.name, s.event, s.created_at, count(t.id) AS folds, "
            "sum(t.state = 'done') AS done, sum(t.state IN ('queued', 'running')) AS pending, "
            "sum(t.train_time) AS train_time, "
            "sum(t.valid_time) AS valid_time, sum(t.test_time) AS test_time, "
            "sum(t.cpu_time) AS cpu_time, max(t.peak_memory) AS peak_memory "
            "FROM submissions s JOIN tasks t ON t.submission = s.id WHERE s.problem = ? "
            "AND (? IS NULL OR s.event = ?) AND s.hidden_at IS NULL GROUP BY s.id HAVING pending = 0 AND done > 0",
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
    trained = [sid for sid, sub in submissions.items() if sub["done"] == sub["folds"]]
    withheld = {sid for sid in trained if submissions[sid]["event"] in hidden}
    scope = board_scope(event, private, {submissions[sid]["event"] for sid in withheld})
    blend, current = None, True
    contributivity: dict[int, float] = {}
    if not (event is not None and event in hidden):
        blend, contributivity, current = _blend_of(
            db, problem_name, scope, sorted(sid for sid in trained if sid not in withheld))
    blend_note = blend.pop("note") if blend is not None else None
    if blend is not None and not private:
        blend.pop("combined_test")
    rows = []
    for sid, sub in submissions.items():
        scored = sub["done"] == sub["folds"]
        valid = bagged.get(sid, {}).get("valid", {}) if scored else {}
        row = {
            "id": sid,
            "team": sub["team"],
            "submission": sub["name"],
            "event": sub["event"],
            "state": "scored" if scored else "partial",
            "folds": sub["folds"],
            "folds_scored": sub["done"],
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
            test = bagged.get(sid, {}).get("test", {}) if scored else {}
            row["test"] = {name: test.get(name) for name in names}
            if row["note"]:
                row["test"] = {name: _mean_std(test_fold_scores.get(sid, {}).get(name, []))[0]
                               for name in names}
        row["scores_hidden"] = sub["event"] in hidden
        if row["scores_hidden"]:
            for key in HIDDEN_FIELDS:
                row[key] = None
            for key in ("valid", "valid_mean", "valid_std"):
                row[key] = {name: None for name in names}
        rows.append(row)

    ranked = [row for row in rows if not row["scores_hidden"] and row["state"] == "scored"
              and _defined(row["score"])]
    for row, rank in zip(ranked, competition_ranks([r["score"] for r in ranked], lower[official]),
                         strict=True):
        row["rank"] = rank

    def sort_key(row):
        if row["scores_hidden"]:
            return (3, row["submitted_at"], row["id"])
        if row.get("rank") is None:
            return (1 if row["state"] == "scored" else 2, 0, row["id"])
        return (0, row["rank"], row["id"])

    for row in rows:
        row.setdefault("rank", None)
    rows.sort(key=sort_key)
    shown_hidden = {name: when for name, when in hidden.items()
                    if any(row["event"] == name for row in rows) or name == event}
    notices: list[str] = []
    withheld_notice = _notice(shown_hidden)
    if withheld_notice:
        notices.append(withheld_notice)
    if not current:
        notices.append("contributivity and the blended score are not up to date for these "
                       "submissions: the next `datarun dispatch` or `datarun train` computes them")
    return {
        "problem": problem_name,
        "event": event,
        "blend": blend,
        "hidden_events": shown_hidden,
        "notice": "; ".join(notices) or None,
        "blend_current": current,
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
                "peak_memory", "submitted_at", "scores_hidden", "state", "folds", "folds_scored", "note"]
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
        for key in ("state", "folds", "folds_scored"):
            flat[key] = row[key]
        flat["note"] = row.get("note") or board.get("note")
        flat_rows.append(csv_row(flat))
    return flat_rows
