"""Contributivity off the dispatcher's critical path.

Blending after each newly scored submission used to run on the dispatcher's thread,
between collecting one host's answer and launching the next tasks. Here it runs on a
thread of its own, with a database connection of its own (SQLite in WAL mode lets it read
while the dispatcher writes; its short write transaction waits for the lock like any
writer), and with a `BlendCache`, so a newly scored submission costs its own predictions.
Problems asked for while a blend runs are blended once more afterwards, so the last
update always sees the last result. `drain` waits until nothing is pending and re-raises
what the thread met (a full disk, say), so `train` and `dispatch` end with current blends
or with the error.
"""

from __future__ import annotations

import threading

from datarun.board.contrib import BlendCache, update_contributivity
from datarun.errors import DatarunError
from datarun.problems.registered import get_problem
from datarun.store.db import open_db
from datarun.store.workspace import Workspace


class BlendWorker:
    def __init__(self, workspace: Workspace):
        self.workspace = workspace
        self.cache = BlendCache()
        self.pending: set[str] = set()
        self.running = False
        self.stopping = False
        self.error: BaseException | None = None
        self.changed = threading.Condition()
        self.thread: threading.Thread | None = None

    def request(self, problems) -> None:
        """Blend these problems soon, on the worker's thread."""
        problems = set(problems)
        if not problems:
            return
        with self.changed:
            self.pending |= problems
            if self.thread is None:
                self.thread = threading.Thread(target=self._serve, name="datarun-blend", daemon=True)
                self.thread.start()
            self.changed.notify_all()

    def drain(self) -> None:
        """Wait until every requested blend is written; raise what the thread met."""
        with self.changed:
            while (self.pending or self.running) and self.thread is not None and self.thread.is_alive():
                self.changed.wait(0.5)
            error, self.error = self.error, None
        if error is not None:
            raise error

    def close(self) -> None:
        with self.changed:
            self.stopping = True
            self.changed.notify_all()
        if self.thread is not None:
            self.thread.join()

    def _serve(self) -> None:
        db = open_db(self.workspace)
        try:
            while True:
                with self.changed:
                    while not self.pending and not self.stopping:
                        self.changed.wait()
                    if self.stopping and not self.pending:
                        return
                    problems, self.pending = sorted(self.pending), set()
                    self.running = True
                try:
                    for problem in problems:
                        try:
                            update_contributivity(self.workspace, db, problem, cache=self.cache)
                        except DatarunError:
                            # Only a sensitive problem's blend asks a host: none answered. Its
                            # boards say their blend is not current until a later pass reaches one.
                            if not get_problem(db, problem).get("sensitive"):
                                raise
                except BaseException as error:  # kept for drain(): never lost on a thread
                    with self.changed:
                        self.error = error
                finally:
                    with self.changed:
                        self.running = False
                        self.changed.notify_all()
        finally:
            db.conn.close()
