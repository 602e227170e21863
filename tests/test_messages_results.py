"""A result a host sent back that no other test triggered: a predictions file whose `.npy`
header is well formed but claims more rows than any machine could hold.

As the corpus's results/ cases, it is checked by `datarun.dispatch.results.read_result` for task
`t1-a1` of a problem with 4 training rows, 2 test rows and 3 classes.
"""

import json
import struct

import numpy as np
import pytest

from datarun.dispatch.results import ResultRejected, read_result

NONCE = "0123abcd"
RESULT = {
    "nonce": NONCE, "key": "t1-a1", "state": "done", "error_kind": None, "error": None, "train_time": 0.1,
    "valid_time": 0.01, "test_time": 0.01, "wall_time": 0.2, "cpu_time": 0.2,
    "peak_memory": 1000000, "started_at": 1764300000.0, "finished_at": 1764300000.2,
    "predictions": {"train": "y_pred_train.npy", "test": "y_pred_test.npy"},
    "environment": {"hostname": "node1", "python": "3.11.7"},
}


def npy_header(shape: tuple[int, ...]) -> bytes:
    """A version 1.0 `.npy` header for float64 data of this shape, and no data after it."""
    text = f"{{'descr': '<f8', 'fortran_order': False, 'shape': {shape}, }}".encode("latin1")
    pad = (64 - (10 + len(text) + 1) % 64) % 64
    text += b" " * pad + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text


def test_a_header_claiming_an_impossible_shape_is_rejected(tmp_path):
    folder = tmp_path / "result"
    folder.mkdir()
    (folder / "result.json").write_text(json.dumps(RESULT))
    np.save(folder / "y_pred_test.npy", np.full((2, 3), 1 / 3))
    # 10**17 rows of 3 floats: 2.4 exabytes, more than any address space; the file is tiny.
    (folder / "y_pred_train.npy").write_bytes(npy_header((10**17, 3)))
    with pytest.raises(ResultRejected) as raised:
        read_result(folder, "t1-a1", (4, 3), (2, 3), nonce=NONCE)
    assert str(raised.value) == "y_pred_train.npy is not a readable .npy file (MemoryError)"


def test_a_result_is_refused_for_an_attempt_whose_nonce_is_not_known(tmp_path):
    """An attempt launched before nonces existed (or a leftover recorded without one): no
    result can prove it belongs to it, whatever it carries."""
    from datarun.dispatch.results import ResultNotOurs

    folder = tmp_path / "result"
    folder.mkdir()
    (folder / "result.json").write_text(json.dumps(RESULT))
    with pytest.raises(ResultNotOurs) as raised:
        read_result(folder, "t1-a1", (4, 3), (2, 3), nonce=None)
    assert str(raised.value) == "no nonce is known for this attempt, so no result can be taken for it"
