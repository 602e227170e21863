"""What each page of the site shows, as plain data: one model per page.

The figures come from the board's functions, never re-derived here: `leaderboard` gives
each event's ranks, scores, contributivity and blend, `describe_submissions` the per-fold
details `submission show` prints, `list_events` the events and their states. So a change
in how the board computes a figure shows on the site as it shows on the terminal.

What a viewer may see is decided here, before anything is rendered:

- the public view reads no test score at all (`visible_splits`), and no score of an event
  whose `public_opens` is still ahead (its pages list its submissions and their runs,
  without scores, plots or contributivity);
- an event's contributivity and blended score are its own: the board blends that event's
  submissions only (datarun/board/scopes.py). As a guard, the public view still shows
  them only when the event's shares sum to one, so figures of a wider ensemble (which may
  hold submissions whose scores are not public yet) never reach a public page;
- a submission's code is shown once its event has closed (an event without a closing
  date never shows code publicly); the private view shows it always;
- host names, the organiser's `--force` notes and the participants list are private.

A page's model is everything the page shows and nothing else, so its digest says whether
the page must be written again (datarun/site/build.py). Nothing here depends on the
clock at a finer grain than the state of an event ("opens in 3 hours").
"""

import time
from dataclasses import dataclass
from typing import Any

from datarun.board.leaderboard import leaderboard
from datarun.board.views import visible_splits
from datarun.challenge.events import get_event, list_events, resolve_event
from datarun.challenge.submissions import describe_submissions, error_tail
from datarun.problems.registered import list_problems
from datarun.safetext import printable
from datarun.site import plots
from datarun.site.formats import fmt_span, is_number

ERROR_LINES = 12


@dataclass
class Page:
    path: str        # relative to the site's folder, '/'-separated
    template: str    # a template name, or "svg" for a standalone plot file
    model: dict      # everything the page shows: its digest decides whether it is rewritten


def state_text(event: dict, now: float) -> str:
    if event["state"] == "upcoming":
        return f"opens in {fmt_span(event['opens'] - now)}"
    if event["state"] == "closed":
        return "closed"
    if event["closes"] is not None:
        return f"open, closes in {fmt_span(event['closes'] - now)}"
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
        "valid_std": [row["valid_std"][name] for name in names],
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
    # A submission with a failed fold (state "partial") is listed apart, with what failed.
    rows = [_row(row, names, private, figures) for row in board["rows"]
            if row.get("state", "scored") == "scored"]
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
        event_plots["frontier"] = _frontier_spec(scored, official, lower)
        cpu = [r["cpu_time"] for r in scored if is_number(r["cpu_time"]) and r["cpu_time"] > 0]
        if cpu:
            event_plots["cpu"] = _cpu_spec(cpu, scored, official, lower)
        bars = plots.share_bars(rows) if figures else []
        if bars:
            event_plots["shares"] = plots.shares_frame(len(bars))
        spread = _spread_spec(scored, details, official)
    model = {
        "root": "../", "private": private, "problem": problem_info, "event": info,
        "notice": board["notice"], "note": board.get("note"), "blend": blend, "figures": figures,
        "figures_note": figures_note,
        "rows": rows, "others": others, "plots": event_plots,
    }
    pages = [Page(f"{name}/index.html", "event.html", model)]
    if spread:
        pages.append(Page(f"{name}/spread.svg", "svg", {
            "spec": spread, "points": [(row["id"], row["score"]) for row in scored],
            "label": f"the leaderboard's spread of {official}"}))
    rows_by_id = {row["id"]: row for row in rows}
    code_shown = private or (ev["closes"] is not None and now >= ev["closes"])
    for sid, sub in details.items():
        pages.append(Page(f"{name}/{sid}.html", "submission.html", _submission_model(
            sub, rows_by_id.get(sid), problem_info, ev, private, visible, code_shown, spread)))
    best = scored[0] if scored and scored[0]["rank"] == 1 else None
    summary = dict(info, href=f"{name}/index.html",
                   best=None if best is None else {"score": best["score"], "team": best["team"],
                                                    "submission": best["submission"]})
    return pages, summary


def _submission_model(sub: dict, row: dict | None, problem: dict, ev: dict, private: bool,
                      visible: bool, code_shown: bool, spread: dict | None) -> dict:
    folds = []
    for task in sub["tasks"]:
        fold = {"fold": task["fold"], "state": task["state"], "error_kind": task["error_kind"],
                "train_time": task["train_time"], "valid_time": task["valid_time"],
                "test_time": task["test_time"], "cpu_time": task["cpu_time"],
                "peak_memory": task["peak_memory"],
                # A browser obeys no escape sequence, but bidi controls would reorder the text.
                "error": ([printable(line) for line in error_tail(task["error"], ERROR_LINES)]
                          if task["state"] == "failed" else []),
                "scores": task["scores"]}
        if private:
            fold["host"] = task["host"]
        folds.append(fold)
    splits = [s for s in ("train", "valid", "test") if any(s in f["scores"] for f in folds)]
    model: dict[str, Any] = {
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
        # Its marks are drawn from the folds' scores above when the page is rendered.
        model["spread"] = {"spec": spread, "bagged": sub["bagged"].get("valid", {}).get(problem["official"])}
    return model


# -- plot frames (their marks are drawn from the models when rendered: datarun/site/plots.py) --


def _score_axis(values: list[float], official: str, lower: bool) -> dict:
    return {"scale": "linear", "lim": list(plots.nice_limits(values)),
            "label": f"{official} ({'lower' if lower else 'higher'} is better)"}


def _frontier_spec(scored: list[dict], official: str, lower: bool) -> dict:
    times = [r["submitted_at"] for r in scored]
    return plots.frame(300, (70, 20, 12, 42),
                       {"scale": "time", "lim": list(plots.time_limits(times)), "label": "submitted (UTC)"},
                       _score_axis([r["score"] for r in scored], official, lower))


def _cpu_spec(cpu: list[float], scored: list[dict], official: str, lower: bool) -> dict:
    return plots.frame(300, (70, 20, 12, 42),
                       {"scale": "log", "lim": list(plots.log_limits(cpu)),
                        "label": "CPU time, seconds (all folds, log scale)"},
                       _score_axis([r["score"] for r in scored], official, lower))


def _spread_spec(scored: list[dict], details: dict, official: str) -> dict:
    """The frame of the event's spread of official scores: drawn once, in spread.svg; each
    submission's page lays its folds over it, so a new submission rewrites that file, not
    every page. Its limits hold every fold's score too."""
    values = [r["score"] for r in scored]
    for sub in details.values():
        values += [t["scores"]["valid"][official] for t in sub["tasks"]
                   if is_number(t["scores"].get("valid", {}).get(official))]
    return plots.frame(150, (110, 20, 10, 40),
                       {"scale": "linear", "lim": list(plots.nice_limits(values)),
                        "label": f"{official} (valid)"},
                       {"scale": "categories", "lim": ["leaderboard", "this submission"], "label": ""})
