"""The workspace's SQLite database: opening it and applying migrations.

WAL mode lets `status` and `submit` read and write while a dispatcher works; the busy
timeout turns brief lock contention into a wait instead of an error. Migrations are
numbered and append-only: a migration that has shipped is never edited, a new one is
added after it. Each runs in one transaction with its record in `_migrations`.
"""

import sqlite3
import sys
import time

from datarun.store.workspace import Workspace


def _import_sqlite_utils():
    # sqlite-utils imports pandas and numpy when it can, only to recognise their values on
    # insert, which datarun never passes it (arrays go to the blob store, rows through SQL).
    # Those imports cost ~0.4 s on every command, so hide them while sqlite-utils loads
    # (unless something already imported them).
    hidden = [name for name in ("pandas", "numpy") if name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None  # type: ignore[assignment]
    try:
        import sqlite_utils
    finally:
        for name in hidden:
            del sys.modules[name]
    return sqlite_utils


sqlite_utils = _import_sqlite_utils()

BUSY_TIMEOUT_MS = 60_000


def m001_initial(db: sqlite_utils.Database) -> None:
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


def m002_events(db: sqlite_utils.Database) -> None:
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


def m003_task_losses(db: sqlite_utils.Database) -> None:
    # How many times a task's host was lost under it: what max_attempts counts. The attempt
    # number itself grows with every launch, so each launch has its own key on the host.
    db.execute("ALTER TABLE tasks ADD COLUMN lost INTEGER NOT NULL DEFAULT 0")


def m004_contributivity(db: sqlite_utils.Database) -> None:
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


def m005_host_run_times(db: sqlite_utils.Database) -> None:
    # When the task's process ran, by its host's clock (started_at and finished_at are the
    # dispatcher's: when it claimed the task and when it collected the result).
    db.execute("ALTER TABLE tasks ADD COLUMN ran_from REAL")
    db.execute("ALTER TABLE tasks ADD COLUMN ran_to REAL")


def new_workspace_id() -> str:
    import secrets

    return secrets.token_hex(8)


def m006_workspace_id(db: sqlite_utils.Database) -> None:
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


def m007_attempt_nonces(db: sqlite_utils.Database) -> None:
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
    db.execute("UPDATE tasks SET state = 'queued', host = NULL, slot = NULL, lease_expires = NULL "
               "WHERE state = 'running'")


def m008_bagging_curves_and_notes(db: sqlite_utils.Database) -> None:
    # The bagged score of the first 1, 2, ... folds (JSON list), which ramp-test's
    # bagged_scores.csv holds: kept when computed, so `export --ramp` need not recompute it.
    db.execute("ALTER TABLE bagged_scores ADD COLUMN curve TEXT")
    # Why a value is missing: a RAMP kit whose Predictions cannot be combined has no
    # bagged scores and no contributivity, and the leaderboard says so in one line.
    db.execute("ALTER TABLE bagged_scores ADD COLUMN note TEXT")
    db.execute("ALTER TABLE blends ADD COLUMN note TEXT")


MIGRATIONS = [m001_initial, m002_events, m003_task_losses, m004_contributivity, m005_host_run_times,
              m006_workspace_id, m007_attempt_nonces, m008_bagging_curves_and_notes]


def workspace_id(db: sqlite_utils.Database) -> str:
    """The workspace's id (see m006_workspace_id)."""
    return db.execute("SELECT id FROM workspace").fetchone()[0]


def applied_migrations(db: sqlite_utils.Database) -> list[str]:
    if "_migrations" not in db.table_names():
        return []
    return [row["name"] for row in db.query("SELECT name FROM _migrations ORDER BY rowid")]


def migrate(db: sqlite_utils.Database) -> list[str]:
    """Apply the migrations not yet applied, each in its own transaction; return their names."""
    db.execute("CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at REAL)")
    done = set(applied_migrations(db))
    applied = []
    for migration in MIGRATIONS:
        if migration.__name__ in done:
            continue
        with db.conn:
            db.conn.execute("BEGIN IMMEDIATE")
            # A concurrent opener may have applied it while we waited for the lock.
            if db.execute(
                "SELECT 1 FROM _migrations WHERE name = ?", [migration.__name__]
            ).fetchone():
                continue
            migration(db)
            db.execute(
                "INSERT INTO _migrations (name, applied_at) VALUES (?, ?)",
                [migration.__name__, time.time()],
            )
        applied.append(migration.__name__)
    return applied


def connect(path) -> sqlite_utils.Database:
    # isolation_level=None: we issue BEGIN ourselves, so a write transaction is explicit.
    conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA foreign_keys = ON")
    return sqlite_utils.Database(conn)


def open_db(workspace: Workspace) -> sqlite_utils.Database:
    db = connect(workspace.db_path)
    migrate(db)
    return db
