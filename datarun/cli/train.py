"""`datarun train`, `datarun dispatch` and `datarun status`."""

from typing import Annotated

import typer

from datarun.cli.app import (
    JsonOption,
    app,
    emit_json,
    err,
    err_hosts,
    handled,
    open_workspace,
    print_renderable,
    warn_unsandboxed,
)
from datarun.errors import EXIT_FAILED, EXIT_INTERRUPTED

MaxAttempts = Annotated[int, typer.Option(
    "--max-attempts", help="Times a task's host may be lost under it before it fails as host_lost.")]


def err_unfit(unfit: list[dict], prefix: str = "") -> None:
    """One `error:` line per group of queued tasks that fit no host (after `prefix`: the
    time, in `dispatch`)."""
    for group in unfit:
        err(f"{prefix}error: {group['reason']}")


def _limits(wall_time: str | None, cpu_time: str | None, memory: str | None):
    from datarun.dispatch.dispatcher import Limits
    from datarun.sizes import parse_duration, parse_size

    return Limits(
        wall_time=parse_duration(wall_time, "--wall-time") if wall_time else None,
        cpu_time=parse_duration(cpu_time, "--cpu-time") if cpu_time else None,
        memory=parse_size(memory, "--memory") if memory else None,
    )


@app.command()
def train(
    problem: Annotated[str | None, typer.Option("--problem", help="Only this problem's tasks.")] = None,
    submission: Annotated[int | None, typer.Option("--submission", help="Only this submission's tasks.")] = None,
    wall_time: Annotated[str | None, typer.Option("--wall-time", help="Lower the wall-time limit per task, e.g. 30s.")] = None,
    cpu_time: Annotated[str | None, typer.Option("--cpu-time", help="Lower the CPU-time limit per task, e.g. 1m.")] = None,
    memory: Annotated[str | None, typer.Option("--memory", help="Lower the memory limit per task, e.g. 1GB.")] = None,
    max_attempts: MaxAttempts = 3,
    json_out: JsonOption = False,
) -> None:
    """Run the queued tasks until they are done, with a progress bar on stderr."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from datarun.dispatch.train import train as train_core

    console = Console(stderr=True)
    with handled():
        limits = _limits(wall_time, cpu_time, memory)
        workspace, db = open_workspace()
        if limits.memory is not None:
            from datarun.executors.floors import check_memory_limit

            check_memory_limit(workspace, db, limits.memory, "--memory")
        warn_unsandboxed(workspace)
        with Progress(TextColumn("training"), BarColumn(), MofNCompleteColumn(),
                      TextColumn("{task.fields[detail]}"), TimeElapsedColumn(),
                      console=console, transient=False, disable=json_out) as progress:
            bar = progress.add_task("train", total=None, detail="")

            def on_progress(counts: dict[str, int]) -> None:
                finished = counts["done"] + counts["failed"] + counts["cancelled"]
                detail = f"{counts['running']} running, {counts['failed']} failed" + (
                    f", {counts['cancelled']} cancelled" if counts["cancelled"] else "")
                progress.update(bar, total=counts["total"], completed=finished, detail=detail)

            def on_unfit(lines: list[str]) -> None:
                for line in lines:
                    progress.console.print(f"error: {line}", markup=False, highlight=False, soft_wrap=True)

            try:
                summary = train_core(workspace, db, problem=problem, submission=submission, limits=limits,
                                     on_progress=on_progress, max_attempts=max_attempts,
                                     on_wait=lambda: err("waiting for another dispatcher to finish..."),
                                     on_unfit=on_unfit if not json_out else None)
            except KeyboardInterrupt:
                progress.stop()
                _say_interrupted(db)
                raise typer.Exit(EXIT_INTERRUPTED) from None
    err_hosts(summary["host_errors"])
    for line in summary["hook_failures"]:
        err(line)
    if json_out:
        err_unfit(summary["unfit"])
    if json_out:
        emit_json("train", summary)
    else:
        cancelled = f", {summary['cancelled']} cancelled" if summary["cancelled"] else ""
        unfit = sum(len(u["tasks"]) for u in summary["unfit"])
        left = f", {unfit} left queued: they fit no host (above)" if unfit else ""
        err(f"{summary['done']} done, {summary['failed']} failed{cancelled} of {summary['tasks']} tasks "
            f"in {summary['wall_time']:.1f}s{left}")
    # Exit 1 unless every task it was asked to run is done: failed, cancelled, or left queued.
    if summary["failed"] or summary["cancelled"] or summary["queued"] or summary["host_errors"]:
        raise typer.Exit(EXIT_FAILED)


def _say_interrupted(db) -> None:
    """What keeps running where after Ctrl-C, and how to stop it (a second Ctrl-C while
    this is read leaves at once)."""
    from datarun.dispatch.train import interrupted_lines, left_running
    from datarun.store import taskqueries

    try:
        lines = interrupted_lines(left_running(db), taskqueries.count_queued(db))
    except (KeyboardInterrupt, Exception):  # the database busy or gone: say what is sure
        lines = ["interrupted: tasks may keep running on their hosts; `datarun status` lists "
                 "them, `datarun cancel SUBMISSION` stops them"]
    for line in lines:
        err(line)


@app.command()
def dispatch(max_attempts: MaxAttempts = 3, json_out: JsonOption = False) -> None:
    """One pass, for cron: collect finished tasks, re-queue lost ones, launch queued ones."""
    from datarun.dispatch.train import dispatch_once

    with handled():
        workspace, db = open_workspace()
        summary = dispatch_once(workspace, db, max_attempts=max_attempts)
    # Each line says when: cron appends them to one log.
    stamp = _now_iso()
    for host, message in summary["host_errors"].items():
        named = message.startswith((f"host {host}:", f"host {host} "))
        err(f"{stamp} " + (message if named else f"host {host}: {message}"))
    err_unfit(summary["unfit"], prefix=f"{stamp} ")
    for line in summary["hook_failures"]:
        err(f"{stamp} {line}")
    if json_out:
        emit_json("dispatch", summary)
    else:
        news = "".join(f"; {what} {', '.join(map(str, ids))}" for what, ids in (
            ("scored", summary["scored_submissions"]), ("failed", summary["failed_submissions"])) if ids)
        err(f"{stamp} collected {summary['collected']}, launched {summary['launched']}, "
            f"re-queued {summary['requeued']}{news}")
    # Exit 1 when a host failed, or when queued tasks can never run as hosts.toml stands.
    if summary["host_errors"] or summary["unfit"]:
        raise typer.Exit(EXIT_FAILED)


def _now_iso() -> str:
    import datetime as dt

    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@app.command()
def status(json_out: JsonOption = False) -> None:
    """Queued, running, done, failed and cancelled tasks per problem and per host."""
    from datarun.dispatch.status import workspace_status

    with handled():
        workspace, db = open_workspace()
        report = workspace_status(workspace, db)
    for warning in report["warnings"]:
        err(warning)
    if json_out:
        emit_json("status", report)
        return
    from datarun.cli.render import status_tables

    print_renderable(f"workspace {report['workspace']['root']} (id {report['workspace']['id']})")
    for table in status_tables(report):
        print_renderable(table)
    for group in report["unfit"]:
        print_renderable(f"waiting for no host: {group['reason']}")
