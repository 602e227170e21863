"""Contributivity kept by a dispatcher's cache (each newly scored submission added to the
blends in memory) equals contributivity computed from scratch, scope by scope."""

import json
import sys

import pytest
from conftest import EXAMPLES, REPO

from datarun.board.contrib import BlendCache, update_contributivity
from datarun.store.db import open_db

sys.path.insert(0, str(REPO / "bench"))
from synthetic import add_scored  # noqa: E402


def figures(db, problem: str) -> dict:
    blends = {row[0]: row[1:] for row in db.execute(
        "SELECT scope, submissions, combined_valid, best_single_valid, combined_test FROM blends "
        "WHERE problem = ?", [problem])}
    shares = {}
    for scope, sid, value in db.execute(
            "SELECT scope, submission, value FROM contributivity WHERE problem = ?", [problem]):
        shares.setdefault(scope, {})[sid] = value
    return {"blends": blends, "shares": shares}


@pytest.fixture
def iris_events(workspace, cli):
    assert cli("problem", "add", EXAMPLES / "iris").exit_code == 0
    assert cli("event", "add", "spring", "--problem", "iris").exit_code == 0
    return workspace


def test_incremental_contributivity_equals_from_scratch(iris_events):
    workspace = iris_events
    db = open_db(workspace)
    cache = BlendCache()
    # Submissions arrive one or a few at a time, in two events: the problem-wide scope
    # and each event's scope grow apart and together again.
    for step, (count, event) in enumerate([(3, None), (1, None), (2, "spring"), (1, None), (4, "spring"),
                                          (1, "spring"), (5, None), (1, None)]):
        add_scored(workspace, db, "iris", count, seed=step, event=event)
        update_contributivity(workspace, db, "iris", cache=cache)
    incremental = figures(db, "iris")
    assert set(incremental["blends"]) == {"*", "iris", "spring"}
    assert len(json.loads(incremental["blends"]["*"][0])) == 18

    db.execute("DELETE FROM blends")
    db.execute("DELETE FROM contributivity")
    update_contributivity(workspace, db, "iris")  # no cache, no stored state: from scratch
    scratch = figures(db, "iris")
    assert incremental["blends"] == scratch["blends"]
    assert incremental["shares"].keys() == scratch["shares"].keys()
    for scope, shares in scratch["shares"].items():
        assert incremental["shares"][scope] == pytest.approx(shares, abs=1e-12), scope


def test_a_blend_written_by_another_process_is_not_extended_from_the_cache(iris_events):
    workspace = iris_events
    db = open_db(workspace)
    cache = BlendCache()
    add_scored(workspace, db, "iris", 4, seed=1)
    update_contributivity(workspace, db, "iris", cache=cache)
    # Another process blends a newcomer without this cache...
    add_scored(workspace, db, "iris", 2, seed=2)
    update_contributivity(workspace, db, "iris")
    # ...then this cache sees one more: its stored rows say 6 submissions, its blend holds 4.
    add_scored(workspace, db, "iris", 1, seed=3)
    update_contributivity(workspace, db, "iris", cache=cache)
    mine = figures(db, "iris")
    db.execute("DELETE FROM blends")
    db.execute("DELETE FROM contributivity")
    update_contributivity(workspace, db, "iris")
    scratch = figures(db, "iris")
    assert mine["blends"] == scratch["blends"]
    for scope, shares in scratch["shares"].items():
        assert mine["shares"][scope] == pytest.approx(shares, abs=1e-12)


def test_the_cache_extends_blends_instead_of_reading_every_submission(iris_events, monkeypatch):
    import datarun.board.contrib as contrib

    workspace = iris_events
    db = open_db(workspace)
    cache = BlendCache()
    add_scored(workspace, db, "iris", 10, seed=1)
    update_contributivity(workspace, db, "iris", cache=cache)
    loads = []
    original = contrib._Inputs._load
    monkeypatch.setattr(contrib._Inputs, "_load", lambda self, digest, shape: (loads.append(digest),
                                                                               original(self, digest, shape))[1])
    add_scored(workspace, db, "iris", 1, seed=2)
    update_contributivity(workspace, db, "iris", cache=cache)
    train_loads = [d for d in loads if d in {row[0] for row in db.execute("SELECT pred_train FROM tasks")}]
    assert len(train_loads) == 5  # the newcomer's five folds, not the eleven submissions' 55


def test_an_update_writes_only_the_shares_that_changed_and_drops_a_hidden_submissions(iris_events):
    workspace = iris_events
    db = open_db(workspace)
    cache = BlendCache()
    add_scored(workspace, db, "iris", 30, seed=1)
    update_contributivity(workspace, db, "iris", cache=cache)
    before = figures(db, "iris")["shares"]["*"]
    add_scored(workspace, db, "iris", 1, seed=2)
    changes = db.conn.total_changes
    update_contributivity(workspace, db, "iris", cache=cache)
    after = figures(db, "iris")["shares"]["*"]
    changed = sum(1 for sid, value in after.items() if before.get(sid) != value)
    # Two scopes ('*' and the default event 'iris') of the same submissions: each writes
    # its changed rows and its blends row, not 31 rows.
    assert db.conn.total_changes - changes == 2 * (changed + 1) < 31
    hidden = next(sid for sid, value in after.items() if value > 0)
    db.execute("UPDATE submissions SET hidden_at = 1 WHERE id = ?", [hidden])
    db.conn.commit()
    update_contributivity(workspace, db, "iris", cache=cache)
    mine = figures(db, "iris")
    assert hidden not in mine["shares"]["*"]
    db.execute("DELETE FROM blends")
    db.execute("DELETE FROM contributivity")
    db.conn.commit()
    update_contributivity(workspace, db, "iris")
    scratch = figures(db, "iris")
    assert mine["blends"] == scratch["blends"]
    for scope, shares in scratch["shares"].items():
        assert mine["shares"][scope] == pytest.approx(shares, abs=1e-12), scope
