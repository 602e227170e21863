"""m002_events from a blank database and from a database that has only m001, with data."""

import time

from datarun.challenge.events import list_events
from datarun.store.db import connect, migrate
from datarun.store.migrations import m001_initial


def m001_database(path):
    db = connect(path)
    db.execute("CREATE TABLE _migrations (name TEXT PRIMARY KEY, applied_at REAL)")
    with db.conn:
        db.conn.execute("BEGIN")
        m001_initial(db)
        db.execute("INSERT INTO _migrations VALUES ('m001_initial', ?)", [time.time()])
    for name in ("iris", "wine"):
        db.execute(
            "INSERT INTO problems (name, title, kind, workflow, spec, data_hash, labels_hash, "
            "n_train, n_test, n_features, score_names, limits, kit_path, created_at) "
            "VALUES (?, ?, 'classification', 'estimator', '{}', 'd', 'l', 10, 5, 4, '[\"accuracy\"]', "
            "'{}', '/kit', 0)", [name, name])
    db.execute("INSERT INTO submissions (problem, event, team, name, files_hash, files, created_at) "
               "VALUES ('iris', NULL, 'ada', 'a', 'h1', '{}', 1.0)")
    db.execute("INSERT INTO submissions (problem, event, team, name, files_hash, files, created_at) "
               "VALUES ('wine', NULL, 'ada', 'b', 'h2', '{}', 2.0)")
    return db


def test_migrating_from_m001_gives_each_problem_its_default_event_and_each_submission_one(tmp_path):
    db = m001_database(tmp_path / "old.db")
    assert migrate(db)[0] == "m002_events"
    assert [(e["name"], e["problem"], e["default"], e["submissions"]) for e in list_events(db)] == [
        ("iris", "iris", True, 1), ("wine", "wine", True, 1)]
    assert db.execute("SELECT problem, event, forced FROM submissions ORDER BY id").fetchall() == [
        ("iris", "iris", None), ("wine", "wine", None)]
    assert migrate(db) == []


def test_m002_on_a_blank_database_creates_the_events_table_and_forced_column(tmp_path):
    db = connect(tmp_path / "new.db")
    assert "m002_events" in migrate(db)
    assert "events" in db.table_names()
    assert "forced" in db["submissions"].columns_dict
    assert list_events(db) == []
