"""The site's plots, as SVG: matplotlib draws the axes, datarun places the marks.

A plot is a *frame* and its *marks*. The frame is everything matplotlib's SVG backend
draws around the data: the axes box, ticks and tick labels, grid and axis labels, for
given limits and a fixed layout (`Frame`). The marks are the data: one dot per
submission (a link to its page, with a tooltip), the best-so-far line, bars, a box. They
are SVG elements placed in the frame's data coordinates by the same linear (or log)
mapping matplotlib uses for the fixed axes box.

Why split them: importing matplotlib alone takes 0.7-1.4 s on a 2-core machine, more than
the whole incremental update may. Limits are rounded out to steps (`nice_limits`,
`time_limits`, `log_limits`), so a new submission inside the current limits changes only
marks: the frame is reused from the cache (see datarun/site/build.py) and matplotlib is not
even imported. A new submission outside them renders one new frame.

Marks are plain data-driven strings, so a page's digest (over its marks) decides whether
it is rewritten. Every text that comes from a participant is escaped here.
"""

import hashlib
import html
import io
import json
import math
import re
from typing import Any

from datarun.site.formats import fmt_score, fmt_share, is_number

FRAME_VERSION = 1
WIDTH = 720
TOP_CONTRIBUTORS = 12
COLOURS = {"dot": "#4c72b0", "best": "#c44e52", "line": "#c44e52", "bar": "#55a868",
           "box": "#8172b2", "fold": "#dd8452", "muted": "#9a9a9a"}


# -- limits ---------------------------------------------------------------------------------


def _nice_step(span: float, intervals: int = 4) -> float:
    raw = span / intervals
    exponent = math.floor(math.log10(raw))
    fraction = raw / 10**exponent
    for nice in (1, 2, 2.5, 5, 10):
        if fraction <= nice:
            return nice * 10**exponent
    return 10 * 10**exponent


def _clean(value: float) -> float:
    return float(f"{value:.12g}")


def nice_limits(values: list[float]) -> tuple[float, float]:
    """Limits rounded out to a round step, so values inside them do not move them."""
    low, high = min(values), max(values)
    span = high - low
    if span <= 0:
        span = abs(high) * 0.1 or 1.0
    step = _nice_step(span)
    lo, hi = math.floor(low / step) * step, math.ceil(high / step) * step
    if hi <= lo:
        lo, hi = lo - step, hi + step
    return _clean(lo), _clean(hi)


TIME_UNITS = (60, 600, 3600, 6 * 3600, 86400, 7 * 86400, 28 * 86400)


def time_limits(times: list[float]) -> tuple[float, float]:
    """Epoch-second limits rounded out to minutes, tens of minutes, hours... (UTC)."""
    low, high = min(times), max(times)
    unit = next((u for u in TIME_UNITS if (high - low) / u <= 12), TIME_UNITS[-1])
    lo, hi = math.floor(low / unit) * unit, math.ceil(high / unit) * unit
    return float(lo), float(hi if hi > lo else lo + unit)


def log_limits(values: list[float]) -> tuple[float, float]:
    lo = 10 ** math.floor(math.log10(min(values)))
    hi = 10 ** math.ceil(math.log10(max(values)))
    return _clean(lo), _clean(hi if hi > lo else lo * 10)


# -- frames and the mapping into them -------------------------------------------------------


def frame(height: int, margins: tuple[int, int, int, int], x: dict, y: dict) -> dict:
    """A frame's spec: size, margins (left, right, top, bottom, in SVG units) and axes.

    An axis is {"scale": "linear" | "log" | "time" | "percent" | "categories", "lim":
    [lo, hi] (categories: their labels, top first), "label": str}."""
    return {"version": FRAME_VERSION, "width": WIDTH, "height": height, "margins": list(margins),
            "x": x, "y": y}


def frame_key(spec: dict) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:24]


def _axis_map(axis: dict, start: float, end: float):
    """data -> SVG coordinate along one axis, from `start` (at lim[0]) to `end` (at lim[1])."""
    if axis["scale"] == "categories":
        count = len(axis["lim"])
        # category i sits at i, the axis runs from -0.5 (top or left) to count - 0.5
        return lambda value: start + (value + 0.5) / count * (end - start)
    lo, hi = axis["lim"]
    if axis["scale"] == "log":
        lo, hi = math.log10(lo), math.log10(hi)
        return lambda value: start + (math.log10(value) - lo) / (hi - lo) * (end - start)
    return lambda value: start + (value - lo) / (hi - lo) * (end - start)


def mapping(spec: dict):
    """(fx, fy): data -> SVG coordinates inside the frame's axes box."""
    left, right, top, bottom = spec["margins"]
    fx = _axis_map(spec["x"], left, spec["width"] - right)
    if spec["y"]["scale"] == "categories":
        fy = _axis_map(spec["y"], top, spec["height"] - bottom)  # the first category on top
    else:
        fy = _axis_map(spec["y"], spec["height"] - bottom, top)
    return fx, fy


def render_frame(spec: dict) -> str:
    """The frame as an SVG document, drawn by matplotlib's SVG backend (imported here only)."""
    import matplotlib
    from matplotlib.backends.backend_svg import FigureCanvasSVG
    from matplotlib.figure import Figure

    # matplotlib types rc_context's keys as a Literal of every rcParam name: a plain dict
    # of some of them is what it takes at run time.
    style: Any = {"svg.fonttype": "none", "svg.hashsalt": "datarun-site", "font.size": 10,
             "font.family": "sans-serif", "axes.edgecolor": "#777777", "axes.labelcolor": "#333333",
             "xtick.color": "#555555", "ytick.color": "#555555", "grid.color": "#e6e6e6"}
    width, height = spec["width"], spec["height"]
    left, right, top, bottom = spec["margins"]
    with matplotlib.rc_context(style):
        figure = Figure(figsize=(width / 72, height / 72), dpi=72)
        figure.patch.set_alpha(0)
        axes = figure.add_axes((left / width, bottom / height, (width - left - right) / width,
                                (height - top - bottom) / height))
        axes.patch.set_alpha(0)
        _draw_axis(axes, "x", spec["x"])
        _draw_axis(axes, "y", spec["y"])
        axes.spines[["top", "right"]].set_visible(False)
        axes.set_axisbelow(True)
        out = io.StringIO()
        FigureCanvasSVG(figure).print_svg(out, metadata={"Date": None})
    return out.getvalue()


def _draw_axis(axes, which: str, axis: dict) -> None:
    from matplotlib import dates, ticker

    set_lim = axes.set_xlim if which == "x" else axes.set_ylim
    mpl_axis = axes.xaxis if which == "x" else axes.yaxis
    (axes.set_xlabel if which == "x" else axes.set_ylabel)(axis.get("label", ""))
    scale = axis["scale"]
    if scale == "categories":
        count = len(axis["lim"])
        set_lim(count - 0.5, -0.5) if which == "y" else set_lim(-0.5, count - 0.5)
        mpl_axis.set_ticks(range(count), labels=axis["lim"])
        mpl_axis.set_tick_params(length=0)
        return
    axes.grid(True, axis=which)
    if scale == "log":
        (axes.set_xscale if which == "x" else axes.set_yscale)("log")
        set_lim(*axis["lim"])
        plain = ticker.FuncFormatter(lambda value, _: f"{value:g}")
        mpl_axis.set_major_formatter(plain)
        decades = math.log10(axis["lim"][1] / axis["lim"][0])
        mpl_axis.set_minor_formatter(plain if decades <= 1.5 else ticker.NullFormatter())
    elif scale == "time":
        import datetime as dt

        # matplotlib's dates are days since 1970-01-01 UTC
        set_lim(axis["lim"][0] / 86400, axis["lim"][1] / 86400)
        locator = dates.AutoDateLocator(tz=dt.UTC, maxticks=8)
        mpl_axis.set_major_locator(locator)
        mpl_axis.set_major_formatter(dates.ConciseDateFormatter(locator, tz=dt.UTC))
    else:
        set_lim(*axis["lim"])
        if scale == "percent":
            mpl_axis.set_major_formatter(ticker.PercentFormatter(1.0, decimals=0))


_PROLOGUE = re.compile(r"\A.*?(?=<svg\b)", re.S)
_METADATA = re.compile(r"\s*<metadata>.*?</metadata>", re.S)
_SIZE = re.compile(r'\s(width|height)="[^"]*"')
_IDS = re.compile(r'\bid="([^"]+)"')


def compose(frame_svg: str, marks: str, prefix: str, label: str, standalone: bool = False) -> str:
    """The frame with the marks drawn over it: an inline `<svg>` element for a page, or a
    standalone SVG file. Element ids get `prefix`, so several plots can share a page."""
    svg = _METADATA.sub("", _PROLOGUE.sub("", frame_svg, count=1))
    for name in sorted(set(_IDS.findall(svg)), key=len, reverse=True):
        svg = (svg.replace(f'id="{name}"', f'id="{prefix}-{name}"')
               .replace(f"#{name})", f"#{prefix}-{name})")
               .replace(f'href="#{name}"', f'href="#{prefix}-{name}"'))
    head_end = svg.index(">") + 1
    head = _SIZE.sub("", svg[:head_end]).rstrip(">").rstrip()
    attributes = f' role="img" aria-label="{html.escape(label)}"'
    if not standalone:
        attributes += ' class="plot"'
    body = svg[head_end:svg.rindex("</svg>")]
    prologue = '<?xml version="1.0" encoding="utf-8"?>\n' if standalone else ""
    return (f"{prologue}{head}{attributes}>\n<title>{html.escape(label)}</title>{body}"
            f'<g class="marks">{marks}</g>\n</svg>\n')


def layer(spec: dict, marks: str, label: str) -> str:
    """Marks alone, in an `<svg>` the size of the frame: drawn over a frame shown as an image."""
    return (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {spec["width"]} {spec["height"]}" '
            f'class="layer" role="img" aria-label="{html.escape(label)}">{marks}</svg>')


# -- marks ----------------------------------------------------------------------------------


def _n(value: float) -> str:
    return f"{value:.1f}"


def dot(x: float, y: float, tooltip: str, href: str | None = None, r: float = 3.5,
        colour: str = COLOURS["dot"], opacity: float = 0.65) -> str:
    circle = (f'<circle cx="{_n(x)}" cy="{_n(y)}" r="{r}" fill="{colour}" fill-opacity="{opacity}">'
              f"<title>{html.escape(tooltip)}</title></circle>")
    return f'<a href="{html.escape(href)}">{circle}</a>' if href else circle


def diamond(x: float, y: float, tooltip: str, size: float = 6, colour: str = COLOURS["best"]) -> str:
    points = f"M{_n(x)},{_n(y - size)} L{_n(x + size)},{_n(y)} L{_n(x)},{_n(y + size)} L{_n(x - size)},{_n(y)} Z"
    return f'<path d="{points}" fill="{colour}"><title>{html.escape(tooltip)}</title></path>'


def polyline(points: list[tuple[float, float]], colour: str = COLOURS["line"], width: float = 2) -> str:
    coordinates = " ".join(f"{_n(x)},{_n(y)}" for x, y in points)
    return (f'<polyline points="{coordinates}" fill="none" stroke="{colour}" '
            f'stroke-width="{width}" stroke-linejoin="round"/>')


def rect(x0: float, y0: float, x1: float, y1: float, colour: str, tooltip: str | None = None,
         opacity: float = 1.0) -> str:
    title = f"<title>{html.escape(tooltip)}</title>" if tooltip else ""
    x, y = min(x0, x1), min(y0, y1)
    return (f'<rect x="{_n(x)}" y="{_n(y)}" width="{_n(abs(x1 - x0))}" height="{_n(abs(y1 - y0))}" '
            f'fill="{colour}" fill-opacity="{opacity}">{title}</rect>')


def text(x: float, y: float, content: str, anchor: str = "start", size: int = 11,
         colour: str = "#333333") -> str:
    return (f'<text x="{_n(x)}" y="{_n(y)}" text-anchor="{anchor}" dominant-baseline="middle" '
            f'font-family="sans-serif" font-size="{size}" fill="{colour}">{html.escape(content)}</text>')


def line(x0: float, y0: float, x1: float, y1: float, colour: str, width: float = 2) -> str:
    return (f'<line x1="{_n(x0)}" y1="{_n(y0)}" x2="{_n(x1)}" y2="{_n(y1)}" stroke="{colour}" '
            f'stroke-width="{width}"/>')


# -- the plots' marks, from the page models (datarun/site/model.py) -------------------------


def _label(row: dict) -> str:
    return f"#{row['id']} {row['team']} / {row['submission']}"


def _scored(rows: list[dict]) -> list[dict]:
    return [row for row in rows if is_number(row["score"])]


def frontier_marks(spec: dict, rows: list[dict], lower: bool) -> str:
    """Every submission a dot at (submitted, score), a link to its page; the best so far a line."""
    ordered = sorted(_scored(rows), key=lambda r: (r["submitted_at"], r["id"]))
    fx, fy = mapping(spec)
    marks: list[str] = []
    points: list[tuple[float, float]] = []
    best = None
    for row in ordered:
        x, y = fx(row["submitted_at"]), fy(row["score"])
        improves = best is None or (row["score"] < best if lower else row["score"] > best)
        if improves:
            if points:
                points.append((x, points[-1][1]))
            points.append((x, y))
            best = row["score"]
        tooltip = f"{_label(row)}: {fmt_score(row['score'])}" + (" (best so far)" if improves else "")
        marks.append(dot(x, y, tooltip, row["href"], r=4.5 if improves else 3.5,
                         colour=COLOURS["best" if improves else "dot"], opacity=0.9 if improves else 0.55))
    points.append((fx(ordered[-1]["submitted_at"]), points[-1][1]))
    return polyline(points) + "".join(marks)


def cpu_marks(spec: dict, rows: list[dict]) -> str:
    fx, fy = mapping(spec)
    return "".join(
        dot(fx(r["cpu_time"]), fy(r["score"]),
            f"{_label(r)}: {fmt_score(r['score'])}, CPU {r['cpu_time']:.2f} s", r["href"])
        for r in _scored(rows) if is_number(r["cpu_time"]) and r["cpu_time"] > 0)


def share_bars(rows: list[dict]) -> list[tuple[str, float, str | None]]:
    """(label, share, link) of the largest contributors, the rest summed in one bar."""
    shares = sorted((r for r in rows if is_number(r["contributivity"]) and r["contributivity"] > 0),
                    key=lambda r: (-r["contributivity"], r["id"]))
    bars = [(_label(r), r["contributivity"], r["href"]) for r in shares[:TOP_CONTRIBUTORS]]
    rest = shares[TOP_CONTRIBUTORS:]
    if rest:
        bars.append((f"{len(rest)} others", sum(r["contributivity"] for r in rest), None))
    return bars


def shares_frame(count: int) -> dict:
    return frame(24 * count + 46, (230, 50, 8, 38),
                 {"scale": "percent", "lim": [0.0, 1.0], "label": "share of the ensemble"},
                 {"scale": "categories", "lim": [""] * count, "label": ""})


def shares_marks(spec: dict, rows: list[dict]) -> str:
    fx, fy = mapping(spec)
    marks = []
    for i, (label, share, href) in enumerate(share_bars(rows)):
        y = fy(i)
        bar = rect(fx(0.0), y - 8, fx(share), y + 8, COLOURS["bar"], f"{label}: {fmt_share(share)}")
        marks.append(f'<a href="{html.escape(href)}">{bar}</a>' if href else bar)
        short = label if len(label) <= 34 else label[:33] + "…"
        marks.append(text(fx(0.0) - 8, y, short, anchor="end"))
        marks.append(text(fx(share) + 6, y, fmt_share(share), size=10, colour="#555555"))
    return "".join(marks)


def _quartiles(values: list[float]) -> tuple[float, float, float]:
    ordered = sorted(values)

    def at(q: float) -> float:
        position = q * (len(ordered) - 1)
        low = math.floor(position)
        high = min(low + 1, len(ordered) - 1)
        return ordered[low] + (ordered[high] - ordered[low]) * (position - low)

    return at(0.25), at(0.5), at(0.75)


def spread_marks(spec: dict, points: list[tuple[int, float]]) -> str:
    """The leaderboard's spread on the first row: every ranked submission a grey dot (spread
    apart by a jitter fixed by its id), the middle half a box, the median a line."""
    fx, fy = mapping(spec)
    y = fy(0)
    q1, median, q3 = _quartiles([score for _, score in points])
    marks = [rect(fx(q1), y - 14, fx(q3), y + 14, COLOURS["box"], opacity=0.18,
                  tooltip=f"middle half: {fmt_score(q1)} to {fmt_score(q3)}"),
             line(fx(median), y - 14, fx(median), y + 14, COLOURS["box"])]
    for sid, score in points:
        jitter = ((sid * 2654435761) % 1000 / 1000 - 0.5) * 20
        marks.append(f'<circle cx="{_n(fx(score))}" cy="{_n(y + jitter)}" r="2.5" '
                     f'fill="{COLOURS["muted"]}" fill-opacity="0.6"/>')
    return "".join(marks)


def spread_layer(spec: dict, folds: list[dict], official: str, bagged: float | None) -> str:
    """A submission's marks on the second row: its folds' validation scores, and bagged."""
    fx, fy = mapping(spec)
    y = fy(1)
    marks = []
    for fold in folds:
        value = fold["scores"].get("valid", {}).get(official)
        if is_number(value):
            marks.append(dot(fx(value), y, f"fold {fold['fold']}: {fmt_score(value)}", r=4.5,
                             colour=COLOURS["fold"], opacity=0.8))
    if is_number(bagged):
        marks.append(diamond(fx(bagged), y, f"bagged: {fmt_score(bagged)}"))
    return "".join(marks)
