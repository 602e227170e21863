"""`mypy datarun` reports no error (the settings are pyproject.toml's [tool.mypy])."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def mypy(*targets: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"),
                           *targets], cwd=cwd, capture_output=True, text=True, timeout=600)


def test_the_package_type_checks():
    result = mypy("datarun")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Success: no issues found" in result.stdout


def test_the_check_sees_a_type_error(tmp_path):
    # The negative control: the same settings report a wrong argument type.
    (tmp_path / "wrong.py").write_text("def f(x: int) -> int:\n    return x\n\n\nf('one')\n")
    result = mypy(str(tmp_path / "wrong.py"), cwd=tmp_path)
    assert result.returncode == 1
    assert 'incompatible type "str"; expected "int"' in result.stdout
