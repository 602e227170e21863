"""The task's results travel to the runner over a pipe; the runner alone writes them to disk.

A task process cannot be trusted with a writable path outside its sandbox, so its phase
notes, its report and its predictions go over a pipe of its own, as frames:

    kind (1 byte) | length (8 bytes, big-endian) | payload (length bytes)

- `C`: the pids of the task's process and of its namespace's init, as the runner sees
  them, "TASK INIT" (sent once, by the process that made them, before the task runs);
- `P`: the phase the task enters (UTF-8 text, at most 64 bytes);
- `R`: its report, a JSON object (at most 64 KiB): phase times, error kind and text;
- `T` and `E`: the train and test predictions, each a `.npy` file's bytes (float64, or a
  RAMP kit's own numbers of at most 8 bytes), at most the size the runner expects from the
  data set's rows and the shape of a row.

The runner reads the pipe as data arrives, streams predictions into files of the task
folder, and ignores the rest of the stream once a frame breaks a rule (an unknown kind, a
frame over its cap); the task then fails as `bad_predictions`, with the reason.
"""

import io
import json
import os
import struct
from typing import BinaryIO

from .common import disk_full_text, is_disk_full

HEADER = struct.Struct(">cQ")
PHASE_CAP = 64
REPORT_CAP = 64 * 1024
NPY_HEADER_CAP = 4096
PREDICTION_FILES = {b"T": "y_pred_train.npy", b"E": "y_pred_test.npy"}


def _write_all(fd: int, data) -> None:
    view = memoryview(data).cast("B")
    while view:
        written = os.write(fd, view)
        view = view[written:]


def send(fd: int, kind: bytes, payload: bytes) -> None:
    _write_all(fd, HEADER.pack(kind, len(payload)))
    _write_all(fd, payload)


def send_array(fd: int, kind: bytes, array) -> None:
    """An array as .npy bytes in its own dtype (the workflow's choice: float64, or a RAMP
    kit's), without a second copy of its data."""
    import numpy as np

    array = np.ascontiguousarray(array)
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, np.lib.format.header_data_from_array_1_0(array))
    head = header.getvalue()
    _write_all(fd, HEADER.pack(kind, len(head) + array.nbytes))
    _write_all(fd, head)
    if array.nbytes:
        _write_all(fd, array.reshape(-1).view(np.uint8))


class Receiver:
    """The runner's end: frames in, files and notes out, every size capped."""

    def __init__(self, folder, prediction_caps: dict[str, int]):
        self.folder = folder
        self.caps = {b"C": 32, b"P": PHASE_CAP, b"R": REPORT_CAP,
                     b"T": prediction_caps.get("train", 0) + NPY_HEADER_CAP,
                     b"E": prediction_caps.get("test", 0) + NPY_HEADER_CAP}
        self.pending = bytearray()
        self.kind: bytes | None = None
        self.left = 0
        self.small = bytearray()
        self.file: BinaryIO | None = None
        self.phase: str | None = None
        self.task_pid: int | None = None
        self.init_pid: int | None = None
        self.report: dict | None = None
        self.complete: set[str] = set()
        self.error: str | None = None
        self.disk_full: str | None = None  # the host's disk filled up: not the task's fault

    def feed(self, chunk: bytes) -> None:
        if self.error:
            return
        self.pending += chunk
        while self.pending and not self.error:
            if self.kind is None:
                if len(self.pending) < HEADER.size:
                    return
                kind, length = HEADER.unpack_from(self.pending)
                del self.pending[:HEADER.size]
                self._open(kind, length)
                continue
            take = min(self.left, len(self.pending))
            part = bytes(self.pending[:take])
            del self.pending[:take]
            self.left -= take
            if self.file is not None:
                try:
                    self.file.write(part)
                except OSError as error:
                    self._fail(f"the runner could not keep the predictions: {error}", error)
                    return
            else:
                self.small += part
            if self.left == 0:
                self._close()

    def _open(self, kind: bytes, length: int) -> None:
        if kind not in self.caps:
            self._fail(f"the task sent a result frame of unknown kind {kind!r}")
            return
        if length > self.caps[kind]:
            self._fail(f"the task sent {length} bytes for {self._name(kind)}, more than the "
                       f"{self.caps[kind]} it may")
            return
        self.kind, self.left = kind, length
        self.small = bytearray()
        if kind in PREDICTION_FILES:
            try:
                self.file = open(self.folder / f".{PREDICTION_FILES[kind]}.part", "wb")
            except OSError as error:  # the task folder removed under the runner
                self._fail(f"the runner could not keep {PREDICTION_FILES[kind]}: {error}", error)
                return
        if length == 0:
            self._close()

    def _close(self) -> None:
        kind = self.kind
        self.kind = None
        if self.file is not None:
            assert kind is not None  # a file is open only while a prediction frame arrives
            name = PREDICTION_FILES[kind]
            try:
                file, self.file = self.file, None
                file.close()  # flushes: a full disk may show only here
                os.replace(self.folder / f".{name}.part", self.folder / name)
            except OSError as error:
                self._fail(f"the runner could not keep {name}: {error}", error)
                return
            self.complete.add(name)
        elif kind == b"C":
            pids = self.small.split()
            if self.task_pid is None and len(pids) == 2 and all(p.isdigit() for p in pids):
                self.task_pid, self.init_pid = int(pids[0]), int(pids[1])
        elif kind == b"P":
            self.phase = self.small.decode("utf-8", "replace").strip() or None
        elif kind == b"R":
            try:
                report = json.loads(self.small.decode("utf-8"))
            except ValueError:
                report = None
            if not isinstance(report, dict):
                self._fail("the task sent a report that is not a JSON object")
                return
            self.report = report

    @staticmethod
    def _name(kind: bytes) -> str:
        return {b"C": "its pid", b"P": "its phase", b"R": "its report"}.get(kind) or PREDICTION_FILES[kind]

    def _fail(self, reason: str, error: OSError | None = None) -> None:
        self.error = reason
        if error is not None and is_disk_full(error):
            self.disk_full = disk_full_text(self.folder.parent)
        self.pending = bytearray()
        self._drop_file()

    def _drop_file(self) -> None:
        if self.file is not None:
            file, self.file = self.file, None
            try:
                file.close()
            except OSError:  # a full disk: the part file is removed by close()
                pass

    def close(self) -> None:
        """The stream ended; a frame cut short counts as never sent."""
        self._drop_file()
        for name in PREDICTION_FILES.values():
            try:
                os.unlink(self.folder / f".{name}.part")
            except FileNotFoundError:
                pass
