"""One lane per host: the host's I/O runs on a thread of its own.

Talking to a host can hang (a stopped machine answers nothing until a timeout fires), so
the dispatcher never talks to hosts from its own thread. Each host has a lane that runs
at most one sync job at a time on a daemon thread; the dispatcher starts jobs on idle
lanes, and takes their results when they are done. A hung host keeps its own lane busy
and nothing else: the other hosts and the database carry on, and a process that exits
does not wait for a lane stuck in a timeout.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from datarun.dispatch.job import SyncJob
from datarun.executors.base import Executor, SyncResult


@dataclass
class Finished:
    """A lane's finished job, with what its sync brought back or the error that ended it."""

    job: SyncJob
    result: SyncResult | None
    error: BaseException | None


class Lane:
    def __init__(self, name: str, wake: threading.Event):
        self.name = name
        self._wake = wake
        self._thread: threading.Thread | None = None
        self._job: SyncJob | None = None
        self._outcome: tuple[SyncResult | None, BaseException | None] | None = None
        self.started_at: float | None = None
        self.failures = 0  # failed jobs in a row
        self.last_failure: float | None = None

    @property
    def busy(self) -> bool:
        return self._thread is not None

    def start(self, job: SyncJob, executor: Executor) -> None:
        assert not self.busy, f"lane {self.name} already runs a job"
        self._job = job
        self.started_at = time.time()
        self._outcome = None

        def run() -> None:
            outcome: tuple[SyncResult | None, BaseException | None]
            try:
                outcome = (job.run(executor), None)
            except BaseException as error:  # handed to the dispatcher, never lost in the thread
                outcome = (None, error)
            self._outcome = outcome
            self._wake.set()

        self._thread = threading.Thread(target=run, name=f"datarun-lane-{self.name}", daemon=True)
        self._thread.start()

    def take(self) -> Finished | None:
        """The finished job, or None while it still runs (or none was started)."""
        if self._thread is None or self._outcome is None or self._job is None:
            return None
        self._thread.join()
        (result, error), job = self._outcome, self._job
        self._thread, self._outcome, self._job = None, None, None
        if error is None:
            self.failures = 0
        else:
            self.note_failure()
        return Finished(job, result, error)

    def note_failure(self) -> None:
        self.failures += 1
        self.last_failure = time.time()

    def backoff(self) -> float:
        """Seconds to leave the host alone after failures: 2, 4, 8 ... up to 60."""
        if not self.failures:
            return 0.0
        return min(60.0, 2.0 ** self.failures)

    def backing_off(self, now: float) -> bool:
        return bool(self.failures) and self.last_failure is not None and now - self.last_failure < self.backoff()


class Leftovers:
    """Task keys given up on, per host, that may still sit or run there, with their nonces.

    A task re-queued because its host went silent may be alive on that host, and a bundle
    whose launch failed half-way may have arrived after all. Each such key is remembered
    until the host has been told to cancel it and its folder is gone, so a host that comes
    back frees its slots, its late results are recognised for what they are (by the nonce
    the attempt was sent with), and nothing piles up in the workspace's folder there. The
    list is a file, not memory: cron's next `dispatch` (or a dispatcher restarted after a
    crash) must still know. Only the dispatcher holding the workspace lock writes it; each
    write replaces the file whole. A file written before nonces lists bare keys: their
    nonce is unknown, so no late result of theirs is taken.
    """

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        self._keys: dict[str, dict[str, str | None]] = {}
        try:
            data = json.loads(self.path.read_text())
            for host, keys in data.items():
                if isinstance(keys, dict):
                    self._keys[str(host)] = {str(k): v if isinstance(v, str) else None for k, v in keys.items()}
                elif isinstance(keys, list):
                    self._keys[str(host)] = dict.fromkeys(map(str, keys))
        except (OSError, ValueError, AttributeError):
            self._keys = {}  # none yet, or a file cut short by a crash: start afresh

    def keys(self, host: str) -> list[str]:
        return sorted(self._keys.get(host, ()))

    def nonce(self, host: str, key: str) -> str | None:
        """The nonce the attempt `key` was sent to `host` with (None when not known)."""
        return self._keys.get(host, {}).get(key)

    def add(self, host: str, keys: dict[str, str | None]) -> None:
        """Remember these {key: nonce} attempts as given up on `host`."""
        mine = self._keys.setdefault(host, {})
        new = {key: nonce for key, nonce in keys.items() if key not in mine}
        if new:
            mine.update(new)
            self._save()
        elif not mine:
            del self._keys[host]

    def forget(self, host: str, keys: Iterable[str]) -> None:
        keys = list(keys)
        mine = self._keys.get(host)
        if mine and set(mine) & set(keys):
            for key in keys:
                mine.pop(key, None)
            if not mine:
                del self._keys[host]
            self._save()

    def _save(self) -> None:
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({h: dict(sorted(k.items())) for h, k in sorted(self._keys.items())},
                                  indent=1))
        os.replace(tmp, self.path)
