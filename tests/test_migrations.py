"""Every migration applies from a blank file and from each older schema."""

import re

import pytest

from datarun.store.db import MIGRATIONS, applied_migrations, connect, migrate, workspace_id
from datarun.store.migrations import m006_workspace_id


def schema_at(path, applied_before: int):
    """A database as a datarun that knew only the first `applied_before` migrations left it."""
    db = connect(path)
    db.execute("CREATE TABLE _migrations (name TEXT PRIMARY KEY, applied_at REAL)")
    for migration in MIGRATIONS[:applied_before]:
        migration(db)
        db.execute("INSERT INTO _migrations VALUES (?, 0)", [migration.__name__])
    return db


@pytest.mark.parametrize("applied_before", range(len(MIGRATIONS)))
def test_migrate_from_each_older_schema(tmp_path, applied_before):
    db = schema_at(tmp_path / "x.db", applied_before)
    assert migrate(db) == [m.__name__ for m in MIGRATIONS[applied_before:]]
    assert applied_migrations(db) == [m.__name__ for m in MIGRATIONS]
    columns = {c.name for c in db["tasks"].columns}
    assert {"lost", "attempt", "state", "ran_from", "ran_to", "nonce"} <= columns
    assert {"contributivity", "blends", "events", "workspace", "task_events"} <= set(db.table_names())
    # Exactly one workspace id, made once, kept on every later open.
    assert db.execute("SELECT count(*) FROM workspace").fetchone()[0] == 1
    first = workspace_id(db)
    assert re.fullmatch(r"[0-9a-f]{16}", first)
    assert migrate(db) == [] and workspace_id(db) == first


def test_an_older_workspace_gets_an_id_and_its_running_tasks_run_again(tmp_path):
    """A workspace from before ids and nonces: its running attempts ran in the host's shared
    folder and carry no nonce, so no result of theirs could be taken: they are queued again,
    with no host loss counted, and the rest is untouched."""
    db = schema_at(tmp_path / "old.db", MIGRATIONS.index(m006_workspace_id))
    db.execute("INSERT INTO problems VALUES ('p', 't', 'classification', 'estimator', '{}', 'd', 'l', "
               "10, 5, 4, NULL, '[]', '{}', '/kit', 0)")
    db.execute("INSERT INTO submissions (id, problem, event, team, name, files_hash, files, created_at) "
               "VALUES (1, 'p', 'p', 'team', 'sub', 'h', '{}', 0)")
    for task_id, state in ((1, "running"), (2, "done"), (3, "queued")):
        db.execute("INSERT INTO tasks (id, submission, fold, state, attempt, host, slot, lost, queued_at) "
                   "VALUES (?, 1, ?, ?, 2, 'node', 0, 1, 0)", [task_id, task_id, state])
    assert "workspace" not in db.table_names()
    migrate(db)
    rows = {row[0]: row[1:] for row in db.execute("SELECT id, state, attempt, host, lost, nonce FROM tasks")}
    assert rows == {1: ("queued", 2, None, 1, None), 2: ("done", 2, "node", 1, None),
                    3: ("queued", 2, "node", 1, None)}
    assert re.fullmatch(r"[0-9a-f]{16}", workspace_id(db))


def test_two_databases_get_different_ids(tmp_path):
    ids = set()
    for name in ("a.db", "b.db", "c.db"):
        db = connect(tmp_path / name)
        migrate(db)
        ids.add(workspace_id(db))
    assert len(ids) == 3
