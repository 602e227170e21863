"""The JSON contract's check, for any test: `validate(output)` checks one `--json` output
against the schema its `schema` key names (docs/schema/<kind>.json), with jsonschema.

A test that runs a command with `--json` calls it on what the command printed, so the
schemas cannot drift from what datarun writes (docs/JSON.md).
"""

import json
import re
from functools import cache
from pathlib import Path

from conftest import REPO

SCHEMAS = REPO / "docs" / "schema"
SCHEMA_KEY = re.compile(r"^datarun/([a-z][a-z0-9-]*)/([1-9][0-9]*)$")


def schema_path(kind: str) -> Path:
    return SCHEMAS / f"{kind}.json"


@cache
def validator(kind: str):
    from jsonschema import Draft202012Validator, FormatChecker

    path = schema_path(kind)
    assert path.is_file(), f"no schema for the output kind {kind!r}: add {path.relative_to(REPO)}"
    schema = json.loads(path.read_text())
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, format_checker=FormatChecker())


def validate(output: dict | str) -> str:
    """Check one output (parsed, or the text printed); its kind."""
    data = json.loads(output) if isinstance(output, str) else output
    assert isinstance(data, dict), "a --json output is one object"
    match = SCHEMA_KEY.match(str(data.get("schema")))
    assert match, f"the output's schema key is {data.get('schema')!r}, not datarun/<kind>/<version>"
    kind = match.group(1)
    errors = sorted(validator(kind).iter_errors(data), key=lambda e: list(e.absolute_path))
    assert not errors, f"{kind}: " + "; ".join(
        f"at {'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}" for e in errors[:5])
    return kind
