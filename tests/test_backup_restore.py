"""`db backup` saves the whole workspace (database and blob store, consistently while a
dispatcher runs) and `db restore` brings it back into an empty folder, where the work goes
on: a backup taken mid-train is restored and its train finished there."""

import io
import json
import tarfile

import pytest
from conftest import EXAMPLES, stop_runners
from contract import validate
from faultcluster import Cluster, datarun_process, task_rows, wait_until

from datarun.store.workspace import Workspace


@pytest.fixture
def local(tmp_path, monkeypatch):
    cluster = Cluster(tmp_path, EXAMPLES, names=(), local_slots=2)
    monkeypatch.setenv("DATARUN_HOME", str(cluster.workspace.root))
    yield cluster
    stop_runners(cluster.workspace)
    cluster.close()


def test_a_backup_taken_mid_train_restores_and_its_train_finishes_there(local, cli, tmp_path):
    (local.workspace.root / "datarun.toml").write_text('[hooks]\ntimeout = "5s"\n')
    ids = local.submit(4, sleep=0.5)
    train = datarun_process(local.workspace, "train", "--json")
    wait_until(lambda: any(r["state"] == "done" for r in task_rows(local.workspace).values()), 60,
               "train to record a first result")
    archive = tmp_path / "backup.tar.gz"
    taken = cli("db", "backup", archive, "--json")
    assert taken.exit_code == 0, taken.stderr
    assert validate(taken.stdout) == "backup"
    assert train.poll() is None, "train ended before the backup"
    out, err = train.communicate(timeout=120)
    assert train.returncode == 0, err
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    assert {"datarun.db", "hosts.toml", "datarun.toml", "manifest.json"} <= set(names)
    code_blobs = [name for name in names if name.startswith("blobs/")]
    assert len(code_blobs) == taken.json()["blobs"] and code_blobs

    restored_root = tmp_path / "restored"
    result = cli("db", "restore", archive, restored_root, "--json")
    assert result.exit_code == 0, result.stderr
    assert validate(result.stdout) == "restore"
    answer = result.json()
    restored = Workspace(restored_root)
    try:
        assert answer["from_workspace_id"] == local.workspace.id and answer["workspace_id"] != local.workspace.id
        assert (restored_root / "datarun.toml").read_text() == '[hooks]\ntimeout = "5s"\n'
        assert cli("-w", restored_root, "status", "--json").json()["workspace"]["id"] == answer["workspace_id"]
        rows = task_rows(restored).values()
        done_at_backup = {r["id"] for r in rows if r["state"] == "done"}
        assert done_at_backup and all(r["state"] in ("done", "queued") for r in rows)
        assert sum(r["state"] == "queued" for r in rows) == 8 - len(done_at_backup)
        # The train finishes in the restored workspace, reading code and data from its own blobs.
        again = datarun_process(restored, "train", "--json")
        out, err = again.communicate(timeout=180)
        assert again.returncode == 0, err
        assert json.loads(out)["done"] == 8 - len(done_at_backup)
        assert {r["state"] for r in task_rows(restored).values()} == {"done"}
        board = cli("-w", restored_root, "leaderboard", "faults", "--json").json()
        assert sorted(row["id"] for row in board["rows"]) == ids
        original = cli("leaderboard", "faults", "--json").json()
        assert ({row["id"]: row["score"] for row in board["rows"]}
                == {row["id"]: row["score"] for row in original["rows"]})
    finally:
        stop_runners(restored)


def test_restore_refuses_a_folder_in_use_and_what_is_not_a_backup(workspace, cli, tmp_path):
    archive = tmp_path / "b.tar.gz"
    assert cli("db", "backup", archive).exit_code == 0
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    result = cli("db", "restore", archive, busy)
    assert (result.exit_code, result.stderr.strip()) == (
        2, f"error: {busy} is not an empty folder: restore into a new or empty one")
    assert [p.name for p in busy.iterdir()] == ["notes.txt"]

    not_tar = tmp_path / "x.tar.gz"
    not_tar.write_text("hello")
    result = cli("db", "restore", not_tar, tmp_path / "n1")
    assert result.exit_code == 2 and result.stderr.startswith("error: x.tar.gz is not a datarun backup: ")
    assert not (tmp_path / "n1").exists()

    # A member that a backup never holds (a path out of the folder) is refused, nothing written.
    evil = tmp_path / "evil.tar.gz"
    with tarfile.open(archive) as src, tarfile.open(evil, "w:gz") as dst:
        for member in src.getmembers():
            dst.addfile(member, src.extractfile(member))
        info = tarfile.TarInfo("../escape.txt")
        info.size = 2
        dst.addfile(info, io.BytesIO(b"hi"))
    result = cli("db", "restore", evil, tmp_path / "n2")
    assert (result.exit_code, result.stderr.strip()) == (
        2, "error: evil.tar.gz: unexpected member '../escape.txt': not a datarun backup, nothing restored")
    assert not (tmp_path / "n2").exists() and not (tmp_path / "escape.txt").exists()

    # A blob whose content does not match its name: the backup is damaged.
    damaged = tmp_path / "damaged.tar.gz"
    with tarfile.open(archive) as src, tarfile.open(damaged, "w:gz") as dst:
        for member in src.getmembers():
            dst.addfile(member, src.extractfile(member))
        info = tarfile.TarInfo("blobs/ab/ab" + "0" * 62)
        info.size = 3
        dst.addfile(info, io.BytesIO(b"bad"))
    result = cli("db", "restore", damaged, tmp_path / "n3")
    assert result.exit_code == 1
    assert result.stderr.strip() == ("error: damaged.tar.gz: blob ab0000000000... does not match its "
                                     "content: the backup is damaged, nothing restored")
    assert not (tmp_path / "n3").exists()

    # A tar that is no backup, and a backup of a format this datarun does not read.
    other = tmp_path / "other.tar"
    with tarfile.open(other, "w") as dst:
        info = tarfile.TarInfo("readme.txt")
        info.size = 2
        dst.addfile(info, io.BytesIO(b"hi"))
    result = cli("db", "restore", other, tmp_path / "n5")
    assert result.stderr.strip() == ("error: other.tar is not a datarun backup (no manifest.json or "
                                     "datarun.db): make one with `datarun db backup`")
    future = tmp_path / "future.tar.gz"
    with tarfile.open(archive) as src, tarfile.open(future, "w:gz") as dst:
        for member in src.getmembers():
            data = src.extractfile(member).read()
            if member.name == "manifest.json":
                data = json.dumps(dict(json.loads(data), format="datarun-backup/9")).encode()
                member.size = len(data)
            dst.addfile(member, io.BytesIO(data))
    result = cli("db", "restore", future, tmp_path / "n6")
    assert result.stderr.strip() == ("error: future.tar.gz: backup format 'datarun-backup/9' is not "
                                     "'datarun-backup/1', the one this datarun reads")
    # A damaged database inside: refused after its integrity check, nothing left behind.
    broken = tmp_path / "broken.tar.gz"
    with tarfile.open(archive) as src, tarfile.open(broken, "w:gz") as dst:
        for member in src.getmembers():
            data = src.extractfile(member).read()
            if member.name == "datarun.db":
                data = data[:100] + b"\xff" * 4096 + data[4196:]
                member.size = len(data)
            dst.addfile(member, io.BytesIO(data))
    result = cli("db", "restore", broken, tmp_path / "n7")
    assert result.exit_code == 1 and result.stderr.startswith("error: broken.tar.gz: its database failed "
                                                              "the integrity check (")
    assert result.stderr.rstrip().endswith("nothing restored") and not (tmp_path / "n7").exists()

    result = cli("db", "restore", tmp_path / "missing.tar.gz", tmp_path / "n4")
    assert result.stderr.strip() == f"error: backup {tmp_path / 'missing.tar.gz'} does not exist"


def test_backup_refuses_to_write_inside_the_workspace_state(workspace, cli):
    target = workspace.state_dir / "b.tar.gz"
    result = cli("db", "backup", target)
    assert (result.exit_code, result.stderr.strip()) == (
        2, f"error: {target} is inside the workspace's .datarun/: write the backup elsewhere")
