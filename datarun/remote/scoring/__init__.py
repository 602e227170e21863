"""Scores as plain numbers: metrics, score types, bagging, blending and its rankers.

Arrays in, numbers out: nothing here reads the workspace, so every definition can be tested
(and compared with scikit-learn and ramp-workflow) on its own."""
