"""Rendering a page model into bytes: Jinja2 templates for pages, composed SVG for plots.

Jinja2 is imported here only (by `datarun site`), with autoescaping on: team names,
submission names, errors and code are participants' text. Plots arrive as frames (SVG
from matplotlib, through `frame_svg`) and marks (escaped when built, datarun/site/plots.py).
"""

import html
import math
from collections.abc import Callable
from pathlib import Path

from datarun.site import plots
from datarun.site.formats import fmt_score, fmt_share, fmt_when, is_number
from datarun.site.model import Page
from datarun.sizes import format_duration, format_size

TEMPLATES = Path(__file__).resolve().parent / "templates"
PLOT_LABELS = {
    "frontier": "best score so far against submission time; each submission a dot",
    "cpu": "CPU time against score; each submission a dot",
    "shares": "each submission's share of the blended ensemble",
}


def data_value(value) -> str:
    """A cell's exact value for sorting and checking: the number's repr, or empty."""
    if isinstance(value, bool) or value is None:
        return ""
    if isinstance(value, int | float):
        return repr(value) if math.isfinite(value) else ""
    return str(value)


def _duration(value) -> str:
    return format_duration(value) if is_number(value) else "–"


def _size(value) -> str:
    return format_size(value) if is_number(value) else "–"


def board_rows(rows: list[dict], private: bool) -> str:
    """The leaderboard's rows as HTML. Written here rather than in the template: an event
    of thousands of submissions is the one big table of the site, and Jinja2 spends about
    five times as long on it."""
    escape, value = html.escape, data_value

    def cell(number, text: str, css: str = "num") -> str:
        return f'<td class="{css}" data-value="{value(number)}">{text}</td>'

    out = []
    for row in rows:
        cells = [cell(row["rank"], "–" if row["rank"] is None else str(row["rank"])),
                 f"<td>{escape(row['team'])}</td>",
                 f'<td><a href="{escape(row["href"])}">{escape(row["submission"])}</a></td>']
        cells += [cell(v, fmt_score(v), "num score") for v in row["valid"]]
        if private:
            cells += [cell(v, fmt_score(v), "num score private") for v in row["test"]]
        cells += [cell(row["contributivity"], fmt_share(row["contributivity"])),
                  cell(row["train_time"], _duration(row["train_time"])),
                  cell(row["valid_time"], _duration(row["valid_time"])),
                  cell(row["test_time"], _duration(row["test_time"])),
                  cell(row["cpu_time"], _duration(row["cpu_time"])),
                  cell(row["peak_memory"], _size(row["peak_memory"])),
                  cell(row["submitted_at"], escape(fmt_when(row["submitted_at"])), "when")]
        out.append(f'<tr id="s{row["id"]}" data-id="{row["id"]}">\n{"".join(cells)}\n</tr>\n')
    return "".join(out)


class Renderer:
    """Renders pages; `frame_svg(spec)` gives a plot's frame, `read_code(files)` a
    submission's files {name: text} from their blob hashes."""

    def __init__(self, frame_svg: Callable[[dict], str], read_code: Callable[[dict], dict]):
        import jinja2
        from markupsafe import Markup

        self.markup = Markup
        self.frame_svg = frame_svg
        self.read_code = read_code
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(TEMPLATES)), autoescape=True,
            undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
            keep_trailing_newline=True)
        self.env.filters.update(score=fmt_score, share=fmt_share, when=fmt_when,
                                duration=_duration, size=_size, value=data_value)

    def render(self, page: Page) -> bytes:
        model = page.model
        if page.template == "svg":
            marks = plots.spread_marks(model["spec"], model["points"])
            return plots.compose(self.frame_svg(model["spec"]), marks, "p", model["label"],
                                 standalone=True).encode()
        context = dict(model)
        if page.template == "event.html":
            context["board_rows"] = self.markup(board_rows(model["rows"], model["private"]))
            draw = {"frontier": lambda spec: plots.frontier_marks(spec, model["rows"], model["problem"]["lower"]),
                    "cpu": lambda spec: plots.cpu_marks(spec, model["rows"]),
                    "shares": lambda spec: plots.shares_marks(spec, model["rows"])}
            context["svg"] = {
                name: self.markup(plots.compose(self.frame_svg(spec), draw[name](spec), name,
                                                PLOT_LABELS[name]))
                for name, spec in model["plots"].items()}
        elif page.template == "submission.html":
            spread = model["spread"]
            context["layer"] = None if spread is None else self.markup(plots.layer(
                spread["spec"], plots.spread_layer(spread["spec"], model["folds"],
                                                   model["problem"]["official"], spread["bagged"]),
                "this submission's fold scores and bagged score"))
            context["files"] = None if page.model["code"] is None else self.read_code(page.model["code"])
        return self.env.get_template(page.template).render(context).encode()

    def static(self, name: str) -> bytes:
        return (TEMPLATES / name).read_bytes()
