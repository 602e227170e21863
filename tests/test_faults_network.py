"""A flaky link to a host, for real: a TCP proxy of our own between datarun and sshd.

The proxy stalls, drops and cuts the SSH connection while `train` runs. Every task must
still end done once, with the very predictions the submission makes, which the test
checks by hash against the same estimator fitted here on the same folds.
"""

import hashlib
import threading
import time

import numpy as np
import pytest
from conftest import EXAMPLES
from faultcluster import Cluster, Training, started_on, task_rows, wait_until
from sshd import needs_root

from datarun.errors import HostError
from datarun.executors.ssh import check_download

pytestmark = [pytest.mark.ssh, needs_root]


@pytest.fixture
def cluster(tmp_path, monkeypatch):
    cluster = Cluster(tmp_path, EXAMPLES, names=("a",), proxied=True,
                      command_timeout=1.5, connect_timeout=1.0)
    monkeypatch.setenv("DATARUN_HOME", str(cluster.workspace.root))
    yield cluster
    cluster.close()


def npy_hash(array) -> str:
    """The digest the blob store gives these predictions (stored compacted)."""
    from datarun.store.blobs import pack_array

    return hashlib.sha256(pack_array(np.asarray(array))).hexdigest()


def expected_hashes(workspace, fold: int) -> tuple[str, str]:
    """The hashes of the predictions a prior DummyClassifier makes on this fold."""
    from sklearn.dummy import DummyClassifier

    from datarun.problems.registered import get_problem, load_fold, load_labels
    from datarun.store.db import open_db

    db = open_db(workspace)
    problem = get_problem(db, "faults")
    y_train, _ = load_labels(workspace, problem)
    train_idx, _ = load_fold(workspace, db, "faults", fold)
    model = DummyClassifier(strategy="prior").fit(np.zeros((len(train_idx), 1)), y_train[train_idx])
    return (npy_hash(model.predict_proba(np.zeros((problem["n_train"], 1)))),
            npy_hash(model.predict_proba(np.zeros((problem["n_test"], 1)))))


def test_results_cross_a_stalling_dropping_and_cutting_link_whole(cluster):
    proxy = cluster.proxies["a"]
    cluster.submit(4, sleep=1.0)
    training = Training(cluster.workspace)
    injected = []

    def still_training(what: str) -> None:
        assert training.summary is None, f"train ended before {what}"
        injected.append(what)

    wait_until(lambda: started_on(cluster, "a"), 30, "a task fitting on host a")
    proxy.stall()  # longer than command_timeout: the sync in flight times out
    still_training("stall")
    time.sleep(2.5)
    proxy.resume()
    wait_until(lambda: any(r["state"] == "done" for r in task_rows(cluster.workspace).values()), 30,
               "a first result through the link")
    still_training("cut")
    proxy.cut()
    proxy.drop()  # bytes vanish: the SSH stream breaks once they flow again
    still_training("drop")
    time.sleep(2.0)
    proxy.resume()
    proxy.cut_after(600)  # a connection reset part-way through its next replies
    still_training("cut mid-transfer")
    summary = training.join(120)
    assert injected == ["stall", "cut", "drop", "cut mid-transfer"]
    assert (summary["done"], summary["failed"], summary["queued"]) == (8, 0, 0), summary
    assert proxy.accepted >= 3 and proxy.cuts >= 2  # it did reconnect after the faults
    for row in task_rows(cluster.workspace).values():
        assert (row["pred_train"], row["pred_test"]) == expected_hashes(cluster.workspace, row["fold"])


def test_a_damaged_download_is_refused(tmp_path):
    archive = tmp_path / "results.tar"
    archive.write_bytes(b"the bytes the host packed")
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    check_download(archive, digest, "node")
    archive.write_bytes(b"the bytes the host packeD")
    with pytest.raises(HostError, match=r"^host node: the results archive arrived damaged \(SHA-256 "
                                        r"differs from the host's\); it is fetched again at the next sync$"):
        check_download(archive, digest, "node")
    with pytest.raises(HostError, match=r"^host node: sync printed no digest of its results archive "
                                        r"\(is `sha256sum` installed there\?\)$"):
        check_download(archive, None, "node")


def test_the_proxy_passes_stalls_and_cuts_bytes(tmp_path):
    """The proxy itself, against a loopback echo server."""
    import socket

    server = socket.create_server(("127.0.0.1", 0))

    def echo() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=lambda c=conn: [c.sendall(d) for d in iter(lambda: c.recv(99), b"")],
                             daemon=True).start()

    threading.Thread(target=echo, daemon=True).start()
    from faultproxy import FaultProxy

    proxy = FaultProxy(server.getsockname()[1])
    try:
        client = socket.create_connection(("127.0.0.1", proxy.port), timeout=2)
        client.sendall(b"ping")
        assert client.recv(10) == b"ping"
        proxy.stall()
        client.sendall(b"held")
        client.settimeout(0.3)
        with pytest.raises(TimeoutError):
            client.recv(10)
        proxy.resume()
        client.settimeout(2)
        assert client.recv(10) == b"held"
        assert proxy.cut() == 1
        try:
            after = client.recv(10)
        except ConnectionResetError:
            after = b""
        assert after == b""  # reset, or closed: nothing more comes through
    finally:
        proxy.close()
        server.close()
