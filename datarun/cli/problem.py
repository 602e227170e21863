"""`datarun problem add|list|show|remove`: register kits and look at registered problems.

The tables are built by pure functions (rows in, rich Table out) so they can be tested
at a fixed width without running a command.
"""

from pathlib import Path
from typing import Annotated

import typer

from datarun.cli.app import (
    JsonOption,
    app,
    emit_json,
    err,
    handled,
    open_workspace,
    print_renderable,
)

problem_app = typer.Typer(help="Register kits as problems and inspect them.", no_args_is_help=True)
app.add_typer(problem_app, name="problem")



def _duration(seconds: float | None) -> str:
    from datarun.sizes import format_duration

    return "none" if seconds is None else format_duration(seconds)


def _size(size: int | None) -> str:
    from datarun.sizes import format_size

    return "none" if size is None else format_size(size)


def _needs(resources: dict | None) -> str:
    from datarun.problems.resources import Needs

    if not resources:
        return "nothing special"
    return Needs(tuple(resources.get("tags") or ()), int(resources.get("gpus") or 0),
                 resources.get("memory"), resources.get("threads")).describe()


def problems_table(rows: list[dict]):
    """One line per registered problem."""
    from datarun.cli.render import Table, add_row

    table = Table(title="Problems", title_justify="left")
    for column, justify in (("name", "left"), ("kind", "left"), ("train", "right"),
                            ("test", "right"), ("features", "right"), ("cv", "left"),
                            ("scores", "left")):
        table.add_column(column, justify="right" if justify == "right" else "left",
                         no_wrap=column != "scores")
    for row in rows:
        cv = row["spec"]["cv"]
        add_row(
            table,
            row["name"], row["kind"], str(row["n_train"]), str(row["n_test"]),
            str(row["n_features"]), f"{cv['strategy']} x{row.get('n_folds', cv['n_splits'])}",
            ", ".join(row["score_names"]),
        )
    return table


def problem_overview_table(info: dict):
    """The problem's settings: data shape, cv, workflow, scores, limits."""
    from datarun.cli.render import Table, add_row

    table = Table(title=f"{info['name']}: {info['title']}", title_justify="left",
                  show_header=False)
    table.add_column("", style="bold")
    table.add_column("")
    scores = ", ".join(
        f"{s['name']} ({'lower' if s['lower_is_better'] else 'higher'} is better"
        f"{', official' if s['official'] else ''})" for s in info["scores"]
    )
    limits = info["limits"]
    for key, value in (
        ("kind", info["kind"]),
        ("target", info["target"]),
        ("data", f"{info['n_train']} train rows, {info['n_test']} test rows, "
                 f"{info['n_features']} features"),
        ("features", ", ".join(info["columns"])),
        ("classes", ", ".join(map(str, info["classes"])) if info["classes"] else "-"),
        ("workflow", info["workflow"]),
        ("test split", info["split"]["test"]["text"]),
        ("cv", info["split"]["folds"]["text"]),
        ("scores", scores),
        ("limits", f"wall time {_duration(limits['wall_time'])}, cpu time "
                   f"{_duration(limits['cpu_time'])}, memory {_size(limits['memory'])}"),
        ("needs", _needs(info.get("resources"))),
    ):
        add_row(table, key, value)
    return table


def balance_table(info: dict):
    """Class counts (classification) or the target's spread (regression), train and test."""
    from datarun.cli.render import Table, add_row

    summary = info["target_summary"]
    if info["kind"] == "classification":
        table = Table(title="Class balance", title_justify="left")
        for column in ("class", "train", "test"):
            table.add_column(column, justify="left" if column == "class" else "right")
        for label in map(str, info["classes"]):
            add_row(table, label, str(summary["train"].get(label, 0)),
                    str(summary["test"].get(label, 0)))
        return table
    table = Table(title="Target", title_justify="left")
    for column in ("split", "mean", "std", "min", "max"):
        table.add_column(column, justify="left" if column == "split" else "right")
    for split in ("train", "test"):
        stats = summary[split]
        add_row(table, split, *("-" if stats.get(k) is None else f"{stats[k]:.4g}"
                                for k in ("mean", "std", "min", "max")))
    return table


def folds_table(info: dict):
    from datarun.cli.render import Table, add_row

    table = Table(title="Folds", title_justify="left")
    for column in ("fold", "train rows", "valid rows"):
        table.add_column(column, justify="right")
    for fold in info["folds"]:
        add_row(table, str(fold["fold"]), str(fold["n_train"]), str(fold["n_valid"]))
    return table


def problem_view(info: dict):
    """Everything `problem show` prints, as one renderable."""
    from rich.console import Group

    if info.get("sensitive"):  # no labels here: no class balance
        return Group(problem_overview_table(info), folds_table(info))
    return Group(problem_overview_table(info), balance_table(info), folds_table(info))


def _parse_env(pairs: list[str]) -> dict[str, str]:
    from datarun.errors import UsageError

    variables = {}
    for pair in pairs:
        name, equals, value = pair.partition("=")
        if not equals:
            raise UsageError(f"--env takes NAME=VALUE, got {pair!r}")
        variables[name] = value
    return variables


@problem_app.command("add")
def add(
    kit: Annotated[Path, typer.Argument(
        help="The kit folder (holding problem.toml, or a RAMP kit's problem.py).")],
    env: Annotated[list[str] | None, typer.Option(
        "--env", metavar="NAME=VALUE",
        help="RAMP kits: a variable the kit's code reads (RAMP_TEST_MODE=1), set at "
        "registration and in every task; repeatable. Nothing else of this environment "
        "named RAMP_* reaches the kit.")] = None,
    data_file_cap: Annotated[str | None, typer.Option(
        "--data-file-cap", metavar="SIZE",
        help="RAMP kits: the size cap of a submission's data file (a workflow element such "
        "as external_data.csv), e.g. 100MB (default 50 MB). Code files stay at 512 kB.")] = None,
    needs: Annotated[list[str] | None, typer.Option(
        "--needs", metavar="KEY=VALUE",
        help="What a host must offer each task, over the kit's [resources]: tags=gpu,big, "
             "gpus=1, memory=8GB, threads=4 (repeatable).")] = None,
    sensitive: Annotated[bool, typer.Option(
        "--sensitive", help="Its data stays on its owner's host (--host), prepared there by "
        "`datarun owner prepare`; KIT is the public kit, without data.")] = False,
    host: Annotated[list[str] | None, typer.Option(
        "--host", help="A host holding the sensitive problem's data (repeat for several).")] = None,
    manifest: Annotated[Path | None, typer.Option(
        "--manifest", help="The manifest `datarun owner prepare --json` printed.")] = None,
    json_out: JsonOption = False,
) -> None:
    """Register a kit: read and check its data, split the test set, freeze the folds."""
    with handled():
        from datarun.errors import UsageError
        from datarun.executors.floors import check_memory_limit
        from datarun.problems.registry import register_problem
        from datarun.problems.resources import parse_needs

        variables = _parse_env(env or [])
        cap = None
        if data_file_cap is not None:
            from datarun.sizes import parse_size

            cap = parse_size(data_file_cap, "--data-file-cap")
        from datarun.prefetch import take

        table = parse_needs(needs or [])
        workspace, db = open_workspace()
        if sensitive:
            from datarun.board.sensitive import register

            if manifest is None:
                raise UsageError("a sensitive problem needs --manifest FILE, the manifest `datarun owner "
                                 "prepare --json` printed on the data owner's host")
            info = register(workspace, db, kit, list(host or []), manifest, data_file_cap=cap)
        elif host or manifest:
            raise UsageError("--host and --manifest are for a sensitive problem: add --sensitive")
        else:
            head_start = take(kit, variables)  # the kit read while the CLI loaded (launch.py)
            try:
                info = register_problem(workspace, db, kit, env=variables, data_file_cap=cap,
                                        prepared=head_start.result if head_start else None, needs=table or None,
                                        check_memory=lambda limit, where: check_memory_limit(workspace, db, limit, where))
            finally:
                if head_start is not None:
                    head_start.discard()
    for note in info.get("notes", []):
        err(f"note: {note}")
    if json_out:
        emit_json("problem", info)
        return
    split = info["split"]
    err(f"Registered problem {info['name']!r}: {info['n_train']} train rows, {info['n_test']} "
        f"test rows, {info['n_features']} features, {len(info['folds'])} folds")
    if info.get("sensitive"):
        err(f"sensitive: its data, labels and predictions stay on {', '.join(info['sensitive']['hosts'])}")
    err(f"test split: {split['test']['text']}; folds: {split['folds']['text']}")
    print_renderable(problem_view(info))


@problem_app.command("list")
def list_command(json_out: JsonOption = False) -> None:
    """List the registered problems."""
    with handled():
        from datarun.problems.registered import list_problems

        _, db = open_workspace()
        rows = list_problems(db)
    if json_out:
        emit_json("problem-list", {"problems": [
            {"name": r["name"], "title": r["title"], "kind": r["kind"], "workflow": r["workflow"],
             "n_train": r["n_train"], "n_test": r["n_test"], "n_features": r["n_features"],
             "n_folds": r["n_folds"], "cv": r["spec"]["cv"], "scores": r["score_names"],
             "limits": r["limits"], "created_at": r["created_at"]}
            for r in rows
        ]})
        return
    if not rows:
        err("No problems registered yet: run `datarun problem add KIT`.")
        return
    print_renderable(problems_table(rows))


@problem_app.command("show")
def show(
    name: Annotated[str, typer.Argument(help="The problem's name.")],
    json_out: JsonOption = False,
) -> None:
    """Show a problem: data shape, class balance, folds, scores, limits."""
    with handled():
        from datarun.problems.registered import describe_problem

        workspace, db = open_workspace()
        info = describe_problem(workspace, db, name)
    if json_out:
        emit_json("problem", info)
        return
    print_renderable(problem_view(info))


@problem_app.command("remove")
def remove(
    name: Annotated[str, typer.Argument(help="The problem's name.")],
    force: Annotated[bool, typer.Option(
        "--force", help="Remove it even though it has submissions (they, their scores and the "
        "problem's events go with it).")] = False,
    json_out: JsonOption = False,
) -> None:
    """Remove a problem (refused while it has submissions, unless --force; always while one
    of its tasks runs). Recorded (`datarun history`)."""
    from datarun.challenge.submissions import remove_problem

    with handled():
        _, db = open_workspace()
        result = remove_problem(db, name, force=force)
    if json_out:
        emit_json("problem-remove", result)
    else:
        err(f"problem {result['name']} removed, with {result['submissions']} submissions and "
            f"{result['events']} events")


@problem_app.command("check")
def check(
    name: Annotated[str, typer.Argument(help="The sensitive problem's name.")],
    json_out: JsonOption = False,
) -> None:
    """Ask a sensitive problem's hosts whether they answer, refuse its tasks, or lost (purged)
    predictions: submissions whose predictions are gone can no longer be bagged anew nor blended."""
    with handled():
        from datarun.board.sensitive import check_problem

        workspace, db = open_workspace()
        report = check_problem(workspace, db, name)
    if json_out:
        emit_json("problem-check", report)
        return
    for host, state in report["hosts"].items():
        if not state["answered"]:
            err(f"host {host}: no answer: {state['error']}")
            continue
        gone = state["predictions_gone"]
        err(f"host {host}: {'refuses' if state['refuses_tasks'] else 'runs'} the tasks of {name}; "
            + (f"predictions gone (purged) for submissions {', '.join(f'#{s}' for s in gone)}: they can "
               "no longer be bagged anew nor blended" if gone else "every done submission's predictions kept"))
