"""`datarun site`."""

from pathlib import Path
from typing import Annotated

import typer

from datarun.cli.app import JsonOption, app, emit_json, err, handled, open_workspace


@app.command("site")
def site_command(
    out: Annotated[Path, typer.Argument(metavar="OUT", help="The folder to write the site in (new, empty, or "
                                        "holding a site `datarun site` wrote).")],
    problem: Annotated[str | None, typer.Option("--problem", help="Only this problem's events.")] = None,
    event: Annotated[str | None, typer.Option("--event", help="Only this event.")] = None,
    private: Annotated[bool, typer.Option(
        "--private", help="Organisers: test scores, scores not yet public, code, hosts. Write it "
        "to a folder no participant can read.")] = False,
    json_out: JsonOption = False,
) -> None:
    """Write a static site: leaderboards, a page per submission, plots (HTML, CSS, SVG).

    Incremental: only the pages whose data changed are written again, each atomically, so
    it can run from cron after `datarun dispatch` or from a hook.
    """
    from datarun.site import build_site

    with handled():
        workspace, db = open_workspace()
        result = build_site(workspace, db, out, problem=problem, event=event, private=private)
    if json_out:
        emit_json("site", result)
        return
    err(f"site: {len(result['written'])} files written, {result['unchanged']} unchanged, "
        f"{len(result['removed'])} removed")
    print(result["index"])
