"""Leaderboard rows, built as plain data with SQL; rendering is elsewhere.

A submission is on the leaderboard once every fold is done. Its official score is the
bagged validation score of the problem's first score type (the test scores appear only
in the private view). Times and CPU are totals over the folds, memory the largest peak
of any fold: what the submission cost, and the most it needed at once.
"""

import json
import math

from datarun.problems import get_problem


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    mean = sum(values) / len(values)
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))


def leaderboard(db, problem_name: str, private: bool = False) -> dict:
    from datarun.scores import SCORE_TYPES

    problem = get_problem(db, problem_name)
    names = problem["score_names"]
    official = names[0]
    lower = {name: SCORE_TYPES[name].lower_is_better for name in names}
    submissions = {
        row["id"]: row
        for row in db.query(
            "SELECT s.id, s.team, s.name, s.created_at, count(t.id) AS folds, "
            "sum(t.state = 'done') AS done, sum(t.train_time) AS train_time, "
            "sum(t.valid_time) AS valid_time, sum(t.test_time) AS test_time, "
            "sum(t.cpu_time) AS cpu_time, max(t.peak_memory) AS peak_memory "
            "FROM submissions s JOIN tasks t ON t.submission = s.id WHERE s.problem = ? "
            "GROUP BY s.id HAVING done = folds",
            [problem_name],
        )
    }
    bagged: dict[int, dict] = {}
    for sid, split, score, value in db.execute(
        "SELECT b.submission, b.split, b.score, b.value FROM bagged_scores b "
        "JOIN submissions s ON s.id = b.submission WHERE s.problem = ?", [problem_name]):
        bagged.setdefault(sid, {}).setdefault(split, {})[score] = value
    fold_scores: dict[int, dict[str, list]] = {}
    for sid, score, value in db.execute(
        "SELECT t.submission, sc.score, sc.value FROM scores sc JOIN tasks t ON t.id = sc.task "
        "JOIN submissions s ON s.id = t.submission WHERE s.problem = ? AND sc.split = 'valid'",
        [problem_name]):
        fold_scores.setdefault(sid, {}).setdefault(score, []).append(value)
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
        if private:
            test = bagged.get(sid, {}).get("test", {})
            row["test"] = {name: test.get(name) for name in names}
        rows.append(row)

    def sort_key(row):
        value = row["score"]
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return (1, 0.0, row["id"])
        return (0, value if lower[official] else -value, row["id"])

    rows.sort(key=sort_key)
    for rank, row in enumerate(rows, 1):
        row["rank"] = rank
    return {
        "problem": problem_name,
        "official_score": official,
        "scores": names,
        "lower_is_better": lower,
        "private": private,
        "rows": rows,
        "limits": problem["limits"],
        "spec": json.loads(problem["spec"]) if isinstance(problem.get("spec"), str) else problem.get("spec"),
    }
