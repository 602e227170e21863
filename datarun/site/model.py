"""What each page of the site shows, as plain data: one model per page.

The figures come from the board's functions, never re-derived here: `leaderboard` gives
each event's ranks, scores, contributivity and blend, `describe_submissions` the per-fold
details `submission show` prints, `list_events` the events and their states. So a change
in how the board computes a figure shows on the site as it shows on the terminal.

What a viewer may see is decided here, before anything is rendered:

- the public view reads no test score at all (`visible_splits`), and no score of an event
  whose `public_opens` is still ahead (its pages list its submissions and their runs,
  without scores, plots or contributivity);
- on the public view of a problem that has such an event, contributivity and the blended
  score are shown on an event's page only when that event's own submissions make up the
  whole ensemble (its shares sum to one): otherwise they were computed with submissions
  whose scores are not public yet;
- a submission's code is shown once its event has closed (an event without a closing
  date never shows code publicly); the private view shows it always;
- host names, the organiser's `--force` notes and the participants list are private.

A page's model is everything the page shows and nothing else, so its digest says whether
the page must be written again (datarun/site/build.py). Nothing here depends on the
clock at a finer grain than the state of an event ("opens in 3 hours").
"""

import math
import time
from dataclasses import dataclass

from datarun.board.leaderboard import leaderboard
from datarun.board.views import visible_splits
from datarun.challenge.events import format_when, get_event, list_events, resolve_event
from datarun.challenge.submissions import describe_submissions, error_tail
from datarun.problems.registry import list_problems
from datarun.site import plots

ERROR_LINES = 12
TOP_CONTRIBUTORS = 12


@dataclass
class Page:
    path: str        # relative to the site's folder, '/'-separated
    template: str    # a template name, or "svg" for a standalone plot file
    model: dict      # everything the page shows: its digest decides whether it is rewritten


# -- formats (also the templates' filters) -------------------------------------------------


def is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def fmt_score(value) -> str:
    return f"{value:.4f}" if is_number(value) else "–"


def fmt_share(value) -> str:
    return f"{value:.0%}" if is_number(value) else "–"


def fmt_when(value) -> str:
    return format_when(value) if value is not None else "–"


def _span(seconds: float) -> str:
    """A coarse duration, so pages that say it change at most every minute, hour or day."""
    for unit, name in ((86400, "day"), (3600, "hour"), (60, "minute")):
        if seconds >= 2 * unit:
            count = int(seconds // unit)
            return f"{count} {name}s"
    return "a minute"


def state_text(event: dict, now: float) -> str:
    if event["state"] == "upcoming":
        return f"opens in {_span(event['opens'] - now)}"
    if event["state"] == "closed":
        return "closed"
    if event["closes"] is not None:
        return f"open, closes in {_span(event['closes'] - now)}"
    return "open"


# -- selection ------------------------------------------------------------------------------


def select_events(db, problem: str | None, event: str | None, now: float) -> list[dict]:
    """The events the site shows: one (`event`), a problem's, or every problem's."""
    if event is not None:
        chosen = resolve_event(db, problem, event) if problem is not None else get_event(db, event)
        return [e for e in list_events(db, chosen["problem"], now) if e["name"] == event]
    return list_events(db, problem, now)


def site_pages(workspace, db, problem: str | None = None, event: str | None = None,
               private: bool = False, now: float | None = None) -> list[Page]:
    """Every page of the site, as models (nothing rendered)."""
    now = time.time() if now is None else now
    events = select_events(db, problem, event, now)
    problems = {p["name"]: p for p in list_problems(db) if any(e["problem"] == p["name"] for e in events)}
    # Which problems have an event whose scores are not public yet: their blends mix them in.
    withheld = {e["problem"] for e in list_events(db, None, now) if not e["scores_public"]}
    pages: list[Page] = []
    index_events: dict[str, list[dict]] = {name: [] for name in problems}
    for ev in events:
        event_pages, summary = _event_pages(db, problems[ev["problem"]], ev, private, now,
                                            ev["problem"] in withheld)
        pages += event_pages
        index_events[ev["problem"]].append(summary)
    index = {
        "root": "", "private": private,
        "problems": [{"name": name, "title": p["title"], "kind": p["kind"],
                      "official": p["score_names"][0], "scores": p["score_names"],
                      "n_train": p["n_train"], "n_test": p["n_test"], "n_folds": p["n_folds"],
                      "events": index_events[name]} for name, p in problems.items()],
    }
    pages.insert(0, Page("index.html", "index.html", index))
    return pages


# -- one event ------------------------------------------------------------------------------


def _event_info(ev: dict, now: float, private: bool) -> dict:
    info = {key: ev[key] for key in ("name", "problem", "default", "state", "opens", "closes",
                                     "public_opens", "min_interval", "max_submissions",
                                     "submissions", "teams", "scores_public")}
    info["state_text"] = state_text(ev, now)
    info["invited"] = None if ev["participants"] is None else len(ev["participants"])
    if private:
        info["participants"] = ev["participants"]
    return info


def _board_figures(board: dict, private: bool, problem_withheld: bool) -> tuple[bool, str | None]:
    """Whether contributivity and the blend may be shown on this board, and a note on them."""
    shares = [row["contributivity"] for row in board["rows"] if is_number(row["contributivity"])]
    whole = bool(shares) and abs(sum(shares) - 1) <= 1e-6
    if not shares:
        return False, None
    if whole:
        return True, None
    if not private and problem_withheld:
        return False, ("contributivity and the blended score are not shown: they were computed "
                       "with submissions of this problem whose scores are not public yet")
    return True, ("contributivity is each submission's share of the ensemble blended over all "
                  "of the problem's submissions, not only this event's")


def _row(row: dict, names: list[str], private: bool, figures: bool) -> dict:
    shown = {
        "id": row["id"], "rank": row["rank"], "team": row["team"], "submission": row["submission"],
        "href": f"{row['id']}.html", "score": row["score"],
        "valid": [row["valid"][name] for name in names],
        "valid_mean": [row["valid_mean"][name] for name in names],
        "contributivity": row["contributivity"] if figures else None,
        "train_time": row["train_time"], "valid_time": row["valid_time"],
        "test_time": row["test_time"], "cpu_time": row["cpu_time"],
        "peak_memory": row["peak_memory"], "submitted_at": row["submitted_at"],
        "scores_hidden": row["scores_hidden"],
    }
    if private:
        shown["test"] = [row["test"][name] for name in names]
    return shown


def _event_pages(db, problem: dict, ev: dict, private: bool, now: float,
                 problem_withheld: bool) -> tuple[list[Page], dict]:
    name = ev["name"]
    board = leaderboard(db, problem["name"], private=private, event=name, now=now)
    visible = private or ev["scores_public"]
    details = describe_submissions(db, problem["name"], name,
                                   splits=visible_splits(private, ev["scores_public"]))
    names, official = board["scores"], board["official_score"]
    lower = board["lower_is_better"][official]
    figures, figures_note = _board_figures(board, private, problem_withheld)
    rows = [_row(row, names, private, figures) for row in board["rows"]]
    on_board = {row["id"] for row in rows}
    others = [{"id": sid, "team": sub["team"], "submission": sub["name"], "href": f"{sid}.html",
               "state": sub["state"], "submitted_at": sub["created_at"],
               "failed": sorted({t["error_kind"] or "failed" for t in sub["tasks"] if t["state"] == "failed"})}
              for sid, sub in details.items() if sid not in on_board]
    blend = board["blend"] if figures and visible else None
    scored = [row for row in rows if is_number(row["score"])]
    problem_info = {"name": problem["name"], "title": problem["title"], "kind": problem["kind"],
                    "official": official, "scores": names, "lower": lower}
    info = _event_info(ev, now, private)
    event_plots = {}
    spread = None
    if visible and scored:
        event_plots["frontier"] = _frontier(scored, official, lower)
        cpu = _cpu_plot(scored, official, lower)
        if cpu:
            event_plots["cpu"] = cpu
        if figures:
            shares = _shares_plot(rows)
            if shares:
                event_plots["shares"] = shares
        spread = _spread(scored, details, official)
    model = {
        "root": "../", "private": private, "problem": problem_info, "event": info,
        "notice": board["notice"], "blend": blend, "figures": figures, "figures_note": figures_note,
        "rows": rows, "others": others, "plots": event_plots,
    }
    pages = [Page(f"{name}/index.html", "event.html", model)]
    if spread:
        pages.append(Page(f"{name}/spread.svg", "svg", {"plot": spread["plot"],
                                                        "label": "the leaderboard's spread"}))
    rows_by_id = {row["id"]: row for row in rows}
    code_shown = private or (ev["closes"] is not None and now >= ev["closes"])
    for sid, sub in details.items():
        pages.append(Page(f"{name}/{sid}.html", "submission.html", _submission_model(
            sub, rows_by_id.get(sid), problem_info, ev, private, visible, code_shown, spread,
            official)))
    best = scored[0] if scored and scored[0]["rank"] == 1 else None
    summary = dict(info, href=f"{name}/index.html",
                   best=None if best is None else {"score": best["score"], "team": best["team"],
                                                    "submission": best["submission"]})
    return pages, summary


def _submission_model(sub: dict, row: dict | None, problem: dict, ev: dict, private: bool,
                      visible: bool, code_shown: bool, spread: dict | None, official: str) -> dict:
    names = problem["scores"]
    folds = []
    for task in sub["tasks"]:
        fold = {key: task[key] for key in ("fold", "state", "error_kind", "train_time", "valid_time",
                                           "test_time", "cpu_time", "peak_memory")}
        fold["error"] = error_tail(task["error"], ERROR_LINES) if task["state"] == "failed" else []
        fold["scores"] = {split: [values.get(n) for n in names] for split, values in task["scores"].items()}
        if private:
            fold["host"] = task["host"]
        folds.append(fold)
    splits = [s for s in ("train", "valid", "test") if any(s in f["scores"] for f in folds)]
    model = {
        "root": "../", "private": private, "problem": problem,
        "event": {"name": ev["name"], "scores_public": ev["scores_public"],
                  "public_opens": ev["public_opens"], "closes": ev["closes"]},
        "submission": {"id": sub["id"], "team": sub["team"], "name": sub["name"],
                       "submitted_at": sub["created_at"], "state": sub["state"]},
        # Not the rank: it moves whenever a better submission arrives, and would make every
        # page of the event change with each new one. The event's page shows it.
        "scores_hidden": not visible, "folds": folds, "splits": splits,
        "row": None if row is None else {k: v for k, v in row.items() if k not in ("rank", "href")},
        "code": sub["files"] if code_shown else None,
        "code_rule": ("shown: the event has closed" if code_shown and not private else
                      "shown to organisers" if private else
                      "shown here once the event closes" if ev["closes"] is not None else
                      "not published: the event has no closing date"),
        "spread": None,
    }
    if private:
        model["submission"]["forced"] = sub.get("forced")
    if spread and visible:
        model["spread"] = {"spec": spread["plot"]["spec"],
                           "layer": _spread_layer(spread["plot"]["spec"], sub, official)}
    return model


# -- plots ----------------------------------------------------------------------------------


def _label(row: dict) -> str:
    return f"#{row['id']} {row['team']} / {row['submission']}"


def _score_axis(values: list[float], official: str, lower: bool) -> dict:
    return {"scale": "linear", "lim": list(plots.nice_limits(values)),
            "label": f"{official} ({'lower' if lower else 'higher'} is better)"}


def _frontier(scored: list[dict], official: str, lower: bool) -> dict:
    """Every submission a dot at (submitted, score); the best so far a line."""
    ordered = sorted(scored, key=lambda r: (r["submitted_at"], r["id"]))
    times = [r["submitted_at"] for r in ordered]
    spec = plots.frame(300, (70, 20, 12, 42),
                       {"scale": "time", "lim": list(plots.time_limits(times)), "label": "submitted (UTC)"},
                       _score_axis([r["score"] for r in ordered], official, lower))
    fx, fy = plots.mapping(spec)
    marks, line, best = [], [], None
    for row in ordered:
        x, y = fx(row["submitted_at"]), fy(row["score"])
        improves = best is None or (row["score"] < best if lower else row["score"] > best)
        if improves:
            if line:
                line.append((x, line[-1][1]))
            line.append((x, y))
            best = row["score"]
        tooltip = f"{_label(row)}: {fmt_score(row['score'])}" + (" (best so far)" if improves else "")
        marks.append(plots.dot(x, y, tooltip, row["href"], r=4.5 if improves else 3.5,
                               colour=plots.COLOURS["best" if improves else "dot"],
                               opacity=0.9 if improves else 0.55))
    line.append((fx(ordered[-1]["submitted_at"]), line[-1][1]))
    return {"spec": spec, "marks": plots.polyline(line) + "".join(marks)}


def _cpu_plot(scored: list[dict], official: str, lower: bool) -> dict | None:
    rows = [r for r in scored if is_number(r["cpu_time"]) and r["cpu_time"] > 0]
    if not rows:
        return None
    spec = plots.frame(300, (70, 20, 12, 42),
                       {"scale": "log", "lim": list(plots.log_limits([r["cpu_time"] for r in rows])),
                        "label": "CPU time, seconds (all folds, log scale)"},
                       _score_axis([r["score"] for r in rows], official, lower))
    fx, fy = plots.mapping(spec)
    marks = [plots.dot(fx(r["cpu_time"]), fy(r["score"]),
                       f"{_label(r)}: {fmt_score(r['score'])}, CPU {r['cpu_time']:.2f} s", r["href"])
             for r in rows]
    return {"spec": spec, "marks": "".join(marks)}


def _shares_plot(rows: list[dict]) -> dict | None:
    shares = sorted((r for r in rows if is_number(r["contributivity"]) and r["contributivity"] > 0),
                    key=lambda r: (-r["contributivity"], r["id"]))
    if not shares:
        return None
    bars = [(_label(r), r["contributivity"], r["href"]) for r in shares[:TOP_CONTRIBUTORS]]
    rest = shares[TOP_CONTRIBUTORS:]
    if rest:
        bars.append((f"{len(rest)} others", sum(r["contributivity"] for r in rest), None))
    spec = plots.frame(24 * len(bars) + 46, (230, 50, 8, 38),
                       {"scale": "percent", "lim": [0.0, 1.0], "label": "share of the ensemble"},
                       {"scale": "categories", "lim": [""] * len(bars), "label": ""})
    fx, fy = plots.mapping(spec)
    marks = []
    for i, (label, share, href) in enumerate(bars):
        y = fy(i)
        bar = plots.rect(fx(0.0), y - 8, fx(share), y + 8, plots.COLOURS["bar"], f"{label}: {fmt_share(share)}")
        marks.append(f'<a href="{href}">{bar}</a>' if href else bar)
        short = label if len(label) <= 34 else label[:33] + "…"
        marks.append(plots.text(fx(0.0) - 8, y, short, anchor="end"))
        marks.append(plots.text(fx(share) + 6, y, fmt_share(share), size=10, colour="#555555"))
    return {"spec": spec, "marks": "".join(marks)}


def _quartiles(values: list[float]) -> tuple[float, float, float]:
    ordered = sorted(values)

    def at(q: float) -> float:
        position = q * (len(ordered) - 1)
        low = math.floor(position)
        high = min(low + 1, len(ordered) - 1)
        return ordered[low] + (ordered[high] - ordered[low]) * (position - low)

    return at(0.25), at(0.5), at(0.75)


def _fold_scores(sub: dict, official: str) -> list[tuple[int, float]]:
    return [(t["fold"], t["scores"]["valid"][official]) for t in sub["tasks"]
            if is_number(t["scores"].get("valid", {}).get(official))]


def _spread(scored: list[dict], details: dict, official: str) -> dict:
    """The event's spread of official scores, drawn once; each submission's page lays its
    folds over it (`_spread_layer`), so a new submission rewrites this file, not every page."""
    values = [r["score"] for r in scored]
    for sub in details.values():
        values += [v for _, v in _fold_scores(sub, official)]
    spec = plots.frame(150, (110, 20, 10, 40),
                       {"scale": "linear", "lim": list(plots.nice_limits(values)),
                        "label": f"{official} (valid)"},
                       {"scale": "categories", "lim": ["leaderboard", "this submission"], "label": ""})
    fx, fy = plots.mapping(spec)
    y = fy(0)
    q1, median, q3 = _quartiles([r["score"] for r in scored])
    marks = [plots.rect(fx(q1), y - 14, fx(q3), y + 14, plots.COLOURS["box"], opacity=0.18,
                        tooltip=f"middle half: {fmt_score(q1)} to {fmt_score(q3)}"),
             plots.line(fx(median), y - 14, fx(median), y + 14, plots.COLOURS["box"])]
    for row in scored:
        jitter = ((row["id"] * 2654435761) % 1000 / 1000 - 0.5) * 20
        marks.append(plots.dot(fx(row["score"]), y + jitter, f"{_label(row)}: {fmt_score(row['score'])}",
                               r=2.5, colour=plots.COLOURS["muted"], opacity=0.6))
    return {"plot": {"spec": spec, "marks": "".join(marks)}}


def _spread_layer(spec: dict, sub: dict, official: str) -> str:
    fx, fy = plots.mapping(spec)
    y = fy(1)
    marks = [plots.dot(fx(value), y, f"fold {fold}: {fmt_score(value)}", r=4.5,
                       colour=plots.COLOURS["fold"], opacity=0.8)
             for fold, value in _fold_scores(sub, official)]
    bagged = sub["bagged"].get("valid", {}).get(official)
    if is_number(bagged):
        marks.append(plots.diamond(fx(bagged), y, f"bagged: {fmt_score(bagged)}"))
    return "".join(marks)
