"""A workspace for the site's tests: real submissions through the CLI, scores written into
its real SQLite file, with numbers chosen so that private ones can be searched for.

Every public score (train and validation, of events whose scores are public) lies in
[0.80, 0.99]; every test score in [0.30, 0.39]; every score of the event `secret` (whose
scores are not public until 2999) in [0.50, 0.59]; the blends' figures of the secret event
and of the whole problem (which includes it) and the secret submission's contributivity
are private too. So a private number, written with 4 decimals or in full, cannot be
mistaken for a public one on a page.

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
    write_blends(workspace, ids)
    return ids


# The stored blends, one per scope as the dispatcher keeps them (datarun/board/scopes.py):
# {scope: (its fully trained submissions, {team: share}, (combined valid, best single valid,
# combined test))}. edsger, with a failed fold, is in none. The numbers are chosen to be
# searched for, not computed: every figure of the secret event, and of the organisers'
# whole-problem blend that includes it, lies in [0.40, 0.59] or among the test scores.
BLENDS = {
    "*": (["ada", "grace", "eve", "bob"],
          {"ada": 0.2123456789, "grace": 0.3308652091, "eve": 0.4467891120, "bob": 0.0100000000},
          (0.5523456789, 0.5611234567, 0.3377123456)),
    "secret": (["eve"], {"eve": 0.4512345678}, (0.5423456789, 0.5711234567, 0.3477123456)),
    "*public": (["ada", "grace", "bob"], {"ada": 0.25, "grace": 0.7, "bob": 0.05},
                (0.9223456789, 0.9011234567, 0.3398765432)),
    "spring": (["ada", "grace"], {"ada": 0.375, "grace": 0.625},
               (0.9123456789, 0.9012345678, 0.3312345678)),
    "iris": (["bob"], {"bob": 1.0}, (0.8523456789, 0.8523456789, 0.3387654321)),
}


def write_blends(workspace, ids: dict) -> None:
    import json
    import time

    db = open_db(workspace)
    with db.conn:
        db.execute("BEGIN IMMEDIATE")
        for scope, (teams, shares, (combined, best, test)) in BLENDS.items():
            members = sorted(ids[team] for team in teams)
            for team, share in shares.items():
                db.execute("INSERT INTO contributivity VALUES ('iris', ?, ?, ?)",
                           [scope, ids[team], share])
            db.execute("INSERT INTO blends (problem, scope, considered, submissions, state, score, "
                       "combined_valid, best_single_valid, combined_test, updated_at) "
                       "VALUES ('iris', ?, ?, ?, NULL, 'accuracy', ?, ?, ?, ?)",
                       [scope, json.dumps(members), json.dumps(members), combined, best, test,
                        time.time()])


def join_blends(workspace, sid: int, scopes) -> None:
    """A newly scored submission that changed none of these blends: it joins them, share 0."""
    import json

    db = open_db(workspace)
    with db.conn:
        db.execute("BEGIN IMMEDIATE")
        for scope in scopes:
            considered = json.loads(db.execute(
                "SELECT considered FROM blends WHERE problem = 'iris' AND scope = ?", [scope]).fetchone()[0])
            members = json.dumps(sorted([*considered, sid]))
            db.execute("UPDATE blends SET considered = ?, submissions = ? WHERE problem = 'iris' "
                       "AND scope = ?", [members, members, scope])
            db.execute("INSERT INTO contributivity VALUES ('iris', ?, ?, 0.0)", [scope, sid])


def private_numbers(cli, ids: dict) -> set[float]:
    """Every number the public site must not show and the private one shows: test scores
    (blended ones included), the secret event's scores, the secret submission's
    contributivity and its event's blend."""
    numbers: set[float] = set()
    for team, sid in ids.items():
        shown = cli("submission", "show", sid, "--json", "--private").json()
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
    for event in ("iris", "spring"):
        board = cli("leaderboard", "iris", "--event", event, "--private", "--json").json()
        numbers.add(board["blend"]["combined_test"])
    return {n for n in numbers if n is not None}


def whole_problem_numbers(cli) -> set[float]:
    """The organisers' whole-problem blend (it includes the secret event): private, and on no
    page of the site, which shows events' boards."""
    everyone = cli("leaderboard", "iris", "--private", "--json").json()
    blend = everyone["blend"]
    return {blend["combined_valid"], blend["best_single_valid"], blend["combined_test"],
            *(row["contributivity"] for row in everyone["rows"] if row["team"] == "eve")}


def formats(number: float) -> list[str]:
    """How a page may write a number: the 4 decimals of scores, and in full (repr)."""
    return [f"{number:.4f}", repr(number)]
