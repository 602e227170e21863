"""How the site writes numbers, dates and spans (the templates' filters, the plots' tooltips)."""

import math

from datarun.challenge.events import format_when


def is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def fmt_score(value) -> str:
    return f"{value:.4f}" if is_number(value) else "–"


def fmt_share(value) -> str:
    return f"{value:.0%}" if is_number(value) else "–"


def fmt_when(value) -> str:
    return format_when(value) if value is not None else "–"


def fmt_span(seconds: float) -> str:
    """A coarse duration, so pages that say it change at most every minute, hour or day."""
    for unit, name in ((86400, "day"), (3600, "hour"), (60, "minute")):
        if seconds >= 2 * unit:
            return f"{int(seconds // unit)} {name}s"
    return "a minute"
