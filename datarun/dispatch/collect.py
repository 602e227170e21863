"""Taking what a host's sync brought back: results, late results, lost tasks, bagged scores.

Split from `datarun.dispatch.dispatcher` along its seam: the dispatcher decides when to talk to
hosts; this part decides what their answers mean for the database. Every write is one
`BEGIN IMMEDIATE` transaction guarded by the state and attempt the row is expected to
have, so a result is recorded once, for the attempt the database expects, or (when that
attempt was given up on) as the first complete result of the task; never twice.

A result must carry the nonce its attempt was sent with. One that does not is refused
and recorded as a task event, never scored; the attempt then counts as lost on its host
(the host answered, but not with this attempt's result): re-queued, or failed as
`host_lost` once it has been lost `max_attempts` times. A bundle the host refused (a
folder of its key was there already) goes back to the queue with no loss counted, to be
sent again as a new attempt; the folder that was there is left alone.
"""

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from datarun.dispatch.results import ResultNotOurs, ResultRejected, read_result
from datarun.store.task_events import record_event

# A runner beats every second; one silent for this long gets no new task until it beats
# again (its tasks are given to others only after the host's grace period).
RUNNER_SLOW = 5.0


def task_key(task_id: int, attempt: int) -> str:
    return f"t{task_id}-a{attempt}"


@dataclass
class PassReport:
    collected: list[int] = field(default_factory=list)
    launched: list[int] = field(default_factory=list)
    requeued: list[int] = field(default_factory=list)
    host_errors: dict[str, str] = field(default_factory=dict)
    scored_submissions: list[int] = field(default_factory=list)
    late: list[int] = field(default_factory=list)  # tasks whose given-up attempt came back


class Collecting:
    """The dispatcher's side that applies a host's answers (mixed into `Dispatcher`)."""

    def apply_sync(self, name: str, result, context: dict, report: PassReport) -> None:
        poll = result.poll
        fetched = set(result.fetched)
        results = context["scratch"] / "results"
        grace = self.grace(name)
        # A runner that holds its lock but has not written its heartbeat for the grace
        # period is frozen (a stopped or swapping host): its tasks will not move either.
        silent = poll.now - poll.runner_heartbeat if poll.runner_alive and poll.runner_heartbeat else 0.0
        frozen = silent > grace
        if silent > RUNNER_SLOW:
            self.stalled.add(name)
        else:
            self.stalled.discard(name)
        lost, touched, never_arrived, refused = [], {}, [], []
        unconfirmed = self.unconfirmed[name]
        for key, task in context["polled"].items():
            if key in result.refused:  # the host kept an older folder of that key: not ours
                refused.append(task)
                record_event(self.db, task["id"], task["attempt"], name, "bundle_refused",
                             f"host {name} refused the bundle: {result.refused[key]}")
                continue
            state = poll.tasks.get(key)
            if key in unconfirmed:
                unconfirmed.discard(key)
                if state is None or state.state == "missing":
                    never_arrived.append(task)  # its launch failed before the host had it
                    continue
            if key in fetched:
                try:
                    recorded = self.record_result(task, name, results / key)
                except ResultNotOurs as error:
                    reason = f"result from host {name} refused: {error}"
                    record_event(self.db, task["id"], task["attempt"], name, "result_refused", reason)
                    lost.append((task, reason))
                    continue
                if recorded:
                    report.collected.append(task["id"])
                    touched[task["submission"]] = task["problem"]
                elif self.take_late(name, key, results / key, report, touched, task.get("nonce")):
                    report.collected.append(task["id"])
                if self._state_of(task["id"]) == "done":
                    self.pending_cleanup[name].add(key)
                continue
            if state is None or state.state == "missing":
                lost.append((task, f"host {name} has no trace of the task"))
            elif state.state in ("running", "queued") and not poll.runner_alive:
                if state.state == "running":
                    lost.append((task, f"the runner on host {name} died"))
            elif state.state in ("running", "queued") and frozen:
                lost.append((task, f"the runner on host {name} has not beaten for "
                                   f"{poll.now - poll.runner_heartbeat:.0f}s"))
            elif state.state == "running" and state.heartbeat and poll.now - state.heartbeat > grace:
                lost.append((task, f"no heartbeat from the task on host {name} for "
                                   f"{poll.now - state.heartbeat:.0f}s"))
        self.requeue([task for task, _ in lost], report, [reason for _, reason in lost])
        if never_arrived:
            self.unclaim(name, never_arrived)
        if refused:
            self.unclaim(name, refused, remember=False)
        self.tidy_leftovers(name, context["leftovers"], poll, fetched, results, report, touched)
        for submission, problem in sorted(touched.items()):
            if self.finish_submission(submission):
                report.scored_submissions.append(submission)
                self.to_blend.add(problem)

    def tidy_leftovers(self, name: str, keys: list[str], poll, fetched: set[str], results: Path,
                       report: PassReport, touched: dict) -> None:
        """Late results are recognised, what still runs is cancelled, what is gone is forgotten."""
        gone = []
        for key in keys:
            state = poll.tasks.get(key)
            if key in fetched:
                self.take_late(name, key, results / key, report, touched, self.leftovers.nonce(name, key))
                self.pending_cleanup[name].add(key)
            elif state is None or state.state == "missing":
                gone.append(key)
            elif state.state == "finished":
                self.pending_cleanup[name].add(key)
            else:
                self.to_cancel[name].add(key)
        self.leftovers.forget(name, gone)

    def take_late(self, name: str, key: str, folder: Path, report: PassReport, touched: dict,
                  nonce: str | None) -> bool:
        """A result of an attempt given up on (sent with `nonce`): counted only if it is that
        attempt's and the task has no result yet."""
        try:
            task_id, attempt = (int(part) for part in key[1:].split("-a"))
        except ValueError:
            return False
        row = self.db.execute(
            "SELECT t.id, t.submission, t.fold, s.problem FROM tasks t JOIN submissions s "
            "ON s.id = t.submission WHERE t.id = ?", [task_id]).fetchone()
        if row is None:
            return False
        report.late.append(row[0])
        task = {"id": row[0], "submission": row[1], "fold": row[2], "problem": row[3], "attempt": attempt,
                "nonce": nonce}
        try:
            recorded = self.record_result(task, name, folder, late=True)
        except ResultNotOurs as error:
            record_event(self.db, task["id"], attempt, name, "result_refused",
                         f"result from host {name} refused: {error}")
            return False
        if recorded:
            touched[task["submission"]] = task["problem"]
            return True
        return False

    def _state_of(self, task_id: int) -> str | None:
        row = self.db.execute("SELECT state FROM tasks WHERE id = ?", [task_id]).fetchone()
        return row[0] if row else None

    def record_result(self, task: dict, host_name: str, folder: Path, late: bool = False) -> bool:
        """Store one task's result; False if it was a late result of an attempt already given up.
        Raises ResultNotOurs, storing nothing, if the result is not the attempt's own (its
        nonce is not `task["nonce"]`).

        With `late`, the result of an attempt given up on is taken if it is a success and the
        task has no result yet (first complete result wins); the attempt that replaced it, if
        running, is then left to be cancelled on its host.
        """
        if late and not (folder / "result.json").is_file():
            return False
        scorer = self.scorer(task["problem"])
        key = task_key(task["id"], task["attempt"])
        scores = []
        try:
            result = read_result(folder, key, *scorer.prediction_shapes(), nonce=task.get("nonce"),
                                 keep_dtype=scorer.keeps_dtype)
        except ResultNotOurs:
            raise
        except ResultRejected as error:
            state, kind, text, measures, environment, preds, log = (
                "failed", "harness_error", f"result from host {host_name} rejected: {error}", {}, {}, None, b"")
        else:
            state, kind, text = result.state, result.error_kind, result.error
            measures, environment, log = result.measures, result.environment, result.log
            preds = None
            if state == "done":
                scores = scorer.task_scores(task["fold"], result.y_pred_train, result.y_pred_test)
                preds = (self.store.put_array(result.y_pred_train), self.store.put_array(result.y_pred_test))
        if late and state != "done":
            return False  # a failure (or our own cancel) of a given-up attempt decides nothing
        environment = dict(environment, host=host_name)
        log_hash = self.store.put_bytes(log) if log else None
        replaced = None
        with self.db.conn:
            self.db.conn.execute("BEGIN IMMEDIATE")
            current = self.db.execute("SELECT state, attempt, host, nonce FROM tasks WHERE id = ?",
                                      [task["id"]]).fetchone()
            if late:
                if current is None or current[0] not in ("queued", "running") or (
                        current[0] == "running" and current[1] == task["attempt"]):
                    return False
                if current[0] == "running":
                    replaced = (current[2], task_key(task["id"], current[1]), current[3])
                expected = (current[0], current[1])
            else:
                expected = ("running", task["attempt"])
            cursor = self.db.execute(
                "UPDATE tasks SET state = ?, error_kind = ?, error = ?, finished_at = ?, train_time = ?, "
                "valid_time = ?, test_time = ?, wall_time = ?, cpu_time = ?, peak_memory = ?, "
                "pred_train = ?, pred_test = ?, log = ?, environment = ?, lease_expires = NULL, "
                "host = ?, attempt = ?, ran_from = ?, ran_to = ? WHERE id = ? AND state = ? AND attempt = ?",
                [state, kind, text, time.time(), measures.get("train_time"), measures.get("valid_time"),
                 measures.get("test_time"), measures.get("wall_time"), measures.get("cpu_time"),
                 int(measures["peak_memory"]) if measures.get("peak_memory") is not None else None,
                 preds[0] if preds else None, preds[1] if preds else None, log_hash,
                 json.dumps(environment), host_name, task["attempt"], measures.get("started_at"),
                 measures.get("finished_at"), task["id"], *expected])
            if cursor.rowcount != 1:
                return False
            self.db.execute("DELETE FROM scores WHERE task = ?", [task["id"]])
            self.db.conn.executemany(
                "INSERT INTO scores (task, split, score, value) VALUES (?, ?, ?, ?)",
                [(task["id"], split, name, value) for split, name, value in scores])
        if replaced and replaced[0] in self.hosts:
            self.leftovers.add(replaced[0], {replaced[1]: replaced[2]})
        return True

    def finish_submission(self, submission: int) -> bool:
        """Compute bagged scores once every fold is done; True if it was computed now."""
        rows = list(self.db.query(
            "SELECT t.fold, t.state, t.pred_train, t.pred_test, s.problem FROM tasks t "
            "JOIN submissions s ON s.id = t.submission WHERE t.submission = ? ORDER BY t.fold", [submission]))
        if not rows or any(r["state"] != "done" for r in rows):
            return False
        if self.db.execute("SELECT 1 FROM bagged_scores WHERE submission = ?", [submission]).fetchone():
            return False
        preds_train = [self.store.get_array(r["pred_train"]) for r in rows]
        preds_test = [self.store.get_array(r["pred_test"]) for r in rows]
        scores = self.scorer(rows[0]["problem"]).bagged_rows(
            [r["fold"] for r in rows], preds_train, preds_test)
        with self.db.conn:
            self.db.conn.execute("BEGIN IMMEDIATE")
            self.db.conn.executemany(
                "INSERT OR REPLACE INTO bagged_scores (submission, split, score, value, curve, note) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [(submission, split, score, value, None if curve is None else json.dumps(curve),
                  note) for split, score, value, curve, note in scores])
        return True
