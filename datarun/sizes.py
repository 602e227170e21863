"""Parsing and printing of durations ("10m") and memory sizes ("2GB").

Every duration and size is written with its unit: a bare number is refused with a line
proposing one, since a guessed unit is how `train --memory 10` once meant 10 bytes and
`--min-interval 15` 15 seconds. Units may be spelt out ("10 minutes", "2 hours").
"""

import re

from datarun.errors import UsageError

_DURATION_UNITS = {
    "ms": 0.001, "millisecond": 0.001, "milliseconds": 0.001,
    "s": 1, "sec": 1, "secs": 1, "second": 1, "seconds": 1,
    "m": 60, "min": 60, "mins": 60, "minute": 60, "minutes": 60,
    "h": 3600, "hr": 3600, "hrs": 3600, "hour": 3600, "hours": 3600,
    "d": 86400, "day": 86400, "days": 86400,
}
_SIZE_UNITS = {
    "b": 1, "byte": 1, "bytes": 1,
    "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3,
    "t": 1000**4, "tb": 1000**4,
    "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4,
}
# The least memory limit a task may have on a host whose empty task was never measured
# (`host check` measures it: datarun.executors.floors): an empty estimator's own memory
# measures 5-9 MB (procfs or cgroup-v1, bench/memory.py), and the sandbox's tmpfs and a
# pandas frame of the data add to it, so this default keeps well clear of it.
MIN_TASK_MEMORY = 32 * 1000**2
_NUMBER_UNIT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def _number(value: float) -> str:
    return f"{value:g}" if value != int(value) else str(int(value))


def parse_duration(text: str | int | float, what: str = "duration") -> float:
    """Seconds from "90s", "1.5m", "2h", "10 minutes"; a bare number is refused."""
    if isinstance(text, bool):
        raise UsageError(f"{what}: expected a duration like '30s', '10m' or '2h', got {str(text).lower()}")
    if isinstance(text, int | float):
        value, unit = float(text), ""
    else:
        match = _NUMBER_UNIT.match(str(text))
        if not match:
            raise UsageError(f"{what}: expected a duration like '30s', '10m' or '2h', got {text!r}")
        value, unit = float(match.group(1)), match.group(2).lower()
    if value <= 0:
        raise UsageError(f"{what}: must be more than zero, got {text!r}")
    if not unit:
        raise UsageError(f"{what}: {str(text).strip()!r} has no unit; write e.g. "
                         f"'{_number(value)}s' for seconds or '{_number(value)}m' for minutes")
    if unit not in _DURATION_UNITS:
        raise UsageError(f"{what}: unknown time unit {unit!r} in {text!r} (use ms, s, m, h or d)")
    return value * _DURATION_UNITS[unit]


def parse_size(text: str | int, what: str = "memory") -> int:
    """Bytes from "2GB", "512MiB", "1.5G", "100 bytes"; a bare number is refused."""
    if isinstance(text, bool):
        raise UsageError(f"{what}: expected a size like '512MB' or '2GB', got {str(text).lower()}")
    if isinstance(text, int | float):
        value, unit = float(text), ""
    else:
        match = _NUMBER_UNIT.match(str(text))
        if not match:
            raise UsageError(f"{what}: expected a size like '512MB' or '2GB', got {text!r}")
        value, unit = float(match.group(1)), match.group(2).lower()
    if value <= 0:
        raise UsageError(f"{what}: must be more than zero, got {text!r}")
    if not unit:
        bare = str(text).strip()
        if value >= 100_000:  # a count of bytes, most likely: say so, and what it amounts to
            raise UsageError(f"{what}: {bare!r} has no unit; write '{_number(value)}B' for bytes "
                             f"({format_size(value)})")
        raise UsageError(f"{what}: {bare!r} has no unit; write e.g. "
                         f"'{_number(value)}MB' or '{_number(value)}GB' ('{_number(value)}B' for bytes)")
    if unit not in _SIZE_UNITS:
        raise UsageError(f"{what}: unknown size unit {unit!r} in {text!r} (use KB, MB, GB, MiB, GiB)")
    size = int(value * _SIZE_UNITS[unit])
    if size <= 0:
        raise UsageError(f"{what}: must be more than zero, got {text!r}")
    return size


_CLOCK = re.compile(r"^\s*(\d+-)?\d+:\d\d(:\d\d)?\s*$")


def parse_clock(text: str, what: str = "walltime") -> str:
    """A batch queue's wall time, kept as the queue reads it ("02:00:00", "1-00:00:00");
    a bare number is refused, since Slurm reads it as minutes and PBS as seconds."""
    text = str(text)
    if _CLOCK.match(text):
        return text.strip()
    match = _NUMBER_UNIT.match(text)
    if match and not match.group(2):
        minutes = float(match.group(1))
        clock = f"{int(minutes // 60):02d}:{int(minutes % 60):02d}:00"
        raise UsageError(f"{what}: {text.strip()!r} has no unit (Slurm reads minutes, PBS seconds); "
                         f"write it as a clock, e.g. '{clock}' for {_number(minutes)} minutes")
    raise UsageError(f"{what}: expected a clock like '02:00:00' (hours:minutes:seconds) or "
                     f"'1-00:00:00' (days-hours:minutes:seconds), got {text!r}")


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
