"""The machine interface: what every `--json` output has in common (docs/JSON.md).

A web board and cron read datarun's `--json` outputs, so they are a contract:

- every output is one JSON object whose first key is `schema`, `"datarun/<kind>/<version>"`,
  described by `docs/schema/<kind>.json`; a list is the value of a key of that object;
- a moment is a key ending in `_at`, written ISO 8601 in UTC with a `Z`
  (`2026-11-29T21:55:03Z`) or null: `contract_value` turns the epoch seconds the core
  works with into that form, so no command writes a moment another way;
- with `--json`, an error is an object too: `{"schema": "datarun/error/1", "error":
  {"kind", "message", "exit_code"}}` on stdout, beside the `error: ...` line on stderr.

A kind's version goes up only when a key is removed or changes meaning; adding a key
keeps it (a reader ignores keys it does not know).
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

VERSION = 1


def schema_id(kind: str, version: int = VERSION) -> str:
    return f"datarun/{kind}/{version}"


def moment(timestamp: float | None) -> str | None:
    """Epoch seconds as ISO 8601 UTC, to the second (`2026-11-29T21:55:03Z`); None stays None."""
    if timestamp is None:
        return None
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _is_moment_key(key: Any) -> bool:
    return isinstance(key, str) and key.endswith("_at")


def contract_value(value: Any, key: Any = None) -> Any:
    """`value` made JSON-ready: moments (keys ending in `_at`) in ISO 8601 UTC, NaN as null."""
    if isinstance(value, dict):
        return {k: contract_value(v, k) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [contract_value(item, key) for item in value]
    if isinstance(value, bool):
        return value
    if _is_moment_key(key) and isinstance(value, int | float):
        return moment(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN: an undefined score is null
    return value


def contract(kind: str, data: dict[str, Any]) -> dict[str, Any]:
    """`data` as the output of kind `kind`: its `schema` key first, moments converted."""
    if not isinstance(data, dict):
        raise TypeError(f"a --json output is one object, not {type(data).__name__}")
    body = contract_value({k: v for k, v in data.items() if k != "schema"})
    return {"schema": schema_id(kind), **body}


def error_object(kind: str, message: str, exit_code: int) -> dict[str, Any]:
    """What `--json` prints on stdout when a command fails."""
    return {"schema": schema_id("error"),
            "error": {"kind": kind, "message": message, "exit_code": exit_code}}
