"""The environments `datarun host setup` made on hosts: per host, its Python and versions.

A small JSON file beside the database (`.datarun/environments.json`), replaced whole and
atomically on every change: one record per host, {"python", "folder", "requirements",
"versions", "problems", "made_at"}. The dispatcher and `host check` run a host's harness
and runner with the recorded Python (`datarun.executors.environments.with_environments`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def load(path: Path) -> dict[str, dict[str, Any]]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def record(path: Path, host: str, entry: dict[str, Any]) -> None:
    data = load(path)
    data[host] = entry
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    os.replace(tmp, path)
