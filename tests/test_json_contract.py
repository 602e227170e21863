"""The JSON contract (docs/JSON.md): every `--json` output, run for real through the CLI as
a subprocess, is validated against its schema (docs/schema/), and a command that takes
`--json` without a case here (or in the test named in COVERED_ELSEWHERE) fails the test,
so a new command cannot ship without its schema.
"""

import json
import os
import re
import subprocess
import sys

import pytest
import sitedata
from conftest import EXAMPLES, REPO
from contract import SCHEMAS, validate

# The one workspace every case runs in: tests/sitedata.py's (five submissions in three
# events, scores written, one failed fold, one event whose scores are not public yet).
# Each case: (arguments, the exit code it must end with). They run in this order.
CASES = [
    (["init", "{tmp}/other", "--json"], 0),
    (["problem", "add", EXAMPLES / "diabetes", "--json"], 0),
    (["problem", "list", "--json"], 0),
    (["problem", "show", "iris", "--json"], 0),
    (["submit", "iris", sitedata.SUBMISSIONS / "knn", "--team", "zed", "--json"], 0),
    (["submission", "list", "--json"], 0),
    (["submission", "show", "{ada}", "--json"], 0),
    (["submission", "show", "{eve}", "--json", "--private"], 0),
    (["submission", "show", "{ada}", "--code", "--json"], 0),
    (["event", "add", "autumn", "--problem", "iris", "--closes", "2030-01-01", "--json"], 0),
    (["event", "list", "--json"], 0),
    (["event", "show", "secret", "--json"], 0),
    (["leaderboard", "iris", "--json"], 0),
    (["leaderboard", "iris", "--event", "secret", "--json"], 0),
    (["leaderboard", "iris", "--private", "--json"], 0),
    (["status", "--json"], 0),
    (["host", "add", "node1", "--address", "node1.example.org", "--json"], 0),
    (["host", "list", "--json"], 0),
    (["host", "remove", "node1", "--json"], 0),
    (["host", "check", "local", "--json"], 0),
    (["host", "clean", "local", "--json"], 0),
    (["submit", "diabetes", EXAMPLES / "diabetes" / "submissions" / "linear", "--team", "zed",
      "--json"], 0),
    (["train", "--problem", "diabetes", "--json"], 0),
    (["submission", "show", "{submitted}", "--json"], 0),  # trained for real: times, hosts, versions
    (["logs", "{first_task}", "--json"], 0),
    (["dispatch", "--json"], 0),
    (["logs", "{edsger_failed_task}", "--json"], 0),
    (["retry", "{edsger}", "--json"], 0),
    (["cancel", "{edsger}", "--json"], 0),
    (["export", "iris", "--json", "-"], 0),
    (["export", "iris", "--json", "-", "--private"], 0),
    (["db", "backup", "{tmp}/backup.db", "--json"], 0),
    (["site", "{tmp}/site", "--json"], 0),
    (["db", "restore", "{tmp}/backup.db", "{tmp}/restored", "--json"], 0),
    (["event", "edit", "autumn", "--closes", "2031-01-01", "--json"], 0),
    (["event", "remove", "autumn", "--json"], 0),
    (["submission", "hide", "{ada}", "--reason", "a copy", "--json"], 0),
    (["submission", "unhide", "{ada}", "--json"], 0),
    (["history", "--json"], 0),
    (["problem", "remove", "diabetes", "--force", "--json"], 0),
    # Errors: the error object on stdout, beside the stderr line and the exit code.
    (["submission", "show", "999", "--json"], 2),
    (["leaderboard", "nope", "--json"], 2),
    (["export", "nope", "--json", "-"], 2),
    (["submission", "show", "--json"], 2),  # Click's own usage error
]

# Commands whose real output is validated by another test (it needs what that test has).
COVERED_ELSEWHERE = {
    "demo": "tests/test_demo.py (it trains the examples)",
    "host trust": "tests/test_hardening_hostkeys.py (it needs a real sshd)",
    "host setup": "tests/test_host_setup.py (it installs packages on a host over SSH)",
    "submission select": "tests/test_organiser.py (it needs a team's submissions in an event with --max-final)",
    "problem check": "tests/test_sensitive.py (it asks a sensitive problem's host over SSH)",
    "owner prepare": "tests/test_sensitive_results.py (the data owner's commands)",
    "owner refuse": "tests/test_sensitive_results.py",
    "owner allow": "tests/test_sensitive_results.py",
    "owner errors": "tests/test_sensitive_results.py",
    "owner purge": "tests/test_sensitive_results.py",
}

# Schemas whose documents another test validates: the commands above, and the payload a
# [hooks] command reads on its standard input (no --json output; tests/test_hooks.py).
VALIDATED_ELSEWHERE = {"demo", "host-trust", "host-setup", "submission-select", "hook",
                       "problem-check", "owner-manifest", "owner-flags", "owner-purge"}


def json_commands() -> set[str]:
    """Every command path (`submission show`) that takes a --json option."""
    import typer

    from datarun.cli import app

    found = set()

    def walk(command, path):
        for param in getattr(command, "params", []):
            if "--json" in getattr(param, "opts", []):
                found.add(" ".join(path))
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, [*path, name])

    walk(typer.main.get_command(app), [])
    return found


def command_path(args: list) -> str:
    names = json_commands()
    words = [str(a) for a in args]
    for length in (2, 1):
        if " ".join(words[:length]) in names:
            return " ".join(words[:length])
    raise AssertionError(f"{words} is no command that takes --json")


def run(args: list[str], env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "datarun", *args], capture_output=True, text=True,
                          env=env, timeout=300)


@pytest.fixture
def contract_ws(workspace, cli):
    ids = sitedata.make_workspace(workspace, cli)
    from datarun.store.db import open_db

    failed = open_db(workspace).execute(
        "SELECT id FROM tasks WHERE submission = ? AND state = 'failed'", [ids["edsger"]]).fetchone()[0]
    return workspace, {**ids, "edsger_failed_task": failed}


def test_every_json_command_has_a_case_and_a_schema():
    covered = {command_path(args) for args, _ in CASES} | set(COVERED_ELSEWHERE)
    missing = json_commands() - covered
    assert not missing, (f"commands with --json but no case in {__file__}: {sorted(missing)}; "
                         "add a schema under docs/schema/ and a case to CASES")
    documented = (REPO / "docs" / "JSON.md").read_text()
    for schema in SCHEMAS.glob("*.json"):
        kind = schema.stem
        assert f"`datarun/{kind}/1`" in documented, f"docs/JSON.md does not describe {kind}"
        assert json.loads(schema.read_text())["properties"]["schema"]["const"] == f"datarun/{kind}/1"


def test_every_output_follows_its_schema(contract_ws, tmp_path):
    workspace, ids = contract_ws
    env = {**os.environ, "DATARUN_HOME": str(workspace.root)}
    seen = set()
    try:
        for args, code in CASES:
            args = [str(a).format(tmp=tmp_path, **ids) for a in args]
            result = run(args, env)
            assert result.returncode == code, (args, result.stderr)
            assert result.stdout.count("\n") == 1, (args, result.stdout)  # one JSON document
            kind = validate(result.stdout)
            data = json.loads(result.stdout)
            if code:
                assert kind == "error" and data["error"]["exit_code"] == code
                assert result.stderr.strip().splitlines()[-1] == f"error: {data['error']['message']}"
            seen.add(kind)
            if kind == "submit":
                ids["submitted"] = data["id"]
            if kind == "submission" and data["tasks"]:
                ids["first_task"] = data["tasks"][0]["id"]
            text = json.dumps(data)
            assert "NaN" not in text and "Infinity" not in text
            moments = re.findall(r'"(\w+_at)": ("[^"]*"|[-\d.e]+|null)', result.stdout)
            assert all(value == "null" or re.fullmatch(r'"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"', value)
                       for _, value in moments), moments
    finally:
        from conftest import stop_runners

        stop_runners(workspace)
    assert seen == {path.stem for path in SCHEMAS.glob("*.json")} - VALIDATED_ELSEWHERE


def test_every_schema_object_is_closed():
    """An object of a schema names its keys and refuses others, or says what each of its
    named keys (score types, hosts, packages) holds: no output key goes undocumented."""
    loose = []

    def walk(node, path):
        if isinstance(node, dict):
            kinds = node.get("type") if isinstance(node.get("type"), list) else [node.get("type")]
            if "properties" in node and node.get("additionalProperties") is not False:
                loose.append(path)
            elif "object" in kinds and "properties" not in node and "additionalProperties" not in node:
                loose.append(path)
            for key, value in node.items():
                walk(value, f"{path}/{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{path}/{i}")

    for schema in sorted(SCHEMAS.glob("*.json")):
        walk(json.loads(schema.read_text()), schema.name)
    assert not loose, f"objects open to any key: {loose}"
