"""`datarun owner prepare|refuse|allow|errors|purge`: the data owner's commands, run on
the owner's own server, on the host workdir its organiser's hosts.toml names."""

from pathlib import Path
from typing import Annotated

import typer

from datarun.cli.app import app, emit_json, err, handled

owner_app = typer.Typer(help="The data owner's side of a sensitive problem (run on the owner's server).",
                        no_args_is_help=True)
app.add_typer(owner_app, name="owner")

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")]
Workdir = Annotated[Path, typer.Option("--workdir", help="The host's workdir (hosts.toml's `workdir`).")]
Problem = Annotated[str, typer.Argument(help="The sensitive problem's name.")]


@owner_app.command("prepare")
def prepare(
    kit: Annotated[Path, typer.Argument(help="The kit folder with its private data.")],
    workdir: Workdir = Path("~/.datarun-host"),
    env: Annotated[list[str] | None, typer.Option(
        "--env", metavar="NAME=VALUE",
        help="RAMP kits: a variable the kit's code reads, as `problem add --env` gives it; repeatable.")] = None,
    json_out: JsonOption = False,
) -> None:
    """Split and fold the kit's data exactly as `problem add` would (a native kit's
    problem.toml, or a RAMP kit's own get_train_data, get_test_data and get_cv), keep it in
    WORKDIR, print the manifest (hashes and sizes, no data) to hand to the organiser."""
    import json

    with handled():
        from datarun.cli.problem import _parse_env
        from datarun.problems.owner import prepare_owned

        manifest = prepare_owned(kit, workdir, _parse_env(env or []))
    if json_out:
        emit_json("owner-manifest", manifest)
        return
    err(f"Prepared {manifest['problem']!r} in {workdir}: {manifest['n_train']} train rows, "
        f"{manifest['n_test']} test rows, {len(manifest['folds'])} folds; data {manifest['data_hash'][:12]}...")
    err("Give the organiser this manifest (it holds no data):")
    typer.echo(json.dumps(manifest, indent=1))


def _flag(workdir: Path, problem: str, flag: str, on: bool, json_out: bool, said: str) -> None:
    with handled():
        from datarun.problems.owner import set_flag

        state = set_flag(workdir, problem, flag, on)
    if json_out:
        emit_json("owner-flags", state)
        return
    err(said.format(problem=state["problem"]))


@owner_app.command("refuse")
def refuse(problem: Problem, workdir: Workdir = Path("~/.datarun-host"), json_out: JsonOption = False) -> None:
    """Refuse every new task of the problem on this host (running ones finish)."""
    from datarun.remote.sensitive import REFUSE

    _flag(workdir, problem, REFUSE, True, json_out, "This host now refuses the tasks of {problem}.")


@owner_app.command("allow")
def allow(problem: Problem, workdir: Workdir = Path("~/.datarun-host"), json_out: JsonOption = False) -> None:
    """Run the problem's tasks on this host again."""
    from datarun.remote.sensitive import REFUSE

    _flag(workdir, problem, REFUSE, False, json_out, "This host runs the tasks of {problem} again.")


@owner_app.command("errors")
def errors(
    problem: Problem,
    off: Annotated[bool, typer.Option("--off/--on", help="--off: errors leave as their kind alone.")] = True,
    workdir: Workdir = Path("~/.datarun-host"),
    json_out: JsonOption = False,
) -> None:
    """Whether a failed task's error text (an exception's class, a limit's message) leaves the host."""
    from datarun.remote.sensitive import NO_ERROR_TEXT

    _flag(workdir, problem, NO_ERROR_TEXT, off, json_out,
          "Errors of {problem} now leave this host as their kind alone." if off
          else "Errors of {problem} leave this host with their bounded text again.")


@owner_app.command("purge")
def purge(problem: Problem, workdir: Workdir = Path("~/.datarun-host"), json_out: JsonOption = False) -> None:
    """Delete every prediction of the problem kept on this host (its scores stay with the organiser)."""
    with handled():
        from datarun.problems.owner import purge as purge_predictions

        done = purge_predictions(workdir, problem)
    if json_out:
        emit_json("owner-purge", done)
        return
    err(f"Purged the predictions of {len(done['purged'])} submissions of {done['problem']}: they can no "
        "longer be bagged anew nor blended.")
