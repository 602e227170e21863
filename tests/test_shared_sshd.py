"""The SSH tests' shared servers are defined once, in conftest.py.

pytest makes one fixture definition per module that defines or imports a fixture, so a
session fixture imported into a test module is a server of that module's own: a whole run
would start one sshd per module again. A module that needs a server of its own says so
with `sshd_fresh` or `start_sshd()`, never under the shared names.
"""

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent
SHARED = {"sshd_a", "sshd_b"}


def definitions(path: Path) -> list[str]:
    """Where a file defines or imports one of the shared names: `name (line)`."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.FunctionDef) and node.name in SHARED:
            found.append(f"{node.name} ({node.lineno})")
        elif isinstance(node, ast.ImportFrom):
            found += [f"{alias.name} ({node.lineno})" for alias in node.names
                      if (alias.asname or alias.name) in SHARED or alias.name == "*"]
    return found


def test_sshd_a_and_sshd_b_are_defined_in_conftest_alone():
    elsewhere = {path.name: definitions(path) for path in sorted(TESTS.glob("*.py"))
                 if path.name != "conftest.py" and definitions(path)}
    assert elsewhere == {}
    # The scan sees a definition where there is one, and the import that made one per module.
    assert {found.split()[0] for found in definitions(TESTS / "conftest.py")} == SHARED


def test_the_scan_finds_a_module_importing_the_shared_servers(tmp_path):
    module = tmp_path / "test_x.py"
    module.write_text("from sshd import pin, sshd_a, sshd_b  # noqa: F401\n")
    assert definitions(module) == ["sshd_a (1)", "sshd_b (1)"]
