"""The database under faults: a writer killed mid-write, and backups taken while a
dispatcher writes.

A submission is its row, its tasks and its blobs, stored in one transaction: killing the
writer at any moment leaves all of them or none. `datarun db backup` copies through
SQLite's backup API, so a copy taken while `train` records results is one consistent
state, in one self-contained file.
"""

import json
import random
import signal
import sqlite3
import subprocess
import sys
import tarfile
import textwrap

import pytest
from conftest import EXAMPLES
from faultcluster import Cluster, datarun_process, make_submission, task_rows, wait_until

from datarun.store.backup import backup_database

WRITER = textwrap.dedent("""
    import sys
    from pathlib import Path

    from datarun.store.db import open_db
    from datarun.challenge.submissions import submit
    from datarun.store.workspace import find_workspace

    workspace = find_workspace(sys.argv[1])
    db = open_db(workspace)
    for folder in sys.argv[2:]:
        submit(workspace, db, "faults", Path(folder), team=Path(folder).name)
        print("stored", folder, flush=True)
""")


@pytest.fixture
def local(tmp_path, monkeypatch):
    cluster = Cluster(tmp_path, EXAMPLES, names=(), local_slots=2)
    monkeypatch.setenv("DATARUN_HOME", str(cluster.workspace.root))
    yield cluster
    cluster.close()


def check_consistent(path) -> dict:
    """Integrity, foreign keys, and datarun's own invariants; returns row counts."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        folds = conn.execute("SELECT count(*) FROM folds WHERE problem = 'faults'").fetchone()[0]
        per_submission = conn.execute(
            "SELECT s.id, count(t.id) FROM submissions s LEFT JOIN tasks t ON t.submission = s.id "
            "GROUP BY s.id").fetchall()
        assert all(count == folds for _, count in per_submission), per_submission
        # A result and its scores are one transaction: a done task has all its scores.
        scored = conn.execute(
            "SELECT t.state, count(sc.task) FROM tasks t LEFT JOIN scores sc ON sc.task = t.id "
            "GROUP BY t.id").fetchall()
        assert all((state == "done") == (count == 3) for state, count in scored), scored
        return {"submissions": len(per_submission),
                "done": sum(state == "done" for state, _ in scored)}
    finally:
        conn.close()


def test_a_writer_killed_mid_write_leaves_all_or_nothing(local):
    from datarun.store.blobs import BlobStore

    folders = [make_submission(local.root, local.trace, f"w{i}", 0.0) for i in range(300)]
    rng = random.Random(4)
    stored = 0
    for round_ in range(3):
        batch = folders[round_ * 100:(round_ + 1) * 100]
        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(local.workspace.root), *map(str, batch)],
                                  stdout=subprocess.PIPE, text=True)
        assert writer.stdout.readline().startswith("stored")
        wait_until(lambda: rng.random() < 0.2, 1, "a random moment", interval=0.003)
        writer.send_signal(signal.SIGKILL)
        writer.wait(10)
        counts = check_consistent(local.workspace.db_path)
        assert 1 <= counts["submissions"] - stored < 100  # killed part-way through its batch
        stored = counts["submissions"]
    store = BlobStore(local.workspace.blobs_dir)
    conn = sqlite3.connect(local.workspace.db_path)
    for (files,) in conn.execute("SELECT files FROM submissions"):
        assert all(store.has(digest) for digest in json.loads(files).values())
    conn.close()
    # And the database takes the next writer as if nothing happened.
    again = datarun_process(local.workspace, "submit", "faults", folders[-1], "--team", "after", "--json")
    out, err = again.communicate(timeout=60)
    assert again.returncode == 0, err
    assert json.loads(out)["created"]


def test_backups_taken_while_train_writes_are_consistent(local, cli, tmp_path):
    local.submit(4, sleep=0.5)
    train = datarun_process(local.workspace, "train", "--json")
    wait_until(lambda: any(r["state"] == "done" for r in task_rows(local.workspace).values()), 60,
               "train to record a first result")
    copies = []
    for i in range(3):
        target = tmp_path / f"copy{i}.db"
        if i == 0:
            archive = tmp_path / "whole.tar.gz"
            result = cli("db", "backup", archive, "--json")
            assert result.exit_code == 0, result.stderr
            assert result.json()["path"] == str(archive) and result.json()["rows"]["submissions"] == 4
            with tarfile.open(archive) as tar:
                target.write_bytes(tar.extractfile("datarun.db").read())
        else:
            backup_database(local.workspace, target)
        assert train.poll() is None, "train ended before the backup"
        assert not target.with_name(f"{target.name}-wal").exists()  # one self-contained file
        copies.append(check_consistent(target))
    out, err = train.communicate(timeout=120)
    assert train.returncode == 0, err
    assert all(copy["submissions"] == 4 for copy in copies)
    assert [copy["done"] for copy in copies] == sorted(copy["done"] for copy in copies)
    assert check_consistent(local.workspace.db_path)["done"] == 8


def test_backup_says_what_it_did(local, cli, tmp_path):
    result = cli("db", "backup", tmp_path / "copy.db")
    assert result.exit_code == 0
    assert result.stderr.startswith(f"backed up to {tmp_path / 'copy.db'} (")
    assert "1 problems, 0 submissions, 0 tasks, 0 scores" in result.stderr
    again = cli("db", "backup", tmp_path / "copy.db", "--force", "--json")
    assert again.exit_code == 0 and again.json()["rows"]["problems"] == 1


@pytest.mark.parametrize("target, message", [
    ("copy.db", "already exists: remove it, or pass --force to replace it"),
    ("folder", "is a folder: give a file name for the backup"),
    ("missing/copy.db", "does not exist: create it first"),
    ("/proc/datarun-copy.db", "cannot write the copy at /proc/datarun-copy.db: No such file or directory"),
    ("OWN", "is inside the workspace's .datarun/: write the backup elsewhere"),
])
def test_backup_refuses_what_it_cannot_do(local, cli, tmp_path, target, message):
    (tmp_path / "copy.db").write_text("an earlier copy")
    (tmp_path / "folder").mkdir()
    path = local.workspace.db_path if target == "OWN" else tmp_path / target
    result = cli("db", "backup", path)
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ") and message in result.stderr
    assert (tmp_path / "copy.db").read_text() == "an earlier copy"


def test_backup_of_a_damaged_database_fails_its_check(local, cli, tmp_path):
    conn = sqlite3.connect(local.workspace.db_path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    with open(local.workspace.db_path, "r+b") as handle:  # clobber the headers of some b-tree pages
        for page in range(10, 20):
            handle.seek(4096 * page)
            handle.write(b"\x0d\x00\x00\x00\x05\xff\xff")
    result = cli("db", "backup", tmp_path / "copy.db")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: the copy failed its integrity check (")
    assert result.stderr.rstrip().endswith("the workspace database is damaged; keep your earlier backups")
    assert not (tmp_path / "copy.db").exists()


def test_backup_of_a_workspace_without_a_database(local, cli, tmp_path):
    for suffix in ("", "-wal", "-shm"):
        local.workspace.db_path.with_name(f"datarun.db{suffix}").unlink(missing_ok=True)
    result = cli("db", "backup", tmp_path / "copy.db")
    assert result.exit_code == 2
    assert "has no database yet: nothing to back up" in result.stderr
