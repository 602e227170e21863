"""Narrower views of a leaderboard: each team's best submission, and the final standings.

Both take a board built by `datarun.board.leaderboard.leaderboard` and keep some of its
rows, ranked again among themselves (standard competition ranking). A narrower view shows
no contributivity and no blended score: those are shares of the blend of the whole
board's submissions, and every figure a board shows comes from the submissions it shows.

- best per team: each team's best ranked row (its first in the board's order), else its
  first unranked one;
- final standings (`leaderboard --event E --final`, organisers): each team's final
  submissions — those it chose with `submission select`, else its best `--max-final`
  by the public ranking (every submission when the event sets no `--max-final`) — ranked
  by the bagged test score of the official score type: the private leaderboard.
"""

from __future__ import annotations

from typing import Any

from datarun.board.leaderboard import _defined, competition_ranks

NARROW_NOTICE = ("contributivity and the blended score are of the whole board's submissions: "
                 "not shown in this view")


def _narrowed(board: dict[str, Any], rows: list[dict[str, Any]], key: str, view: str) -> dict[str, Any]:
    ranked = [row for row in rows if row["rank"] is not None or view == "final"]
    ranked = [row for row in ranked if not row["scores_hidden"] and row["state"] == "scored"
              and _defined(key_of(row, key))]
    lower = board["lower_is_better"][board["official_score"]]
    ranks = competition_ranks([key_of(row, key) for row in ranked], lower)
    new_rank = {row["id"]: rank for row, rank in zip(ranked, ranks, strict=True)}
    out = []
    for row in rows:
        row = dict(row, rank=new_rank.get(row["id"]), contributivity=None)
        out.append(row)
    out.sort(key=lambda row: (row["rank"] is None, row["rank"] or 0, row["id"]))
    notices = [board["notice"]] if board["notice"] else []
    notices.append(NARROW_NOTICE)
    return dict(board, rows=out, blend=None, view=view, notice="; ".join(notices))


def key_of(row: dict[str, Any], key: str) -> Any:
    return row["score"] if key == "score" else (row.get("test") or {}).get(key)


def best_per_team(board: dict[str, Any]) -> dict[str, Any]:
    """Each team's best row (the board's rows are in rank order), ranked again."""
    seen: set[str] = set()
    rows = []
    for row in board["rows"]:
        if row["team"] not in seen:
            seen.add(row["team"])
            rows.append(row)
    return _narrowed(board, rows, "score", "best_per_team")


def final_standings(board: dict[str, Any], chosen: dict[str, list[int]], max_final: int | None) -> dict[str, Any]:
    """The event's private leaderboard: each team's final submissions, ranked by test score.

    `board` is the event's private board; `chosen` the ids each team selected."""
    by_team: dict[str, list[dict[str, Any]]] = {}
    for row in board["rows"]:  # in public rank order
        by_team.setdefault(row["team"], []).append(row)
    rows = []
    for team, team_rows in by_team.items():
        if team in chosen:
            picked = [row for row in team_rows if row["id"] in chosen[team]]
        elif max_final is None:
            picked = team_rows
        else:
            picked = [row for row in team_rows if row["rank"] is not None][:max_final]
        for row in picked:
            rows.append(dict(row, final="chosen" if team in chosen else "best public"))
    official = board["official_score"]
    return _narrowed(board, rows, official, "final")
