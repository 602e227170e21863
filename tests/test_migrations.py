"""Every migration applies from a blank file and from each older schema."""

import pytest

from datarun.store.db import MIGRATIONS, applied_migrations, connect, migrate


@pytest.mark.parametrize("applied_before", range(len(MIGRATIONS)))
def test_migrate_from_each_older_schema(tmp_path, applied_before):
    db = connect(tmp_path / "x.db")
    db.execute("CREATE TABLE _migrations (name TEXT PRIMARY KEY, applied_at REAL)")
    for migration in MIGRATIONS[:applied_before]:
        migration(db)
        db.execute("INSERT INTO _migrations VALUES (?, 0)", [migration.__name__])
    assert migrate(db) == [m.__name__ for m in MIGRATIONS[applied_before:]]
    assert applied_migrations(db) == [m.__name__ for m in MIGRATIONS]
    columns = {c.name for c in db["tasks"].columns}
    assert {"lost", "attempt", "state", "ran_from", "ran_to"} <= columns
    assert {"contributivity", "blends", "events"} <= set(db.table_names())
