"""The content-addressed blob store: predictions, fold indices, submission files, data.

A blob is a file named by the SHA-256 of its bytes, under `.datarun/blobs/ab/abcdef...`.
Arrays are stored as `.npy` written and read with `allow_pickle=False`, so nothing in the
store can carry code. A *tree* is a folder stored under `.datarun/trees/<hash>/`, named
by the hash of its sorted file names and contents; it is how prepared data sets are kept
and shipped to hosts once per hash.
"""

import hashlib
import io
import os
import shutil
import tempfile
from pathlib import Path

from datarun.store.space import space_for

CHUNK = 1 << 20


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

    def get_array(self, digest: str):
        import numpy as np

        return np.load(self.path(digest), allow_pickle=False)

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
