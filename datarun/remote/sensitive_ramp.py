"""A sensitive RAMP problem on its data owner's host: the kit's own scores, bagging and blend.

The owner's `datarun owner prepare` wrote a RAMP kit's data set (`data/<hash>/`, with the
kit's problem.py in `kit/`) and kept the kit's own label objects (`y_train.pkl`,
`y_test.pkl`) in `sensitive/<hash>/`, out of every task's reach. Here the kit's problem.py
is imported (with the problem's environment, as a task runs it) and its `Predictions` and
score types score, bag and blend the predictions kept on this host, with the very
functions the organiser runs for an open RAMP problem (`scoring/rampscores.py`,
`scoring/rampblend.py`): the numbers that leave are the ones an open run would store.

The pickles read here were written on this host by its owner's datarun; nothing from a
task or from the organiser is unpickled.
"""

import json
from pathlib import Path

from .common import HarnessError


class RampTruth:
    """What scoring a RAMP kit needs, as `datarun.board.scorer.RampScorer` holds it on the
    organiser's side: the kit's Predictions, its score types, its label objects."""

    def __init__(self, root, data_hash: str, store_path: Path):
        import pickle

        from .ramp import _import_problem, _kit_context

        folder = Path(root) / "data" / data_hash
        try:
            meta = json.loads((folder / "meta.json").read_text())
            kit = folder / meta.get("kit", "kit")
            with _kit_context(kit, dict(meta.get("env") or {})):
                module = _import_problem(kit / "problem.py", data_hash)
            with open(store_path / "y_train.pkl", "rb") as handle:
                self.truth_train = pickle.load(handle)
            with open(store_path / "y_test.pkl", "rb") as handle:
                self.truth_test = pickle.load(handle)
        except Exception as error:
            raise HarnessError(f"the RAMP kit of data set {data_hash[:12]} cannot score on this host "
                               f"({type(error).__name__}: {str(error)[:160]}): install ramp-workflow and "
                               "what the kit imports for the harness's Python") from None
        self.Predictions = module.Predictions
        self.score_types = list(module.score_types)
        self.pred_shape = tuple(int(n) for n in meta.get("pred_shape") or ())

    def check(self) -> None:
        """Each score type scores the training labels against themselves, as at `owner prepare`."""
        P = self.Predictions
        for score in self.score_types:
            try:
                float(score.score_function(P(y_true=self.truth_train), P(y_true=self.truth_train)))
            except Exception as error:
                raise HarnessError(f"the RAMP kit's score type {score.name!r} cannot run on this host "
                                   f"({type(error).__name__}: {str(error)[:160]}): install what it "
                                   "imports for the harness's Python") from None


def task_scores(truth: RampTruth, train_idx, valid_idx, pred_train, pred_test) -> list:
    from .scoring.rampscores import task_scores as scores

    return scores(truth.Predictions, truth.score_types, truth.truth_train, truth.truth_test,
                  train_idx, valid_idx, pred_train, pred_test)


def usable(truth: RampTruth, path: Path, rows: int):
    """A kept prediction array in its own dtype, or None if missing or not one the kit takes
    (what the organiser's `contrib._Inputs._load` accepts for an open RAMP problem)."""
    import numpy as np

    from .scoring.predictions import prediction_fault

    try:
        array = np.asarray(np.load(path, allow_pickle=False))
    except Exception:
        return None
    if array.shape != (rows, *truth.pred_shape) or array.dtype.kind not in "biuf":
        return None
    return None if prediction_fault(array, False) else array


def bagged(truth: RampTruth, valid: list, trains: list, tests: list) -> list:
    """[[split, score, value]...] as the organiser's `RampScorer.bagged_rows` gives for an open
    problem; a kit whose predictions cannot be combined gives rows without values."""
    from .scoring.rampscores import bagged_table

    try:
        table = bagged_table(truth.Predictions, truth.score_types, truth.truth_train, truth.truth_test,
                             valid, trains, tests)
    except Exception:
        splits = ("valid", "test") if truth.truth_test is not None else ("valid",)
        return [[split, st.name, None] for split in splits for st in truth.score_types]
    return [[split, name, values[-1]] for split, scores in table.items() for name, values in scores.items()]


def blend_scope(truth: RampTruth, valid_idx: list, trains: list, tests) -> dict:
    """One scope's blend as `datarun.board.contrib` computes an open RAMP problem's:
    trains[s][f] is candidate s's predictions on every training row for fold f; `tests(f)`
    gives every candidate's test predictions for fold f (None if one is missing)."""
    from .scoring.native import mean_defined
    from .scoring.rampblend import RampBlend, blend, blended_test

    entry: dict = {"blended": False}
    try:
        folds, state = blend(truth, valid_idx, [[t[f] for t in trains] for f in range(len(valid_idx))])
        made = RampBlend(folds, state, len(trains))
        test = None
        if truth.truth_test is not None:
            every = [tests(f) for f in range(len(valid_idx))]
            if all(t is not None for t in every):
                test = blended_test(truth, made.members, every)
    except Exception:  # the kit's own combine or score raises, as it would in ramp-blend
        return entry
    entry["blended"] = made.n_blended_folds > 0
    entry["contributivity"] = [float(v) for v in made.contributivity]
    entry["combined_valid"] = mean_defined(made.combined_scores)
    entry["best_single_valid"] = mean_defined(made.best_single_scores)
    entry["combined_test"] = test
    return entry
