"""The content-addressed blob store: predictions, fold indices, submission files, data.

A blob is a file named by the SHA-256 of its bytes, under `.datarun/blobs/ab/abcdef...`.
Arrays are stored as `.npy` written and read with `allow_pickle=False`, so nothing in the
store can carry code. Predictions, the bulk of a workspace (every training and test row of
every task), are stored compacted (`put_predictions`): the `.npy` header, then the array's
bytes regrouped by their position in each number (all first bytes, then all second bytes:
the exponents and high mantissa bytes of probabilities repeat) and deflated. Every bit is
kept: float32 was rejected because it moves log-loss by more than 1e-9. `get_array` is the
one reader of both forms, so blobs written before compaction still read. A *tree* is a folder stored under `.datarun/trees/<hash>/`, named
by the hash of its sorted file names and contents; it is how prepared data sets are kept
and shipped to hosts once per hash.
"""

import hashlib
import io
import os
import shutil
import struct
import tempfile
import zlib
from pathlib import Path

from datarun.store.space import space_for

CHUNK = 1 << 20
PACKED = b"\x93DRPK1"  # a compacted array's first bytes (an .npy file's are b"\x93NUMPY")
PACK_LEVEL = 1  # zlib level: 6 and 9 shrank logistic-regression and forest probabilities no further


def pack_array(array) -> bytes:
    """An array as PACKED, then its .npy header's length and the header, then its bytes
    shuffled (byte i of every number together) and deflated. Arrays of other than plain
    numbers are written as .npy."""
    import numpy as np

    array = np.ascontiguousarray(array)
    header = io.BytesIO()
    if array.dtype.kind not in "biuf" or array.dtype.hasobject:
        np.save(header, array, allow_pickle=False)
        return header.getvalue()
    np.lib.format.write_array_header_1_0(header, np.lib.format.header_data_from_array_1_0(array))
    size = array.dtype.itemsize
    shuffled = array.reshape(-1).view(np.uint8).reshape(-1, size).T.tobytes()
    head = header.getvalue()
    return PACKED + struct.pack("<I", len(head)) + head + zlib.compress(shuffled, PACK_LEVEL)


def unpack_array(data: bytes):
    """The array `pack_array` wrote; ValueError if the bytes are not one."""
    import numpy as np

    start = len(PACKED) + 4
    if not data.startswith(PACKED) or len(data) < start:
        raise ValueError("not a packed array")
    (length,) = struct.unpack("<I", data[len(PACKED):start])
    header = io.BytesIO(data[start:start + length])
    np.lib.format.read_magic(header)
    shape, fortran, dtype = np.lib.format.read_array_header_1_0(header)
    if dtype.kind not in "biuf" or dtype.hasobject or fortran:
        raise ValueError("a packed array holds plain numbers in C order")
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    inflate = zlib.decompressobj()
    raw = inflate.decompress(data[start + length:], expected)  # no more than the header says
    if len(raw) != expected or inflate.unconsumed_tail or inflate.unused_data or not inflate.eof:
        raise ValueError("a packed array's bytes do not match its header")
    count = expected // dtype.itemsize
    numbers = np.frombuffer(raw, dtype=np.uint8).reshape(dtype.itemsize, count).T
    return np.ascontiguousarray(numbers).view(dtype).reshape(shape)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def tree_hash(folder: Path) -> str:
    """The hash of a folder: its relative file names and their contents' hashes."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        digest.update(f"{rel}\0{sha256_file(path)}\n".encode())
    return digest.hexdigest()


class BlobStore:
    def __init__(self, root: Path):
        self.root = Path(root)

    def path(self, digest: str) -> Path:
        return self.root / digest[:2] / digest

    def has(self, digest: str) -> bool:
        return self.path(digest).exists()

    def put_bytes(self, data: bytes) -> str:
        digest = sha256_bytes(data)
        target = self.path(digest)
        if not target.exists():
            # A full disk leaves no partial blob: the temporary file goes with the error.
            with space_for(self.root, len(data)):
                target.parent.mkdir(parents=True, exist_ok=True)
                fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
                try:
                    with os.fdopen(fd, "wb") as f:
                        f.write(data)
                    os.replace(tmp, target)
                except BaseException:
                    Path(tmp).unlink(missing_ok=True)
                    raise
        return digest

    def get_bytes(self, digest: str) -> bytes:
        return self.path(digest).read_bytes()

    def put_array(self, array) -> str:
        import numpy as np

        buffer = io.BytesIO()
        np.save(buffer, np.asarray(array), allow_pickle=False)
        return self.put_bytes(buffer.getvalue())

    def put_predictions(self, array) -> str:
        """Store a prediction array compacted (see the module's docstring); its digest."""
        return self.put_bytes(pack_array(array))

    def get_array(self, digest: str):
        """An array stored by `put_array` or `put_predictions`."""
        import numpy as np

        path = self.path(digest)
        with open(path, "rb") as f:
            if f.read(len(PACKED)) == PACKED:
                return unpack_array(path.read_bytes())
        return np.load(path, allow_pickle=False)

    # Trees: whole folders, addressed by tree_hash.
    @property
    def trees_root(self) -> Path:
        return self.root.parent / "trees"

    def tree_path(self, digest: str) -> Path:
        return self.trees_root / digest

    def put_tree(self, folder: Path) -> str:
        digest = tree_hash(folder)
        target = self.tree_path(digest)
        if not target.exists():
            needed = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
            with space_for(self.trees_root, needed):
                self.trees_root.mkdir(parents=True, exist_ok=True)
                tmp = Path(tempfile.mkdtemp(dir=self.trees_root, prefix=".tmp-"))
                try:
                    shutil.copytree(folder, tmp, dirs_exist_ok=True)
                except BaseException:
                    shutil.rmtree(tmp, ignore_errors=True)
                    raise
            try:
                os.replace(tmp, target)
            except OSError:  # another writer stored the same tree first
                shutil.rmtree(tmp, ignore_errors=True)
        return digest
