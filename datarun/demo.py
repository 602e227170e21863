"""`datarun demo`: the whole flow on the example kits, on the local host.

It makes a fresh workspace, registers every kit in `examples/`, submits each kit's example
submissions (two of which fail on purpose: one raises in `fit`, one exceeds its memory
limit), trains them on the embedded local host, writes the public site (`datarun site`)
into the workspace's `site/` folder, and returns the leaderboards, the failures and the
site's index. Nothing outside the new workspace is touched.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from datarun.board.leaderboard import leaderboard
from datarun.challenge.submissions import submit
from datarun.dispatch.runners import stop_runners, warm_runners
from datarun.dispatch.train import train
from datarun.errors import UsageError
from datarun.problems.registry import register_problem
from datarun.site import build_site
from datarun.store.db import Database, open_db
from datarun.store.submissions import failures
from datarun.store.workspace import Workspace, init_workspace

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
TEAMS = ("ada", "grace", "alan", "barbara", "edsger", "margaret", "donald", "frances")


def example_kits(examples: Path = EXAMPLES) -> list[Path]:
    if not examples.is_dir():
        raise UsageError(f"no examples/ folder at {examples}: run the demo from a clone of datarun")
    return sorted(p for p in examples.iterdir() if (p / "problem.toml").exists())


def run_demo(directory: Path | None = None, on_progress: Callable[[dict[str, int]], None] | None = None,
             examples: Path = EXAMPLES) -> dict[str, Any]:
    kits = example_kits(examples)
    root = Path(directory) if directory else Path(tempfile.mkdtemp(prefix="datarun-demo-")) / "workspace"
    workspace = init_workspace(root)
    db = open_db(workspace)
    problems: list[str] = []
    submitted: list[dict[str, Any]] = []
    try:
        _register_and_submit(workspace, db, kits, problems, submitted)
        summary = train(workspace, db, on_progress=on_progress)
    finally:
        stop_local_runner(workspace)
    site = build_site(workspace, db, workspace.root / "site")
    return {
        "workspace": str(workspace.root),
        "site": site["index"],
        "problems": problems,
        "submissions": submitted,
        "train": summary,
        "leaderboards": [leaderboard(db, name) for name in problems],
        "failures": failures(db),
    }


def _register_and_submit(workspace: Workspace, db: Database, kits: list[Path], problems: list[str],
                         submitted: list[dict[str, Any]]) -> None:
    warm_runners(workspace)  # its imports overlap with registering the kits
    for kit in kits:
        problem = register_problem(workspace, db, kit)
        problems.append(problem["name"])
        for index, folder in enumerate(sorted(p for p in (kit / "submissions").iterdir() if p.is_dir())):
            submitted.append(submit(workspace, db, problem["name"], folder, team=TEAMS[index % len(TEAMS)]))


def stop_local_runner(workspace: Workspace) -> None:
    """The demo leaves no process behind: stop the local host's runner once training is over."""
    stop_runners(workspace)
