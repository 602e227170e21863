import pytest

from datarun.errors import NotFound, UsageError
from datarun.store.db import MIGRATIONS, applied_migrations, connect, migrate
from datarun.store.workspace import find_workspace, init_workspace


def test_init_creates_hosts_toml_and_state(tmp_path, cli):
    result = cli("init", tmp_path / "ws", "--json")
    assert result.exit_code == 0
    assert result.json()["root"] == str(tmp_path / "ws")
    assert (tmp_path / "ws" / "hosts.toml").read_text().startswith("# Hosts")
    assert (tmp_path / "ws" / ".datarun" / "datarun.db").exists()


def test_second_init_is_refused_and_keeps_state(tmp_path, cli):
    cli("init", tmp_path / "ws")
    (tmp_path / "ws" / "hosts.toml").write_text("# mine\n")
    result = cli("init", tmp_path / "ws")
    assert result.exit_code == 2
    assert "already a datarun workspace" in result.stderr
    assert (tmp_path / "ws" / "hosts.toml").read_text() == "# mine\n"


def test_workspace_found_from_explicit_env_and_parent(tmp_path, monkeypatch):
    ws = init_workspace(tmp_path / "a")
    (tmp_path / "a" / "deep" / "er").mkdir(parents=True)
    monkeypatch.delenv("DATARUN_HOME")
    assert find_workspace(cwd=tmp_path / "a" / "deep" / "er").root == ws.root
    monkeypatch.setenv("DATARUN_HOME", str(ws.root))
    assert find_workspace(cwd=tmp_path).root == ws.root
    other = init_workspace(tmp_path / "b")
    assert find_workspace(other.root).root == other.root


def test_missing_workspace_says_how_to_make_one(tmp_path, monkeypatch, cli):
    monkeypatch.delenv("DATARUN_HOME")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(NotFound, match="run `datarun init`"):
        find_workspace(cwd=tmp_path)
    monkeypatch.setenv("DATARUN_HOME", str(tmp_path / "nope"))
    with pytest.raises(NotFound, match="DATARUN_HOME=.* is not a datarun workspace"):
        find_workspace()
    with pytest.raises(NotFound, match="is not a datarun workspace"):
        find_workspace(tmp_path / "nope")


def test_init_over_a_file_is_refused(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(UsageError, match="exists and is not a folder"):
        init_workspace(tmp_path / "f")


def test_migrations_apply_once_from_a_blank_file(tmp_path):
    db = connect(tmp_path / "x.db")
    assert migrate(db) == [m.__name__ for m in MIGRATIONS]
    assert migrate(db) == []
    assert applied_migrations(db) == [m.__name__ for m in MIGRATIONS]
    assert {"problems", "folds", "submissions", "tasks", "scores"} <= set(db.table_names())
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_each_workspace_has_a_random_id_shown_by_init_and_status(tmp_path, cli, monkeypatch):
    import shutil

    made = cli("init", tmp_path / "ws", "--json").json()
    assert len(made["id"]) == 16
    monkeypatch.setenv("DATARUN_HOME", str(tmp_path / "ws"))
    status = cli("status", "--json").json()
    assert status["workspace"]["root"] == str(tmp_path / "ws") and status["workspace"]["id"] == made["id"]
    assert f"workspace {tmp_path / 'ws'} (id {made['id']})" in cli("status").stdout
    assert find_workspace().id == made["id"]
    # Deleted and made again in the same place: a new workspace, a new id.
    shutil.rmtree(tmp_path / "ws")
    again = cli("init", tmp_path / "ws")
    assert again.exit_code == 0 and "(id " in again.stderr
    assert cli("status", "--json").json()["workspace"]["id"] not in (made["id"], None)
