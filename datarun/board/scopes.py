"""Which submissions a board's figures come from: its scope.

A board's figures (ranks, contributivity, the blended and best single scores) come from
the submissions it shows, and from those only, so a blend is kept per scope:

- `*`: every fully trained submission of the problem (the organisers' problem-wide board);
- each event's name: that event's fully trained submissions (the event's board);
- `*public`: while some event's scores are withheld (`event add --public-opens`), every
  fully trained submission outside those events (the participants' problem-wide board).

Plain SQL and sets, no numpy: `leaderboard` reads these on every page view.
"""


ALL = "*"
PUBLIC = "*public"


def fully_trained(db, problem: str) -> list[tuple[int, str | None]]:
    """(id, event) of the problem's shown submissions whose every fold is done, by id (a
    hidden submission is in no blend)."""
    # Asked after every newly scored submission: the tasks not done are few, and found
    # through the state index (`<` and `>` use it where `!=` would scan), so this costs a
    # few ms at 2,000 submissions x 8 folds where grouping every task row cost 12 ms.
    return [(row[0], row[1]) for row in db.execute(
        "SELECT s.id, s.event FROM submissions s WHERE s.problem = ? AND s.hidden_at IS NULL "
        "AND s.id NOT IN (SELECT t.submission FROM tasks t WHERE t.state < 'done' OR t.state > 'done') "
        "AND EXISTS (SELECT 1 FROM tasks t WHERE t.submission = s.id) ORDER BY s.id", [problem])]


def hidden_events(db, problem: str, now: float) -> dict[str, float]:
    """The problem's events whose scores are not public yet: {name: public_opens}."""
    if "events" not in db.table_names():
        return {}
    return dict(db.execute(
        "SELECT name, public_opens FROM events WHERE problem = ? AND public_opens > ?",
        [problem, now]).fetchall())


def scopes_of(trained: list[tuple[int, str | None]], hidden: set[str]) -> dict[str, list[int]]:
    """{scope: the submission ids it blends} for these fully trained submissions."""
    if not trained:
        return {}
    scopes: dict[str, list[int]] = {ALL: [sid for sid, _ in trained]}
    for sid, event in trained:
        if event is not None:
            scopes.setdefault(event, []).append(sid)
    if any(event in hidden for _, event in trained):
        scopes[PUBLIC] = [sid for sid, event in trained if event not in hidden]
    return scopes


def board_scope(event: str | None, private: bool, hidden: set[str]) -> str:
    """The scope whose figures a board shows."""
    if event is not None:
        return event
    return ALL if private or not hidden else PUBLIC
