"""The database's schema, as the numbered migrations that built it.

Migrations are append-only: a migration that has shipped is never edited, a new one is
added after it, and `datarun.store.db.migrate` applies those a database has not had yet,
each in one transaction with its record in `_migrations`. A migration is history, so it
writes what the schema needed at its time (m007 queues the tasks of an older version);
a task's state is changed by `datarun.store.tasks` alone, migrations included.
"""

from __future__ import annotations

import secrets
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sqlite_utils import Database


def m001_initial(db: Database) -> None:
    db.execute(
        """
        CREATE TABLE problems (
            name TEXT PRIMARY KEY,
            title TEXT NOT NULL,
            kind TEXT NOT NULL,
            workflow TEXT NOT NULL,
            spec TEXT NOT NULL,          -- the kit's settings, as JSON
            data_hash TEXT NOT NULL,     -- the prepared data folder in the blob store
            labels_hash TEXT NOT NULL,   -- y_train / y_test, never shipped to hosts
            n_train INTEGER NOT NULL,
            n_test INTEGER NOT NULL,
            n_features INTEGER NOT NULL,
            classes TEXT,                -- JSON list, classification only
            score_names TEXT NOT NULL,   -- JSON list, the first is official
            limits TEXT NOT NULL,        -- JSON {wall_time, cpu_time, memory}
            kit_path TEXT NOT NULL,
            created_at REAL NOT NULL
        )"""
    )
    db.execute(
        """
        CREATE TABLE folds (
            problem TEXT NOT NULL REFERENCES problems(name),
            fold INTEGER NOT NULL,
            train_hash TEXT NOT NULL,
            valid_hash TEXT NOT NULL,
            n_train INTEGER NOT NULL,
            n_valid INTEGER NOT NULL,
            PRIMARY KEY (problem, fold)
        )"""
    )
    db.execute(
        """
        CREATE TABLE submissions (
            id INTEGER PRIMARY KEY,
            problem TEXT NOT NULL REFERENCES problems(name),
            event TEXT,
            team TEXT NOT NULL,
            name TEXT NOT NULL,
            files_hash TEXT NOT NULL,
            files TEXT NOT NULL,         -- JSON {filename: blob hash}
            created_at REAL NOT NULL
        )"""
    )
    db.execute("CREATE INDEX submissions_problem ON submissions(problem)")
    db.execute(
        "CREATE UNIQUE INDEX submissions_same_code ON submissions(problem, team, files_hash)"
    )
    db.execute(
        """
        CREATE TABLE tasks (
            id INTEGER PRIMARY KEY,
            submission INTEGER NOT NULL REFERENCES submissions(id),
            fold INTEGER NOT NULL,
            state TEXT NOT NULL DEFAULT 'queued',  -- queued | running | done | failed
            attempt INTEGER NOT NULL DEFAULT 0,
            host TEXT,
            slot INTEGER,
            limits TEXT,
            lease_expires REAL,
            queued_at REAL NOT NULL,
            started_at REAL,
            finished_at REAL,
            train_time REAL,
            valid_time REAL,
            test_time REAL,
            wall_time REAL,
            cpu_time REAL,
            peak_memory INTEGER,
            error_kind TEXT,
            error TEXT,
            pred_train TEXT,             -- blob hash of y_pred_train.npy
            pred_test TEXT,              -- blob hash of y_pred_test.npy
            log TEXT,                    -- blob hash of the captured output
            environment TEXT,            -- JSON: host name, python and library versions
            UNIQUE (submission, fold)
        )"""
    )
    db.execute("CREATE INDEX tasks_state ON tasks(state)")
    db.execute(
        """
        CREATE TABLE scores (
            task INTEGER NOT NULL REFERENCES tasks(id),
            split TEXT NOT NULL,         -- train | valid | test
            score TEXT NOT NULL,
            value REAL,
            PRIMARY KEY (task, split, score)
        )"""
    )
    db.execute(
        """
        CREATE TABLE bagged_scores (
            submission INTEGER NOT NULL REFERENCES submissions(id),
            split TEXT NOT NULL,         -- valid | test
            score TEXT NOT NULL,
            value REAL,
            PRIMARY KEY (submission, split, score)
        )"""
    )
    db.execute(
        """
        CREATE TABLE hosts (
            name TEXT PRIMARY KEY,
            checked_at REAL,
            ok INTEGER,
            report TEXT                  -- JSON from `host check`
        )"""
    )


def m002_events(db: Database) -> None:
    db.execute(
        """
        CREATE TABLE events (
            name TEXT PRIMARY KEY,
            problem TEXT NOT NULL REFERENCES problems(name),
            is_default INTEGER NOT NULL DEFAULT 0,  -- the problem's open-to-all event
            opens REAL,                  -- UTC epoch seconds; NULL: no bound
            closes REAL,
            public_opens REAL,           -- scores public from then; NULL: always public
            participants TEXT,           -- JSON list of teams; NULL: every team may submit
            min_interval REAL,           -- seconds between one team's submissions
            max_submissions INTEGER,     -- per team
            created_at REAL NOT NULL
        )"""
    )
    db.execute("CREATE INDEX events_problem ON events(problem)")
    db.execute("CREATE UNIQUE INDEX events_one_default ON events(problem) WHERE is_default = 1")
    # Why a submission broke an event's rules and was stored anyway (`submit --force`).
    db.execute("ALTER TABLE submissions ADD COLUMN forced TEXT")
    db.execute("CREATE INDEX submissions_event_team ON submissions(event, team)")
    # Problems registered before events existed get their default event now, and their
    # submissions join it, so every submission belongs to an event from here on.
    db.execute(
        "INSERT INTO events (name, problem, is_default, created_at) "
        "SELECT name, name, 1, ? FROM problems",
        [time.time()],
    )
    db.execute("UPDATE submissions SET event = problem WHERE event IS NULL")


def m003_task_losses(db: Database) -> None:
    # How many times a task's host was lost under it: what max_attempts counts. The attempt
    # number itself grows with every launch, so each launch has its own key on the host.
    db.execute("ALTER TABLE tasks ADD COLUMN lost INTEGER NOT NULL DEFAULT 0")


def m004_contributivity(db: Database) -> None:
    db.execute(
        """
        CREATE TABLE contributivity (
            problem TEXT NOT NULL REFERENCES problems(name),
            submission INTEGER NOT NULL REFERENCES submissions(id),
            value REAL NOT NULL,
            PRIMARY KEY (problem, submission)
        )"""
    )
    db.execute(
        """
        CREATE TABLE blends (
            problem TEXT PRIMARY KEY REFERENCES problems(name),
            submissions TEXT NOT NULL,   -- JSON list of the blended submission ids, in order
            state TEXT NOT NULL,         -- JSON Blend.state(), to add the next one incrementally
            score TEXT NOT NULL,
            combined_valid REAL,         -- mean over folds of the ensemble's valid score
            best_single_valid REAL,
            combined_test REAL,          -- the fold ensembles' test predictions, bagged
            updated_at REAL NOT NULL
        )"""
    )


def m005_host_run_times(db: Database) -> None:
    # When the task's process ran, by its host's clock (started_at and finished_at are the
    # dispatcher's: when it claimed the task and when it collected the result).
    db.execute("ALTER TABLE tasks ADD COLUMN ran_from REAL")
    db.execute("ALTER TABLE tasks ADD COLUMN ran_to REAL")


def new_workspace_id() -> str:
    return secrets.token_hex(8)


def m006_workspace_id(db: Database) -> None:
    # The workspace's own random id, made once: its folder on every host it uses
    # (WORKDIR/workspaces/<id>/), so two workspaces sharing a host account, or one made
    # again with `init` where another was, never meet there. A workspace made before ids
    # existed gets one now, on its first open.
    db.execute(
        """
        CREATE TABLE workspace (
            one INTEGER PRIMARY KEY CHECK (one = 1),  -- a single row
            id TEXT NOT NULL,
            created_at REAL NOT NULL
        )"""
    )
    db.execute("INSERT INTO workspace (one, id, created_at) VALUES (1, ?, ?)",
               [new_workspace_id(), time.time()])


def m007_attempt_nonces(db: Database) -> None:
    # Each attempt's random nonce, sent in task.json and expected back in result.json: a
    # result is taken only from the attempt it was asked of.
    db.execute("ALTER TABLE tasks ADD COLUMN nonce TEXT")
    # What happened to a task that its row alone does not keep: a result refused, a bundle
    # a host would not take.
    db.execute(
        """
        CREATE TABLE task_events (
            id INTEGER PRIMARY KEY,
            task INTEGER NOT NULL REFERENCES tasks(id),
            attempt INTEGER NOT NULL,
            host TEXT,
            at REAL NOT NULL,
            kind TEXT NOT NULL,          -- result_refused | bundle_refused
            text TEXT NOT NULL
        )"""
    )
    db.execute("CREATE INDEX task_events_task ON task_events(task)")
    # Attempts launched before nonces ran in the host's shared folder, which this version
    # no longer reads, and could not be accepted without a nonce: they go back to the
    # queue (no host loss counted) and run again in the workspace's own folder.
    from datarun.store.tasks import requeue_running_without_nonce

    requeue_running_without_nonce(db)


def m008_cancelled_state(db: Database) -> None:
    # A task the organiser cancelled was `failed` with the error kind `cancelled`; it is now
    # a state of its own (datarun.store.tasks), so `failed` means the submission or its host
    # failed. The error kind stays, for those who read it.
    from datarun.store.tasks import cancelled_failures_become_cancelled

    cancelled_failures_become_cancelled(db)


def m009_blend_scopes(db: Database) -> None:
    # A board shows figures computed from what it shows: the whole problem ('*'), one event
    # (its name), or the problem's public view while some event's scores are withheld
    # ('*public'). The stored blends were of the whole problem only, and averaged the raw
    # probabilities rather than combining them as ramp-blend does: they are dropped, and the
    # next dispatcher pass computes every scope anew.
    db.execute("DROP TABLE contributivity")
    db.execute("DROP TABLE blends")
    db.execute(
        """
        CREATE TABLE contributivity (
            problem TEXT NOT NULL REFERENCES problems(name),
            scope TEXT NOT NULL,         -- '*', '*public' or an event's name
            submission INTEGER NOT NULL REFERENCES submissions(id),
            value REAL NOT NULL,
            PRIMARY KEY (problem, scope, submission)
        )"""
    )
    db.execute(
        """
        CREATE TABLE blends (
            problem TEXT NOT NULL REFERENCES problems(name),
            scope TEXT NOT NULL,
            considered TEXT NOT NULL,    -- JSON list: the scope's fully trained submissions
            submissions TEXT NOT NULL,   -- JSON list of those blended (valid predictions), in order
            state TEXT,                  -- JSON Blend.state(), to add the next one incrementally
            score TEXT NOT NULL,
            combined_valid REAL,         -- mean over folds of the ensemble's valid score
            best_single_valid REAL,
            combined_test REAL,          -- the fold ensembles' test predictions, bagged
            updated_at REAL NOT NULL,
            PRIMARY KEY (problem, scope)
        )"""
    )


def m010_bagging_curves_and_notes(db: Database) -> None:
    # The bagged score of the first 1, 2, ... folds (JSON list), which ramp-test's
    # bagged_scores.csv holds: kept when computed, so `export --ramp` need not recompute it.
    db.execute("ALTER TABLE bagged_scores ADD COLUMN curve TEXT")
    # Why a value is missing: a RAMP kit whose Predictions cannot be combined has no
    # bagged scores and no contributivity, and the leaderboard says so in one line.
    db.execute("ALTER TABLE bagged_scores ADD COLUMN note TEXT")
    db.execute("ALTER TABLE blends ADD COLUMN note TEXT")


def m011_organiser_changes(db: Database) -> None:
    # What an organiser changes after the fact. A hidden submission is kept (its rows, its
    # code, its place in its team's rule counts) but is out of every board, blend and page.
    db.execute("ALTER TABLE submissions ADD COLUMN hidden_at REAL")
    db.execute("ALTER TABLE submissions ADD COLUMN hidden_reason TEXT")
    # A team's chosen final submissions for the private leaderboard (`submission select`).
    db.execute("ALTER TABLE submissions ADD COLUMN final_at REAL")
    # How many final submissions a team of the event may choose; NULL: no choice, every
    # submission is on the private leaderboard.
    db.execute("ALTER TABLE events ADD COLUMN max_final INTEGER")
    # Every such change, when, and what it was: the record `datarun history` reads.
    db.execute(
        """
        CREATE TABLE actions (
            id INTEGER PRIMARY KEY,
            at REAL NOT NULL,
            action TEXT NOT NULL,        -- e.g. submission_hidden, event_edited, problem_removed
            subject TEXT NOT NULL,       -- what it was done to: a submission id, an event's name
            detail TEXT                  -- JSON: the reason, the values before and after
        )"""
    )


def m012_sensitive_problems(db: Database) -> None:
    # A sensitive problem's data, labels and predictions stay on its owner's hosts: its row
    # keeps the owner's manifest and the hosts bound to it (JSON {"hosts", "manifest"}),
    # NULL for an open problem. Its labels_hash and its folds' hashes are empty: the
    # organiser never has them.
    db.execute("ALTER TABLE problems ADD COLUMN sensitive TEXT")


def m013_host_memory_floors(db: Database) -> None:
    # What an empty task measured on each host (`host check` runs one): a task's memory
    # limit below it would kill every task there, so `problem add` and `train` refuse it.
    # NULL: never measured (the default floor, datarun.sizes.MIN_TASK_MEMORY, applies).
    db.execute("ALTER TABLE hosts ADD COLUMN memory_floor INTEGER")
    db.execute("ALTER TABLE hosts ADD COLUMN memory_floor_at REAL")
    db.execute("ALTER TABLE hosts ADD COLUMN memory_floor_by TEXT")  # e.g. "cgroup-v1, sandbox"


MIGRATIONS = [m001_initial, m002_events, m003_task_losses, m004_contributivity, m005_host_run_times,
              m006_workspace_id, m007_attempt_nonces, m008_cancelled_state,
              m009_blend_scopes, m010_bagging_curves_and_notes, m011_organiser_changes,
              m012_sensitive_problems, m013_host_memory_floors]
