"""A RAMP kit's scores: per task and bagged, with the kit's own `Predictions` and score types.

Called exactly as ramp-workflow's `ramp-test` calls them (per fold:
`score_function(Predictions(y_true=y, fold_is=idx), Predictions(y_pred=p, fold_is=idx))`;
bagged: `get_score_cv_bags`), so the numbers are ramp-test's. The organiser scores an open
RAMP problem with these functions (`datarun.board.scorer.RampScorer`), and the host holding
a sensitive RAMP problem's data scores it with the same ones (`..sensitive_ramp`): the same
predictions through the same code give the same bits.

Where ramp-test would stop (a kit's score function raising on a submission's predictions),
the score is undefined (None) and the others are still computed.
"""

import math


def value(score) -> float | None:
    number = float(score)
    return None if math.isnan(number) else number


def kit_score(function, *args) -> float | None:
    """A kit's score, or None (undefined) when the kit's own code cannot compute it."""
    try:
        return value(function(*args))
    except Exception:
        return None


class Lenient:
    """A kit's score type whose score function gives NaN (undefined) where it raises."""

    def __init__(self, score_type):
        self.score_type = score_type

    def score_function(self, truth, predictions) -> float:
        try:
            return self.score_type.score_function(truth, predictions)
        except Exception:
            return math.nan


def score_rows(score_types, split: str, truth, predictions) -> list[tuple[str, str, float | None]]:
    return [(split, st.name, kit_score(st.score_function, truth, predictions)) for st in score_types]


def task_scores(P, score_types, truth_train, truth_test, train_idx, valid_idx,
                y_pred_train, y_pred_test) -> list[tuple[str, str, float | None]]:
    """Every score type on a fold's train and valid rows and on the test rows (when the kit
    has test data: `truth_test` is not None)."""
    rows = []
    for split, idx in (("train", train_idx), ("valid", valid_idx)):
        rows += score_rows(score_types, split, P(y_true=truth_train, fold_is=idx),
                           P(y_pred=y_pred_train, fold_is=idx))
    if truth_test is not None:
        rows += score_rows(score_types, "test", P(y_true=truth_test), P(y_pred=y_pred_test))
    return rows


def bagged_table(P, score_types, truth_train, truth_test, valid_indices: list, preds_train: list,
                 preds_test: list) -> dict:
    """ramp-test's bagged_scores.csv as {split: {score: [score of the first 1, 2, ... folds]}}.

    A kit whose predictions cannot be combined has no bagged scores at all (this raises; the
    caller says so); a score function that raises gives one undefined score."""
    from rampwf.utils.combine import get_score_cv_bags

    table: dict[str, dict[str, list[float | None]]] = {}
    steps: list[tuple] = [("valid", preds_train, P(y_true=truth_train), list(valid_indices))]
    if truth_test is not None:
        steps.append(("test", preds_test, P(y_true=truth_test), None))
    for split, preds, truth, indices in steps:
        predictions = [P(y_pred=p, fold_is=None if indices is None else idx)
                       for p, idx in zip(preds, indices or [None] * len(preds), strict=True)]
        table[split] = {}
        for st in score_types:
            _, scores = get_score_cv_bags(Lenient(st), predictions, truth, test_is_list=indices)
            table[split][st.name] = [value(v) for v in scores]
    return table
