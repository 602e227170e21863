"""One copy of a data set on the local host: the runner's data set is hard links to the
workspace's tree when tasks run sandboxed (they see it through a read-only mount), a copy
when they do not (a task writing to its data must not reach the workspace)."""

import os

from conftest import EXAMPLES

from datarun.executors.hosts import Host
from datarun.executors.local import LocalExecutor, shares_files
from datarun.problems.registered import get_problem
from datarun.store.blobs import BlobStore
from datarun.store.db import open_db


def data_set_of(workspace, cli):
    assert cli("problem", "add", EXAMPLES / "iris").exit_code == 0
    digest = get_problem(open_db(workspace), "iris")["data_hash"]
    return digest, BlobStore(workspace.blobs_dir).tree_path(digest)


def files_of(folder):
    return {p.relative_to(folder): p for p in sorted(folder.rglob("*")) if p.is_file()}


def disk_use(*folders) -> int:
    """Bytes of distinct inodes under these folders, as du counts them."""
    seen = {}
    for folder in folders:
        for path in folder.rglob("*"):
            if path.is_file():
                stat = path.stat()
                seen[(stat.st_dev, stat.st_ino)] = stat.st_size
    return sum(seen.values())


def test_a_sandboxing_local_host_keeps_one_copy_of_a_data_set(workspace, cli, tmp_path):
    digest, tree = data_set_of(workspace, cli)
    executor = LocalExecutor(workspace, Host(name="local", workdir=str(tmp_path / "host")))
    executor.prepare({digest: tree})
    data_set = executor.layout.data_set(digest)
    tree_files = files_of(tree)
    assert tree_files
    for rel, path in tree_files.items():
        assert os.path.samefile(path, data_set / rel), rel
        assert (data_set / rel).stat().st_mode & 0o777 == 0o444
    assert disk_use(tree, data_set) - disk_use(tree) < 1024  # the completeness marker alone
    # Why only a sandboxed task gets links (its data is mounted read-only): the host's user
    # writing to a linked file, as an unsandboxed task could, rewrites the workspace's tree.
    victim = next(iter(tree_files))
    (data_set / victim).chmod(0o644)
    (data_set / victim).write_bytes(b"rewritten")
    assert (tree / victim).read_bytes() == b"rewritten"


def test_an_unsandboxed_local_host_gets_a_copy_and_a_linked_data_set_is_replaced(workspace, cli, tmp_path):
    digest, tree = data_set_of(workspace, cli)
    workdir = str(tmp_path / "host")
    LocalExecutor(workspace, Host(name="local", workdir=workdir)).prepare({digest: tree})
    executor = LocalExecutor(workspace, Host(name="local", workdir=workdir, isolation="none"))
    data_set = executor.layout.data_set(digest)
    assert shares_files(data_set, tree)
    executor.prepare({digest: tree})  # the host no longer sandboxes: its data set becomes a copy
    assert not shares_files(data_set, tree)
    for rel, path in files_of(tree).items():
        assert not os.path.samefile(path, data_set / rel)
        assert (data_set / rel).read_bytes() == path.read_bytes()
    # A task that may write to it (the host's user, unsandboxed) rewrites the copy only.
    victim = next(iter(files_of(tree)))
    before = (tree / victim).read_bytes()
    (data_set / victim).chmod(0o644)
    (data_set / victim).write_bytes(b"rewritten")
    assert (tree / victim).read_bytes() == before
