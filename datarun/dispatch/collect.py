"""Taking what a host's sync brought back: results, late results, lost tasks, bagged scores.

The dispatcher decides when to talk to hosts; the `Collector` decides what their answers
mean for the database. Every change of a task goes through `datarun.store.tasks`, guarded
by the state and attempt the row is expected to have, so a result is recorded once, for
the attempt the database expects, or (when that attempt was given up on) as the first
complete result of the task; never twice.

A result must carry the nonce its attempt was sent with. One that does not is refused
and recorded as a task event, never scored; the attempt then counts as lost on its host
(the host answered, but not with this attempt's result): re-queued, or failed as
`host_lost` once it has been lost `max_attempts` times. A bundle the host refused (a
folder of its key was there already) goes back to the queue with no loss counted, to be
sent again as a new attempt; the folder that was there is left alone.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from datarun.dispatch.blends import BlendWorker
from datarun.dispatch.hoststate import HostState
from datarun.dispatch.job import SyncJob
from datarun.dispatch.lanes import Leftovers
from datarun.dispatch.problemcache import ProblemCache
from datarun.dispatch.results import (
    BadPredictions,
    ResultNotOurs,
    ResultRejected,
    SensitiveLeak,
    check_scores,
    read_result,
    read_sealed_result,
)
from datarun.errors import DatarunError
from datarun.executors.base import PollReport, SyncResult
from datarun.remote.common import DISK_FULL
from datarun.store import scores as stored_scores
from datarun.store import taskqueries, tasks
from datarun.store.blobs import BlobStore
from datarun.store.db import Database, transaction
from datarun.store.problems import names as problem_names
from datarun.store.task_events import record_event
from datarun.store.tasks import Outcome, Replaced, Task, TaskState
from datarun.store.workspace import Workspace


class HostFull(Exception):
    """A task's result says its host's disk filled up: a host fault, the task is re-queued."""


# A runner beats every second; one silent for this long gets no new task until it beats
# again (its tasks are given to others only after the host's grace period).
RUNNER_SLOW = 5.0


@dataclass
class PassReport:
    collected: list[int] = field(default_factory=list)
    launched: list[int] = field(default_factory=list)
    requeued: list[int] = field(default_factory=list)
    host_errors: dict[str, str] = field(default_factory=dict)
    scored_submissions: list[int] = field(default_factory=list)
    # Submissions a task of which failed in this pass (its error, a limit, its host lost
    # for the last time), each once: what `dispatch --json` and the hooks announce.
    failed_submissions: list[int] = field(default_factory=list)
    late: list[int] = field(default_factory=list)  # tasks whose given-up attempt came back

    def note_failed(self, submission: int) -> None:
        if submission not in self.failed_submissions:
            self.failed_submissions.append(submission)


class Collector:
    """Applies hosts' answers to the database: results, losses, leftovers, bagged scores."""

    def __init__(self, workspace: Workspace, db: Database, store: BlobStore, problems: ProblemCache,
                 leftovers: Leftovers, hosts: Mapping[str, HostState], max_attempts: int):
        self.workspace = workspace
        self.db = db
        self.store = store
        self.problems = problems
        self.to_blend: set[str] = set()  # problems with newly scored submissions
        self.blender = BlendWorker(workspace)
        self.leftovers = leftovers
        self.hosts = hosts
        self.max_attempts = max_attempts

    def apply(self, host: HostState, result: SyncResult, job: SyncJob, report: PassReport) -> None:
        """Read one sync's answer against the job that asked it."""
        name, poll = host.name, result.poll
        fetched = set(result.fetched)
        # A runner that holds its lock but has not written its heartbeat for the grace
        # period is frozen (a stopped or swapping host): its tasks will not move either.
        silent = poll.now - poll.runner_heartbeat if poll.runner_alive and poll.runner_heartbeat else 0.0
        frozen = silent > host.grace
        host.stalled = silent > RUNNER_SLOW
        lost: list[tuple[Task, str]] = []
        touched: dict[int, str] = {}
        never_arrived: list[Task] = []
        refused: list[Task] = []
        for key, task in job.polled.items():
            if key in result.refused:  # the host kept an older folder of that key: not ours
                refused.append(task)
                record_event(self.db, task.id, task.attempt, name, "bundle_refused",
                             f"host {name} refused the bundle: {result.refused[key]}")
                continue
            state = poll.tasks.get(key)
            if key in host.unconfirmed:
                host.unconfirmed.discard(key)
                if state is None or state.state == "missing":
                    never_arrived.append(task)  # its launch failed before the host had it
                    continue
            if key in fetched:
                try:
                    recorded = self.record_result(task, name, job.results / key)
                except HostFull as error:
                    host.disk_full = str(error)
                    lost.append((task, str(error)))
                    host.cleanup.add(key)
                    continue
                except ResultNotOurs as error:
                    reason = f"result from host {name} refused: {error}"
                    record_event(self.db, task.id, task.attempt, name, "result_refused", reason)
                    lost.append((task, reason))
                    continue
                if recorded:
                    report.collected.append(task.id)
                    touched[task.submission] = task.problem
                    if taskqueries.state_of(self.db, task.id) == TaskState.FAILED:
                        report.note_failed(task.submission)
                elif self.take_late(host, key, job.results / key, report, touched, task.nonce):
                    report.collected.append(task.id)
                if taskqueries.state_of(self.db, task.id) == TaskState.DONE:
                    host.cleanup.add(key)
                continue
            if state is not None and state.state == "lost":
                lost.append((task, state.reason or f"host {name} lost the task"))
            elif state is None or state.state == "missing":
                lost.append((task, f"host {name} has no trace of the task"))
            elif state.state in ("running", "queued") and not poll.runner_alive:
                if state.state == "running":
                    lost.append((task, f"the runner on host {name} died"))
            elif state.state in ("running", "queued") and frozen:
                lost.append((task, f"the runner on host {name} has not beaten for {silent:.0f}s"))
            elif state.state == "running" and state.heartbeat and poll.now - state.heartbeat > host.grace:
                lost.append((task, f"no heartbeat from the task on host {name} for "
                                   f"{poll.now - state.heartbeat:.0f}s"))
        self.lose([task for task, _ in lost], report, [reason for _, reason in lost])
        if never_arrived:
            self.unclaim(host, never_arrived)
        if refused:
            self.unclaim(host, refused, remember=False)
        self.tidy_leftovers(host, job.leftovers, poll, fetched, job.results, report, touched)
        for submission, problem in sorted(touched.items()):
            if self.finish_submission(submission):
                report.scored_submissions.append(submission)
                self.to_blend.add(problem)

    def lose(self, lost: list[Task], report: PassReport, reasons: str | list[str]) -> None:
        """Put tasks whose host was lost back in the queue, or fail them as host_lost after
        max_attempts losses.

        The lost attempts are remembered as leftovers of their hosts: if a host comes back,
        it is told to cancel them, and their late results are recognised, never counted twice.
        """
        if not lost:
            return
        if isinstance(reasons, str):
            reasons = [reasons] * len(lost)
        given_up: dict[str, dict[str, str | None]] = {}
        now = time.time()
        with transaction(self.db):
            for task, reason in zip(lost, reasons, strict=True):
                moved = tasks.lose(self.db, task, reason, self.max_attempts, now)
                if moved is None:
                    continue
                if moved == TaskState.FAILED:
                    report.note_failed(task.submission)
                report.requeued.append(task.id)
                if task.host is not None and task.host in self.hosts:  # one gone from hosts.toml is not asked
                    given_up.setdefault(task.host, {})[task.key] = task.nonce
        for name, keys in given_up.items():
            self.leftovers.add(name, keys)

    def unclaim(self, host: HostState, claimed: list[Task], remember: bool = True) -> None:
        """Back to the queue without counting a loss: the next launch gets a new attempt
        number and nonce, so a bundle that did reach the host can never be mistaken for it,
        and (with `remember`) the host is told to cancel and remove it once it answers again."""
        with transaction(self.db):
            for task in claimed:
                tasks.unclaim(self.db, task)
        if remember:
            self.leftovers.add(host.name, {task.key: task.nonce for task in claimed})

    def tidy_leftovers(self, host: HostState, keys: list[str], poll: PollReport, fetched: set[str],
                       results: Path, report: PassReport, touched: dict[int, str]) -> None:
        """Late results are recognised, what still runs is cancelled, what is gone is forgotten."""
        gone = []
        for key in keys:
            state = poll.tasks.get(key)
            if key in fetched:
                self.take_late(host, key, results / key, report, touched, self.leftovers.nonce(host.name, key))
                host.cleanup.add(key)
            elif state is None or state.state in ("missing", "lost"):
                gone.append(key)
            elif state.state == "finished":
                host.cleanup.add(key)
            else:
                host.to_cancel.add(key)
        self.leftovers.forget(host.name, gone)

    def take_late(self, host: HostState, key: str, folder: Path, report: PassReport,
                  touched: dict[int, str], nonce: str | None) -> bool:
        """A result of an attempt given up on (sent with `nonce`): counted only if it is that
        attempt's and the task has no result yet."""
        parsed = tasks.parse_key(key)
        task = taskqueries.get(self.db, parsed[0]) if parsed else None
        if parsed is None or task is None:
            return False
        report.late.append(task.id)
        late = replace(task, attempt=parsed[1], nonce=nonce)
        try:
            recorded = self.record_result(late, host.name, folder, late=True)
        except HostFull:
            return False  # a given-up attempt that ran out of disk decides nothing
        except ResultNotOurs as error:
            record_event(self.db, task.id, late.attempt, host.name, "result_refused",
                         f"result from host {host.name} refused: {error}")
            return False
        if recorded:
            touched[task.submission] = task.problem
        return recorded

    def record_result(self, task: Task, host_name: str, folder: Path, late: bool = False) -> bool:
        """Store one task's result; False if it was a late result of an attempt already given up.
        Raises ResultNotOurs, storing nothing, if the result is not the attempt's own (its
        nonce is not `task.nonce`).

        With `late`, the result of an attempt given up on is taken if it is a success and the
        task has no result yet (first complete result wins); the attempt that replaced it, if
        running, is then left to be cancelled on its host.
        """
        if late and not (folder / "result.json").is_file():
            return False
        problem = self.problems.problem(task.problem)
        if problem.get("sensitive"):
            return self.record_sealed(task, host_name, folder, problem, late)
        scorer = self.problems.scorer(task.problem)
        scores: list[tuple[str, str, float | None]] = []
        try:
            result = read_result(folder, task.key, *scorer.prediction_shapes(), nonce=task.nonce,
                                 probabilities=scorer.probabilities, keep_dtype=scorer.keeps_dtype)
        except ResultNotOurs:
            raise
        except BadPredictions as error:
            # The harness makes the same check; a host that skipped it changes nothing.
            bad = error.result
            assert bad is not None  # read_result sets it before raising
            outcome = self.outcome(TaskState.FAILED, bad.measures, bad.environment, bad.log, host_name,
                                   error_kind="bad_predictions",
                                   error=f"{error} (checked on the organiser's machine; sent by host {host_name})")
        except ResultRejected as error:
            outcome = Outcome(TaskState.FAILED, time.time(), error_kind="harness_error",
                              error=f"result from host {host_name} rejected: {error}",
                              environment={"host": host_name})
        else:
            if result.state == "failed" and result.error_kind == DISK_FULL:
                raise HostFull(f"host {host_name}: {result.error or 'no space left on its disk'}: "
                               "free some space there; its tasks went back to the queue")
            state = Outcome.state_of(result.state, result.error_kind)
            if late and state != TaskState.DONE:
                return False  # a failure (or our own cancel) of a given-up attempt decides nothing
            preds: tuple[str | None, str | None] = (None, None)
            if state == TaskState.DONE:
                scores = scorer.task_scores(task.fold, result.y_pred_train, result.y_pred_test)
                preds = (self.store.put_predictions(result.y_pred_train),
                         self.store.put_predictions(result.y_pred_test))
            outcome = self.outcome(state, result.measures, result.environment, result.log, host_name,
                                   error_kind=result.error_kind, error=result.error,
                                   pred_train=preds[0], pred_test=preds[1])
        if late and outcome.state != TaskState.DONE:
            return False
        return self.store_outcome(task, host_name, outcome, scores, late)

    def record_sealed(self, task: Task, host_name: str, folder: Path, problem: dict, late: bool) -> bool:
        """A sensitive problem's result: scores computed on its host, no predictions, no output.
        One that carries more is refused, recorded as a task event, and the task fails as
        `harness_error`; what it carried is deleted unread."""
        scores: list[tuple[str, str, float | None]] = []
        try:
            result, scores = read_sealed_result(folder, task.key, task.nonce, problem["score_names"])
        except ResultNotOurs:
            raise
        except ResultRejected as error:
            shutil.rmtree(folder, ignore_errors=True)
            if late:
                return False
            reason = f"result from host {host_name} refused: {error}"
            if isinstance(error, SensitiveLeak):
                reason = (f"result from host {host_name} refused for sensitive problem {problem['name']}: "
                          f"{error}: check that host's harness (`datarun host check {host_name}`)")
                record_event(self.db, task.id, task.attempt, host_name, "result_refused", reason)
            outcome = Outcome(TaskState.FAILED, time.time(), error_kind="harness_error", error=reason,
                              environment={"host": host_name})
        else:
            shutil.rmtree(folder, ignore_errors=True)
            state = Outcome.state_of(result.state, result.error_kind)
            if late and state != TaskState.DONE:
                return False
            outcome = self.outcome(state, result.measures, result.environment, b"", host_name,
                                   error_kind=result.error_kind, error=result.error)
        return self.store_outcome(task, host_name, outcome, scores, late)

    def store_outcome(self, task: Task, host_name: str, outcome: Outcome,
                      scores: list[tuple[str, str, float | None]], late: bool) -> bool:
        """Finish the task (late: the attempt given up on) and store its scores, in one
        transaction; False if the task moved on meanwhile. The attempt a late result makes
        redundant is cancelled and removed on its host (as a leftover)."""
        taken: Replaced | bool
        with transaction(self.db):
            if late:
                taken = tasks.finish_late(self.db, task.id, task.attempt, host_name, outcome)
            else:
                taken = tasks.finish(self.db, task, host_name, outcome)
            if not taken:
                return False
            stored_scores.replace_task_scores(self.db, task.id, scores)
        if isinstance(taken, Replaced) and taken.host is not None and taken.host in self.hosts:
            self.leftovers.add(taken.host, {taken.key: taken.nonce})
        return True

    def outcome(self, state: TaskState, measures: Mapping, environment: Mapping, log: bytes,
                host_name: str, **fields) -> Outcome:
        """A result's figures as the task's outcome; the log goes to the blob store."""
        peak = measures.get("peak_memory")
        return Outcome(
            state, time.time(),
            train_time=measures.get("train_time"), valid_time=measures.get("valid_time"),
            test_time=measures.get("test_time"), wall_time=measures.get("wall_time"),
            cpu_time=measures.get("cpu_time"), peak_memory=int(peak) if peak is not None else None,
            ran_from=measures.get("started_at"), ran_to=measures.get("finished_at"),
            log=self.store.put_bytes(log) if log else None,
            environment=dict(environment, host=host_name), **fields)

    def finish_submission(self, submission: int) -> bool:
        """Compute bagged scores once every fold is done; True if it was computed now."""
        folds = tasks.of_submission(self.db, submission)
        if not folds or any(task.state != TaskState.DONE for task in folds):
            return False
        if stored_scores.has_bagged(self.db, submission):
            return False
        problem = self.problems.problem(folds[0].problem)
        if problem.get("sensitive"):  # bagged on the host that keeps the predictions
            from datarun.board.sensitive import ask

            try:
                answer = ask(self.workspace, problem, {"op": "bag", "submissions": {
                    str(submission): [task.fold for task in folds]}})
                rows = (answer.get("bagged") or {}).get(str(submission))
                if rows is None:
                    return False  # its predictions are gone from the host (purged): it cannot be bagged
                checked = check_scores(rows, problem["score_names"])
            except (DatarunError, ResultRejected):
                return False  # no host answered, or not with numbers: asked again next pass
            # No curve (the bagged score of the first folds, for `export --ramp`, which a
            # sensitive problem refuses) and no note.
            stored_scores.set_bagged(self.db, submission, [(*row, None, None) for row in checked])
            return True
        preds_train, preds_test = [], []
        for task in folds:
            if task.pred_train is None or task.pred_test is None:
                return False  # a done task always has them; without, there is nothing to bag
            preds_train.append(self.store.get_array(task.pred_train))
            preds_test.append(self.store.get_array(task.pred_test))
        scores = self.problems.scorer(folds[0].problem).bagged_rows(
            [task.fold for task in folds], preds_train, preds_test)
        stored_scores.set_bagged(self.db, submission, scores)
        return True

    def blend(self) -> None:
        """Have the contributivity of the problems with newly scored submissions recomputed,
        on the blend worker's thread (off the dispatcher's critical path)."""
        if self.to_blend:
            self.blender.request(self.to_blend)
            self.to_blend.clear()

    def refresh_blends(self) -> None:
        """Bring every problem's blends up to date and wait for them. A board's submissions
        also change without a new result (an event's scores become public, a retried
        submission, a migration); a problem whose scopes are current costs a few queries."""
        for problem in problem_names(self.db):
            if self.problems.problem(problem).get("sensitive"):
                # A sensitive submission whose bagging found no host answering is bagged now.
                for submission in stored_scores.done_without_bagged(self.db, problem):
                    self.finish_submission(submission)
        self.blender.request(problem_names(self.db))
        self.blender.drain()

    def close(self) -> None:
        self.blender.close()
