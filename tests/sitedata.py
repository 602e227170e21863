"""A workspace for the site's tests: real submissions through the CLI, scores written into
its real SQLite file, with numbers chosen so that private ones can be searched for.

Every public score (train and validation, of events whose scores are public) lies in
[0.80, 0.99]; every test score in [0.30, 0.39]; every score of the event `secret` (whose
scores are not public until 2999) in [0.50, 0.59]; the blend's figures and the secret
submission's contributivity are private too. So a private number, written with 4
decimals or in full, cannot be mistaken for a public one on a page.

Events: `iris` (the default: open, no closing date, so no code shown publicly), `spring`
(closed in 2020: its code is public) and `secret`.
"""

import random

from conftest import EXAMPLES

from datarun.store.db import open_db

SUBMISSIONS = EXAMPLES / "iris" / "submissions"
SCORES = ("accuracy", "log_loss", "roc_auc")
FOLDS = 5
ERROR = ("Traceback (most recent call last):\n  File \"estimator.py\", line 9, in fit\n"
         "ValueError: the forest refused fold two")
XSS_TEAM = "o'hara <script>alert(1)</script>"


def _value(rng: random.Random, low: float) -> float:
    return low + rng.random() * 0.09


def write_scores(workspace, sid: int, public_low: float, failed_fold: int | None = None,
                 seed: int = 0) -> None:
    """Mark a submission's tasks done (one failed, if asked) and write its scores."""
    rng = random.Random(seed or sid)
    db = open_db(workspace)
    with db.conn:
        db.execute("BEGIN IMMEDIATE")
        for task, fold in db.execute("SELECT id, fold FROM tasks WHERE submission = ?", [sid]).fetchall():
            if fold == failed_fold:
                db.execute("UPDATE tasks SET state = 'failed', error_kind = 'fit_error', error = ?, "
                           "train_time = 0.25, cpu_time = 0.5, peak_memory = 150000000 WHERE id = ?",
                           [ERROR, task])
                continue
            db.execute("UPDATE tasks SET state = 'done', host = 'node-secret-host', train_time = ?, "
                       "valid_time = 0.0625, test_time = 0.03125, cpu_time = ?, peak_memory = ? "
                       "WHERE id = ?", [0.5 + fold / 8, 0.75 + sid / 4, 150_000_000 + sid * 10**6, task])
            for split in ("train", "valid", "test"):
                low = 0.30 if split == "test" else public_low
                for score in SCORES:
                    db.execute("INSERT INTO scores VALUES (?, ?, ?, ?)", [task, split, score, _value(rng, low)])
        if failed_fold is None:
            for split in ("valid", "test"):
                low = 0.30 if split == "test" else public_low
                for score in SCORES:
                    db.execute("INSERT INTO bagged_scores (submission, split, score, value) "
                               "VALUES (?, ?, ?, ?)",
                               [sid, split, score, _value(rng, low)])


def submit(cli, folder: str, team: str, event: str | None = None) -> int:
    args = ["submit", "iris", SUBMISSIONS / folder, "--team", team, "--json", "--force"]
    result = cli(*args, *(["--event", event] if event else []))
    assert result.exit_code == 0, result.stderr
    return result.json()["id"]


def make_workspace(workspace, cli) -> dict:
    """The workspace described above; returns the submission ids by team."""
    assert cli("problem", "add", EXAMPLES / "iris").exit_code == 0
    assert cli("event", "add", "spring", "--problem", "iris", "--closes", "2020-01-01").exit_code == 0
    assert cli("event", "add", "secret", "--problem", "iris", "--public-opens", "2999-01-01").exit_code == 0
    ids = {
        "ada": submit(cli, "logreg", "ada", "spring"),
        "grace": submit(cli, "knn", "grace", "spring"),
        "edsger": submit(cli, "random_forest", "edsger", "spring"),
        "eve": submit(cli, "random_forest", "eve", "secret"),
        "bob": submit(cli, "logreg", XSS_TEAM),
    }
    write_scores(workspace, ids["ada"], 0.80)
    write_scores(workspace, ids["grace"], 0.90)
    write_scores(workspace, ids["edsger"], 0.85, failed_fold=2)
    write_scores(workspace, ids["eve"], 0.50)
    write_scores(workspace, ids["bob"], 0.82)
    db = open_db(workspace)
    grace, ada = 0.3308652091, 0.2123456789
    with db.conn:
        db.execute("BEGIN IMMEDIATE")
        for team, share in (("ada", ada), ("grace", grace), ("eve", 1 - ada - grace), ("bob", 0.0)):
            db.execute("INSERT INTO contributivity VALUES ('iris', ?, ?)", [ids[team], share])
        db.execute("INSERT INTO blends (problem, submissions, state, score, combined_valid, "
                   "best_single_valid, combined_test, updated_at) VALUES ('iris', '[]', '{}', "
                   "'accuracy', 0.5523456789, 0.5611234567, 0.3377123456, 0)")
    return ids


def private_numbers(cli, ids: dict) -> set[float]:
    """Every number the public site must not show: test scores, the secret event's scores,
    the secret submission's contributivity, the blend's figures (it includes that one)."""
    numbers: set[float] = set()
    for team, sid in ids.items():
        shown = cli("submission", "show", sid, "--json").json()
        for task in shown["tasks"]:
            for split, values in task["scores"].items():
                if split == "test" or team == "eve":
                    numbers.update(values.values())
        for split, values in shown["bagged"].items():
            if split == "test" or team == "eve":
                numbers.update(values.values())
    secret = cli("leaderboard", "iris", "--event", "secret", "--private", "--json").json()
    for row in secret["rows"]:
        for key in ("valid", "valid_mean", "valid_std", "test"):
            numbers.update(row[key].values())
        numbers.add(row["contributivity"])
    blend = secret["blend"]
    numbers.update((blend["combined_valid"], blend["best_single_valid"], blend["combined_test"]))
    return {n for n in numbers if n is not None}


def formats(number: float) -> list[str]:
    """How a page may write a number: the 4 decimals of scores, and in full (repr)."""
    return [f"{number:.4f}", repr(number)]
