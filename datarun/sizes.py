"""Parsing and printing of durations ("10m") and memory sizes ("2GB")."""

import re

from datarun.errors import UsageError

_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}
_SIZE_UNITS = {
    "b": 1,
    "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3,
    "t": 1000**4, "tb": 1000**4,
    "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4,
}
_NUMBER_UNIT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def parse_duration(text: str | int | float, what: str = "duration") -> float:
    """Seconds from "90", "90s", "1.5m", "2h"; a bare number is seconds."""
    if isinstance(text, bool):
        raise UsageError(f"{what}: expected a duration like '30s', '10m' or '2h', got {str(text).lower()}")
    if isinstance(text, int | float):
        value, unit = float(text), "s"
    else:
        match = _NUMBER_UNIT.match(str(text))
        if not match:
            raise UsageError(f"{what}: expected a duration like '30s', '10m' or '2h', got {text!r}")
        value, unit = float(match.group(1)), (match.group(2).lower() or "s")
    if unit not in _DURATION_UNITS:
        raise UsageError(f"{what}: unknown time unit {unit!r} in {text!r} (use ms, s, m, h or d)")
    seconds = value * _DURATION_UNITS[unit]
    if seconds <= 0:
        raise UsageError(f"{what}: must be more than zero, got {text!r}")
    return seconds


def parse_size(text: str | int, what: str = "memory") -> int:
    """Bytes from "2GB", "512MiB", "1.5G"; a bare number is bytes."""
    if isinstance(text, bool):
        raise UsageError(f"{what}: expected a size like '512MB' or '2GB', got {str(text).lower()}")
    if isinstance(text, int | float):
        value, unit = float(text), "b"
    else:
        match = _NUMBER_UNIT.match(str(text))
        if not match:
            raise UsageError(f"{what}: expected a size like '512MB' or '2GB', got {text!r}")
        value, unit = float(match.group(1)), (match.group(2).lower() or "b")
    if unit not in _SIZE_UNITS:
        raise UsageError(f"{what}: unknown size unit {unit!r} in {text!r} (use KB, MB, GB, MiB, GiB)")
    size = int(value * _SIZE_UNITS[unit])
    if size <= 0:
        raise UsageError(f"{what}: must be more than zero, got {text!r}")
    return size


def format_cap(size: int) -> str:
    """A cap as written in the README and the options: "512 kB", "50 MB" (decimal units,
    as format_size), without a decimal when the size is a whole number of its unit."""
    for unit, factor in (("GB", 1000**3), ("MB", 1000**2), ("kB", 1000)):
        if size >= factor:
            value = size / factor
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{int(size)} B"


def format_size(size: float | None) -> str:
    if size is None:
        return "-"
    for unit, factor in (("GB", 1000**3), ("MB", 1000**2), ("kB", 1000)):
        if size >= factor:
            return f"{size / factor:.1f} {unit}"
    return f"{int(size)} B"


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.2f}s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"
    return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"
