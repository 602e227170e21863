"""Scoring on the organiser's side: the one place that knows how a problem is scored.

The dispatcher hands pulled predictions here; the problem decides how they are scored:
native kits with `datarun.remote.scoring.scores`, RAMP kits with their own `score_types` and
`Predictions` (`datarun.remote.scoring.rampscores`, the code a sensitive RAMP problem's host
scores with too), called exactly as ramp-workflow's `ramp-test` calls them (per fold:
`score_function(Predictions(y_true=y, fold_is=idx), Predictions(y_pred=p, fold_is=idx))`;
bagged: `get_score_cv_bags`), so the numbers are ramp-test's. Keeping the choice here lets
each kind of kit score its own way without the dispatcher knowing.
"""


import numpy as np


class ProblemScorer:
    """Scores one problem's predictions; caches its labels and folds."""

    keeps_dtype = False  # predictions are read as float64

    def __init__(self, workspace, db, problem: dict):
        from datarun.problems.registered import load_labels

        self.workspace = workspace
        self.db = db
        self.problem = problem
        self.y_train, self.y_test = load_labels(workspace, problem)
        self._folds: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def fold(self, fold: int) -> tuple[np.ndarray, np.ndarray]:
        if fold not in self._folds:
            from datarun.problems.registered import load_fold

            self._folds[fold] = load_fold(self.workspace, self.db, self.problem["name"], fold)
        return self._folds[fold]

    @property
    def probabilities(self) -> bool:
        """Whether predictions must be class probabilities (`datarun.remote.scoring.predictions`)."""
        return self.problem["kind"] == "classification"

    def prediction_shapes(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """The shapes y_pred_train and y_pred_test must have."""
        classes = self.problem["classes"]
        extra = (len(classes),) if classes else ()
        return (self.problem["n_train"], *extra), (self.problem["n_test"], *extra)

    def task_scores(self, fold: int, y_pred_train, y_pred_test) -> list[tuple[str, str, float | None]]:
        from datarun.remote.scoring.scores import task_scores

        train_idx, valid_idx = self.fold(fold)
        p = self.problem
        return task_scores(p["kind"], p["classes"], p["score_names"], self.y_train, self.y_test,
                           train_idx, valid_idx, y_pred_train, y_pred_test)

    def bagged_scores(self, folds: list[int], preds_train: list, preds_test: list):
        from datarun.remote.scoring.scores import bagged_scores

        p = self.problem
        return bagged_scores(p["kind"], p["classes"], p["score_names"], self.y_train, self.y_test,
                             [self.fold(f)[1] for f in folds], preds_train, preds_test)

    def bagged_rows(self, folds: list[int], preds_train: list, preds_test: list):
        """(split, score, value, curve, note) rows to store; `curve` (the scores of the first
        1, 2, ... folds bagged, for `export --ramp`) and `note` (why there is no value) may
        be None."""
        return [(split, name, value, None, None)
                for split, name, value in self.bagged_scores(folds, preds_train, preds_test)]


class RampScorer(ProblemScorer):
    """Scores a RAMP problem with the kit's problem.py (needs ramp-workflow here).

    The truths are the kit's own label objects (as get_train_data and get_test_data
    returned them) and the predictions the kit's own y_pred arrays, in their dtype: the
    kit's Predictions and score types get exactly what ramp-test gives them.
    """

    keeps_dtype = True

    # RAMP kits keep ramp-test's rule: predictions are whatever the kit's Predictions
    # accept (checked to be finite numbers of the right shape), not datarun's.
    probabilities = False

    def __init__(self, workspace, db, problem: dict):
        from datarun.problems.rampkit import load_ramp_labels, problem_module

        self.workspace = workspace
        self.db = db
        self.problem = problem
        self._folds = {}
        self.truth_train, self.truth_test = load_ramp_labels(workspace, problem)
        self.module = problem_module(workspace, problem)
        self.Predictions = self.module.Predictions
        self.score_types = list(self.module.score_types)

    def prediction_shapes(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        ramp = self.problem["spec"]["ramp"]
        if "pred_shape" not in ramp:  # registered before any prediction shape ran
            return super().prediction_shapes()
        row = tuple(int(n) for n in ramp["pred_shape"])
        return (self.problem["n_train"], *row), (self.problem["n_test"], *row)

    def score_rows(self, split: str, truth, predictions) -> list[tuple[str, str, float | None]]:
        from datarun.remote.scoring.rampscores import score_rows

        return score_rows(self.score_types, split, truth, predictions)

    def task_scores(self, fold: int, y_pred_train, y_pred_test) -> list[tuple[str, str, float | None]]:
        from datarun.remote.scoring.rampscores import task_scores

        train_idx, valid_idx = self.fold(fold)
        return task_scores(self.Predictions, self.score_types, self.truth_train, self.truth_test,
                           train_idx, valid_idx, y_pred_train, y_pred_test)

    def bagged_table(self, folds: list[int], preds_train: list, preds_test: list) -> dict:
        """ramp-test's bagged_scores.csv as {split: {score: [score of the first 1, 2, ... folds]}}."""
        from datarun.remote.scoring.rampscores import bagged_table

        return bagged_table(self.Predictions, self.score_types, self.truth_train, self.truth_test,
                            [self.fold(f)[1] for f in folds], preds_train, preds_test)

    def bagged_scores(self, folds: list[int], preds_train: list, preds_test: list):
        if not folds:
            return []
        table = self.bagged_table(folds, preds_train, preds_test)
        return [(split, name, values[-1]) for split, scores in table.items()
                for name, values in scores.items()]

    def bagged_rows(self, folds: list[int], preds_train: list, preds_test: list):
        """As ramp-test bags them; a kit whose Predictions cannot be bagged (its combine
        raises, as ramp-test's bagging would) gets rows without values and a note why."""
        if not folds:
            return []
        try:
            table = self.bagged_table(folds, preds_train, preds_test)
        except Exception as error:
            note = combine_note(error, "no bagged scores")
            splits = ("valid", "test") if self.truth_test is not None else ("valid",)
            return [(split, st.name, None, None, note) for split in splits
                    for st in self.score_types]
        return [(split, name, values[-1], values, None) for split, scores in table.items()
                for name, values in scores.items()]


def combine_note(error: BaseException, what: str) -> str:
    """One line for a kit whose predictions cannot be combined: `what` is not there
    ("no bagged scores", "no contributivity"), and why; ramp-test would fail there too."""
    text = " ".join(f"{type(error).__name__}: {error}".split())
    if len(text) > 160:
        text = text[:160] + "..."
    return f"{what}: combining the kit's predictions fails ({text}), as it would in ramp-test"


def scorer_for(workspace, db, problem: dict) -> ProblemScorer:
    if problem["workflow"] == "ramp":
        return RampScorer(workspace, db, problem)
    return ProblemScorer(workspace, db, problem)


def score_directions(problem: dict) -> dict[str, bool]:
    """{score name: lower is better} for a problem's scores, native or RAMP."""
    ramp = (problem.get("spec") or {}).get("ramp")
    if ramp:
        return {s["name"]: s["lower_is_better"] for s in ramp["scores"]}
    from datarun.remote.scoring.scores import SCORE_TYPES

    return {name: SCORE_TYPES[name].lower_is_better for name in problem["score_names"]}
