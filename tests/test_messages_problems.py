"""Kit and demo error messages that no other test triggered: a TOML boolean where
problem.toml wants a duration, and `datarun demo` run without the examples/ folder (an
installed wheel, not a clone)."""

import functools

import pytest
from test_operator import small_kit


def refused(result, exit_code: int, message: str) -> None:
    assert result.exit_code == exit_code, (result.exit_code, result.stderr)
    assert result.stderr == f"error: {message}\n"
    # Nothing on stdout, or under --json the error object (docs/JSON.md).
    assert result.stdout == "" or result.json()["error"]["message"] == message


@pytest.mark.parametrize(("limits", "message"), [
    ("wall_time = true", "[limits] wall_time: expected a duration like '30s', '10m' or '2h', got true"),
    ("cpu_time = false", "[limits] cpu_time: expected a duration like '30s', '10m' or '2h', got false"),
])
def test_a_boolean_limit_in_problem_toml_is_refused(workspace, cli, tmp_path, limits, message):
    kit = small_kit(tmp_path)
    toml = (kit / "problem.toml").read_text()
    (kit / "problem.toml").write_text(toml.replace('wall_time = "60s"', limits))
    refused(cli("problem", "add", kit), 2, f"problem.toml: {message}")
    assert cli("problem", "list", "--json").json()["problems"] == []  # nothing registered


def test_the_demo_without_its_examples_folder_says_where_it_looked(cli, tmp_path, monkeypatch):
    import datarun.demo

    missing = tmp_path / "site-packages" / "examples"
    monkeypatch.setattr(datarun.demo, "run_demo",
                        functools.partial(datarun.demo.run_demo, examples=missing))
    message = f"no examples/ folder at {missing}: run the demo from a clone of datarun"
    refused(cli("demo", "--dir", tmp_path / "demo", "--json"), 2, message)
    assert not (tmp_path / "demo").exists()  # no workspace made
    # Without --json too the refusal is one line: the bar only appears once training runs.
    refused(cli("demo", "--dir", tmp_path / "demo"), 2, message)
    assert not (tmp_path / "demo").exists()
