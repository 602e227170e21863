"""The layering written in pyproject.toml ([tool.importlinter]) holds, and would catch a breach."""

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LINT = Path(sys.executable).with_name("lint-imports")


def lint(cwd: Path, pythonpath: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(LINT), "--config", str(cwd / "pyproject.toml"), "--no-cache"],
                          cwd=cwd, capture_output=True, text=True,
                          env={"PYTHONPATH": str(pythonpath), "PATH": "/usr/bin:/bin"})


def test_the_import_contracts_are_kept():
    result = lint(REPO, REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "broken" not in result.stdout.split("Contracts:")[-1].replace("0 broken", "")


def test_a_harness_module_importing_datarun_breaks_a_contract(tmp_path):
    """Negative control: the same contracts on a copy where the harness imports the store."""
    shutil.copytree(REPO / "datarun", tmp_path / "datarun",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    common = tmp_path / "datarun" / "remote" / "common.py"
    common.write_text(common.read_text() + "\nfrom datarun.store import db  # noqa\n")
    result = lint(tmp_path, tmp_path)
    assert result.returncode != 0
    assert "the harness imports nothing of datarun BROKEN" in result.stdout
    assert "datarun.remote.common -> datarun.store.db" in result.stdout


def test_a_store_module_importing_an_executor_breaks_the_layers(tmp_path):
    shutil.copytree(REPO / "datarun", tmp_path / "datarun",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    blobs = tmp_path / "datarun" / "store" / "blobs.py"
    blobs.write_text(blobs.read_text() + "\nfrom datarun.executors import base  # noqa\n")
    result = lint(tmp_path, tmp_path)
    assert result.returncode != 0
    assert "datarun.store.blobs -> datarun.executors.base" in result.stdout


def test_a_site_module_importing_the_cli_breaks_the_layers(tmp_path):
    """The site reads the board, never the CLI (and the demo, above it, may write the site)."""
    shutil.copytree(REPO / "datarun", tmp_path / "datarun",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    model = tmp_path / "datarun" / "site" / "model.py"
    model.write_text(model.read_text() + "\nfrom datarun.cli import render  # noqa\n")
    result = lint(tmp_path, tmp_path)
    assert result.returncode != 0
    assert "datarun.site.model -> datarun.cli.render" in result.stdout


def test_a_cycle_hidden_in_a_function_level_import_breaks_a_contract(tmp_path):
    """Negative control: store/db.py reaching back into store/workspace.py, inside a function."""
    shutil.copytree(REPO / "datarun", tmp_path / "datarun",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    db = tmp_path / "datarun" / "store" / "db.py"
    db.write_text(db.read_text() + "\n\ndef _later():\n    from datarun.store import workspace  # noqa\n")
    result = lint(tmp_path, tmp_path)
    assert result.returncode != 0
    assert "no import cycles among the modules of a package BROKEN" in result.stdout
    assert "No cycles are allowed in datarun.store" in result.stdout


def _strings(path: Path) -> list[str]:
    """The string literals of a module but its docstrings (f-strings' literal parts included)."""
    import ast

    tree = ast.parse(path.read_text())
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docstrings.add(id(first.value))
    return [node.value for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings]


def test_executors_take_a_hosts_folder_layout_from_the_harness():
    """remote/common.Layout says where things live on a host; no executor spells it again."""
    spelled = {".complete", "tasks/", "data/", "y_pred", "inbox", "runner.json", "workspaces/"}
    found = {f"{path.name}: {text!r}" for path in (REPO / "datarun" / "executors").glob("*.py")
             for text in _strings(path) if any(part in text for part in spelled)}
    assert found == set()
    # The check reads what it should: the harness spells the layout, in one place.
    assert any(".complete" in text for text in _strings(REPO / "datarun" / "remote" / "common.py"))
