"""Predictions are stored compacted (shuffled bytes, deflated), bit for bit, and read by the
one reader of the blob store, which still reads the plain `.npy` blobs of before."""

import io

import numpy as np
import pytest
from conftest import EXAMPLES, stop_runners

from datarun.remote.scoring.scores import score_rows
from datarun.store.blobs import PACKED, BlobStore, pack_array, unpack_array


def probabilities(rows: int, classes: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.ones(classes), size=rows)
    p[: rows // 10] = [1.0] + [0.0] * (classes - 1)  # a tree's certain rows
    return p


@pytest.mark.parametrize("array", [
    probabilities(1000, 3), probabilities(1, 2), np.zeros((0, 3)), np.arange(7, dtype=np.float64),
    np.array([1e-300, -0.0, np.inf, 5e-324]), np.arange(12, dtype=np.int32).reshape(3, 4),
    np.asfortranarray(probabilities(50, 4)),
])
def test_a_packed_array_reads_back_bit_for_bit(array):
    back = unpack_array(pack_array(array))
    assert back.dtype == array.dtype and back.shape == array.shape
    assert back.tobytes() == np.ascontiguousarray(array).tobytes()


def test_log_loss_of_packed_predictions_is_unchanged(tmp_path):
    """The packed form moves a score by nothing (float32 moved log-loss by more than 1e-9)."""
    p = probabilities(5000, 3, seed=1)
    y = np.array(["a", "b", "c"])[np.random.default_rng(2).integers(0, 3, 5000)]
    store = BlobStore(tmp_path)
    back = store.get_array(store.put_predictions(p))
    exact = score_rows("classification", ["a", "b", "c"], ["log_loss"], "valid", y, p)
    assert score_rows("classification", ["a", "b", "c"], ["log_loss"], "valid", y, back) == exact


def test_packed_predictions_take_less_disk_and_old_npy_blobs_still_read(tmp_path):
    store = BlobStore(tmp_path)
    p = probabilities(20_000, 2)
    packed, plain = store.put_predictions(p), store.put_array(p)
    assert store.path(packed).read_bytes().startswith(PACKED)
    assert store.path(plain).read_bytes().startswith(b"\x93NUMPY")
    assert store.path(packed).stat().st_size < 0.9 * store.path(plain).stat().st_size
    assert np.array_equal(store.get_array(packed), p) and np.array_equal(store.get_array(plain), p)
    constant = np.tile([0.25, 0.75], (20_000, 1))  # a DummyClassifier's
    assert store.path(store.put_predictions(constant)).stat().st_size < 0.01 * constant.nbytes


def test_text_labels_are_stored_as_npy():
    labels = np.array(["a", "bb"])
    data = pack_array(labels)
    assert data.startswith(b"\x93NUMPY")
    assert np.load(io.BytesIO(data), allow_pickle=False).tolist() == ["a", "bb"]


@pytest.mark.parametrize("damage, message", [
    (lambda d: d[:-5], "do not match its header"),  # cut short
    (lambda d: d + b"x", "do not match its header"),  # bytes beyond what the header says
    (lambda d: b"\x93NUMPY" + d[7:], "not a packed array"),
])
def test_a_damaged_packed_array_is_refused(damage, message):
    with pytest.raises(ValueError, match=message):
        unpack_array(damage(pack_array(probabilities(100, 2))))


def test_an_array_longer_than_its_header_says_is_not_inflated_past_it():
    data = pack_array(np.zeros(10))
    header_says_less = data.replace(b"(10,), }", b"(2,), } ")  # same header length
    with pytest.raises(ValueError, match="do not match its header"):
        unpack_array(header_says_less)


def test_train_stores_every_tasks_predictions_packed(workspace, cli):
    from datarun.store.db import open_db

    assert cli("problem", "add", EXAMPLES / "iris").exit_code == 0
    try:
        sub = EXAMPLES / "iris" / "submissions" / "logreg"
        assert cli("submit", "iris", sub, "--team", "ada").exit_code == 0
        assert cli("train").exit_code == 0
    finally:
        stop_runners(workspace)
    store = BlobStore(workspace.blobs_dir)
    digests = open_db(workspace).execute("SELECT pred_train, pred_test FROM tasks").fetchall()
    assert len(digests) == 5
    for train, test in digests:
        for digest in (train, test):
            assert store.path(digest).read_bytes().startswith(PACKED)
            assert store.get_array(digest).dtype == np.float64
    board = cli("leaderboard", "iris", "--json").json()
    assert board["rows"][0]["contributivity"] == pytest.approx(1.0)
