"""What a problem's tasks need of a host: `[resources]` in problem.toml, `problem add --needs`.

A problem may ask for host tags (`tags = ["gpu"]`: every one of them), GPUs per task
(`gpus = 1`: each task gets that many devices of its own), memory a host must offer one
task (`memory = "8GB"`, compared with the host's `memory`) and threads per task
(`threads = 4`, compared with the host's `threads` per slot). The dispatcher places a task
only on a host that offers all of it (`datarun.dispatch.schedule`), and says which
requirement no host meets rather than leaving the task waiting.

Stored in the problem's spec as `"resources"` (a plain dict), so no migration is needed
and RAMP kits, which have no problem.toml, take the same keys from `--needs`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from datarun.errors import UsageError
from datarun.sizes import format_size, parse_size

KEYS = ("tags", "gpus", "memory", "threads")


@dataclass(frozen=True)
class Needs:
    tags: tuple[str, ...] = field(default_factory=tuple)
    gpus: int = 0
    memory: int | None = None  # bytes a host must offer one task
    threads: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"tags": list(self.tags), "gpus": self.gpus, "memory": self.memory, "threads": self.threads}

    def describe(self) -> str:
        """`tags gpu; 1 GPU; memory 8.0 GB; 4 threads`, or `nothing special`."""
        parts = []
        if self.tags:
            parts.append("tags " + ", ".join(self.tags))
        if self.gpus:
            parts.append(f"{self.gpus} GPU" + ("s" if self.gpus > 1 else ""))
        if self.memory:
            parts.append(f"memory {format_size(self.memory)}")
        if self.threads:
            parts.append(f"{self.threads} threads")
        return "; ".join(parts) or "nothing special"


def _whole(where: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UsageError(f"{where} must be a whole number >= {minimum}, got {value!r}")
    return value


def parse_resources(table: Mapping[str, Any], where: str = "problem.toml: [resources]") -> Needs:
    """Needs from a `[resources]` table; UsageError naming the first thing to fix."""
    if not isinstance(table, Mapping):
        raise UsageError(f"{where} must be a table")
    unknown = sorted(set(table) - set(KEYS))
    if unknown:
        raise UsageError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(KEYS)})")
    tags = table.get("tags", [])
    if isinstance(tags, str):
        tags = [tags]
    if not isinstance(tags, list) or not all(isinstance(t, str) and t.strip() for t in tags):
        raise UsageError(f"{where} tags must be a list of tag names, got {tags!r}")
    gpus = _whole(f"{where} gpus", table.get("gpus", 0), 0)
    threads = table.get("threads")
    threads = None if threads is None else _whole(f"{where} threads", threads, 1)
    memory = table.get("memory")
    memory = None if memory is None else parse_size(memory, f"{where} memory")
    return Needs(tags=tuple(dict.fromkeys(t.strip() for t in tags)), gpus=gpus, memory=memory, threads=threads)


def parse_needs(options: Iterable[str]) -> dict[str, Any]:
    """The table `problem add --needs KEY=VALUE ...` gives (tags comma-separated)."""
    table: dict[str, Any] = {}
    for option in options:
        key, sep, value = option.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key or not value:
            raise UsageError(f"--needs {option!r}: expected KEY=VALUE, e.g. gpus=1, tags=gpu,big, "
                             "memory=8GB or threads=4")
        if key not in KEYS:
            raise UsageError(f"--needs {option!r}: unknown key {key!r} (known: {', '.join(KEYS)})")
        if key == "tags":
            table.setdefault("tags", []).extend(t for t in value.split(",") if t.strip())
        elif key in ("gpus", "threads"):
            try:
                table[key] = int(value)
            except ValueError:
                raise UsageError(f"--needs {option!r}: {key} must be a whole number") from None
        else:
            table[key] = value
    parse_resources(table, "--needs")
    return table


def needs_of(problem: Mapping[str, Any]) -> Needs:
    """The needs stored with a registered problem (none for problems registered before)."""
    table = (problem.get("spec") or {}).get("resources") or {}
    return Needs(tags=tuple(table.get("tags") or ()), gpus=int(table.get("gpus") or 0),
                 memory=table.get("memory"), threads=table.get("threads"))


# -- environments -------------------------------------------------------------------------

ENVIRONMENT_KEYS = ("requirements", "strict")
REQUIREMENTS_FILE = "requirements.txt"


def check_requirement(line: str, where: str) -> str:
    """A pip requirement; pip options (`-r`, `--index-url`, ...) are refused: the host's own
    package index settings apply."""
    text = line.strip()
    if not text or text.startswith("-"):
        raise UsageError(f"{where}: {line!r} is not a requirement (like 'scikit-learn==1.5.2'); "
                         "pip options are not taken: set the index in the host's pip.conf")
    return text


def parse_environment(table: Mapping[str, Any] | None, kit_dir: Any = None,
                      where: str = "problem.toml: [environment]") -> dict[str, Any]:
    """{"requirements": [...], "strict": bool} from `[environment]`, else from the kit's
    requirements.txt (a RAMP kit's too); empty requirements when neither says any."""
    from pathlib import Path

    table = table or {}
    if not isinstance(table, Mapping):
        raise UsageError(f"{where} must be a table")
    unknown = sorted(set(table) - set(ENVIRONMENT_KEYS))
    if unknown:
        raise UsageError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(ENVIRONMENT_KEYS)})")
    strict = table.get("strict", False)
    if not isinstance(strict, bool):
        raise UsageError(f"{where} strict must be true or false, got {strict!r}")
    if "requirements" in table:
        requirements = table["requirements"]
        if not isinstance(requirements, list) or not all(isinstance(r, str) for r in requirements):
            raise UsageError(f"{where} requirements must be a list of pip requirements")
        found = [check_requirement(r, f"{where} requirements") for r in requirements]
    elif kit_dir is not None and (Path(kit_dir) / REQUIREMENTS_FILE).is_file():
        lines = (Path(kit_dir) / REQUIREMENTS_FILE).read_text(encoding="utf-8").splitlines()
        found = [check_requirement(line, REQUIREMENTS_FILE) for line in
                 (line.split("#", 1)[0] for line in lines) if line.strip()]
    else:
        found = []
    return {"requirements": found, "strict": strict}


def environment_of(problem: Mapping[str, Any]) -> dict[str, Any]:
    """The environment stored with a registered problem: requirements, strict, and the
    versions recorded at its first `host setup` (none before)."""
    env = (problem.get("spec") or {}).get("environment") or {}
    return {"requirements": list(env.get("requirements") or []), "strict": bool(env.get("strict")),
            "versions": dict(env.get("versions") or {})}
