"""`db backup` writes its archive, and the database snapshot in it, 0600, created with that
mode: never readable by others.

The backup holds every team's scores, errors and code hashes. The old backup let SQLite
create the file under the umask (0644 with the usual 022), readable by every local user;
the negative control shows that mode again with the private creation switched off.
"""

import os
import sqlite3
import stat
import tarfile

import pytest

import datarun.store.backup as backup


@pytest.fixture
def registered(workspace, cli, tmp_path):
    from test_operator import small_kit

    assert cli("problem", "add", small_kit(tmp_path)).exit_code == 0
    return workspace


@pytest.fixture
def umask():
    """os.umask for the test, the process's own put back afterwards."""
    old = os.umask(0o022)
    os.umask(old)
    yield os.umask
    os.umask(old)


@pytest.mark.parametrize("mask", [0o022, 0o000])
def test_the_backup_is_created_0600_and_stays_so(registered, cli, tmp_path, monkeypatch, umask, mask):
    umask(mask)
    seen = {}
    real_connect = sqlite3.connect

    def watching_connect(path, *args, **kwargs):
        # The copy exists, private, before SQLite opens it: no moment at the umask's mode.
        if str(path) != str(registered.db_path):
            seen[str(path)] = stat.S_IMODE(os.stat(path).st_mode)
        return real_connect(path, *args, **kwargs)

    monkeypatch.setattr(backup.sqlite3, "connect", watching_connect)
    copy = tmp_path / "copy.db"
    assert cli("db", "backup", copy).exit_code == 0
    assert list(seen.values()) == [0o600]
    assert stat.S_IMODE(copy.stat().st_mode) == 0o600
    # Replacing an older, looser copy gives a private one too.
    copy.chmod(0o644)
    assert cli("db", "backup", copy, "--force").exit_code == 0
    assert stat.S_IMODE(copy.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".copy.db")] == []
    with tarfile.open(copy) as tar:
        (tmp_path / "out").mkdir()
        (tmp_path / "out" / "datarun.db").write_bytes(tar.extractfile("datarun.db").read())
    conn = sqlite3.connect(tmp_path / "out" / "datarun.db")
    assert conn.execute("SELECT count(*) FROM problems").fetchone()[0] == 1
    conn.close()


def test_negative_control_sqlite_alone_creates_the_copy_world_readable(registered, cli, tmp_path,
                                                                       monkeypatch, umask):
    umask(0o022)
    # The protection off: a plain temporary name that SQLite creates itself, as before.
    monkeypatch.setattr(backup, "private_tmp", lambda dest, tag="": dest.with_name(f".{dest.name}{tag}.tmp"))
    copy = tmp_path / "copy.db"
    assert cli("db", "backup", copy).exit_code == 0
    assert stat.S_IMODE(copy.stat().st_mode) == 0o644
