"""Scoring on the organiser's side: the one place that knows how a problem is scored.

The dispatcher hands pulled predictions here; the problem decides how they are scored
(native kits with `datarun.scores`). Keeping the choice here lets other kinds of kit
score their own way without the dispatcher knowing.
"""

import numpy as np


class ProblemScorer:
    """Scores one problem's predictions; caches its labels and folds."""

    def __init__(self, workspace, db, problem: dict):
        from datarun.problems import load_labels

        self.workspace = workspace
        self.db = db
        self.problem = problem
        self.y_train, self.y_test = load_labels(workspace, problem)
        self._folds: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def fold(self, fold: int) -> tuple[np.ndarray, np.ndarray]:
        if fold not in self._folds:
            from datarun.problems import load_fold

            self._folds[fold] = load_fold(self.workspace, self.db, self.problem["name"], fold)
        return self._folds[fold]

    def prediction_shapes(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """The shapes y_pred_train and y_pred_test must have."""
        classes = self.problem["classes"]
        extra = (len(classes),) if classes else ()
        return (self.problem["n_train"], *extra), (self.problem["n_test"], *extra)

    def task_scores(self, fold: int, y_pred_train, y_pred_test) -> list[tuple[str, str, float | None]]:
        from datarun.scores import task_scores

        train_idx, valid_idx = self.fold(fold)
        p = self.problem
        return task_scores(p["kind"], p["classes"], p["score_names"], self.y_train, self.y_test,
                           train_idx, valid_idx, y_pred_train, y_pred_test)

    def bagged_scores(self, folds: list[int], preds_train: list, preds_test: list):
        from datarun.scores import bagged_scores

        p = self.problem
        return bagged_scores(p["kind"], p["classes"], p["score_names"], self.y_train, self.y_test,
                             [self.fold(f)[1] for f in folds], preds_train, preds_test)


def scorer_for(workspace, db, problem: dict) -> ProblemScorer:
    return ProblemScorer(workspace, db, problem)
