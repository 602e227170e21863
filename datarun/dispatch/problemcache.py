"""The problems a dispatcher works for, each read once: its row, its scorer, its folds."""

from __future__ import annotations

from typing import Any

import numpy as np

from datarun.board.scorer import ProblemScorer, scorer_for
from datarun.problems.registered import get_problem
from datarun.store.db import Database
from datarun.store.workspace import Workspace


class ProblemCache:
    def __init__(self, workspace: Workspace, db: Database):
        self.workspace = workspace
        self.db = db
        self._problems: dict[str, dict[str, Any]] = {}
        self._scorers: dict[str, ProblemScorer] = {}

    def problem(self, name: str) -> dict[str, Any]:
        if name not in self._problems:
            self._problems[name] = get_problem(self.db, name)
        return self._problems[name]

    def scorer(self, name: str) -> ProblemScorer:
        if name not in self._scorers:
            self._scorers[name] = scorer_for(self.workspace, self.db, self.problem(name))
        return self._scorers[name]

    def fold(self, problem: str, fold: int) -> tuple[np.ndarray, np.ndarray]:
        """(train_idx, valid_idx) of one of the problem's folds."""
        return self.scorer(problem).fold(fold)
