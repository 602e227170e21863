"""Which scores a viewer may see: the public and private views of a submission's details.

The leaderboard applies the same rule to its rows (datarun/board/leaderboard.py): the
public view (participants) never carries a test score, and no score at all of an event
whose `public_opens` is still ahead; the private view (organisers) carries everything.
Code that reads a submission's details for a public audience asks `visible_splits`
which splits to read at all, so a test score is never loaded, not merely left out.
"""

import copy

SPLITS = ("train", "valid", "test")


def visible_splits(private: bool, scores_public: bool) -> tuple[str, ...]:
    """The splits whose scores a viewer sees: all privately, train and valid publicly once
    the event's scores are public, none before."""
    if private:
        return SPLITS
    return ("train", "valid") if scores_public else ()


def submission_view(details: dict, private: bool, scores_public: bool) -> dict:
    """A copy of `describe_submission`'s answer without the scores the viewer may not see."""
    keep = visible_splits(private, scores_public)
    view = copy.deepcopy(details)
    for task in view.get("tasks", []):
        task["scores"] = {split: values for split, values in task["scores"].items() if split in keep}
    view["bagged"] = {split: values for split, values in view.get("bagged", {}).items() if split in keep}
    view["scores_hidden"] = not private and not scores_public
    return view


def public_submission(workspace, db, submission_id, private: bool, now: float | None = None) -> dict:
    """`describe_submission` as a viewer may see it: `submission_view` with its event's
    scores public or not at `now`; `scores_public_at` says from when (None: public)."""
    import time

    from datarun.board.scopes import hidden_events
    from datarun.challenge.submissions import describe_submission

    details = describe_submission(workspace, db, submission_id)
    hidden = hidden_events(db, details["problem"], time.time() if now is None else now)
    view = submission_view(details, private, details["event"] not in hidden)
    view["private"] = private
    view["scores_public_at"] = hidden.get(details["event"])
    return view
