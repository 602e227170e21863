import os

import numpy as np
import pandas as pd
import rampwf as rw
from rampwf.score_types.base import BaseScoreType
from rampwf.utils.importing import import_module_from_source
from sklearn.model_selection import StratifiedKFold

# The workflow class lives in a module of the kit, beside this file.
_custom = import_module_from_source(
    os.path.join(os.path.dirname(__file__), 'custom_workflow.py'), 'custom_workflow')

problem_title = 'Wine cultivars (the kit\'s own workflow and score type)'
_target_column_name = 'cultivar'
_prediction_label_names = [0, 1, 2]
Predictions = rw.prediction_types.make_multiclass(
    label_names=_prediction_label_names)
workflow = _custom.FeaturesThenModel()


class MeanTrueProbability(BaseScoreType):
    """The mean probability given to the true class: a score type of the kit's own."""
    is_lower_the_better = False
    minimum = 0.0
    maximum = 1.0

    def __init__(self, name='true_proba', precision=4):
        self.name = name
        self.precision = precision

    def __call__(self, y_true_proba, y_proba):
        return float(np.mean(np.sum(y_true_proba * y_proba, axis=1)))


score_types = [
    rw.score_types.NegativeLogLikelihood(name='nll'),
    rw.score_types.Accuracy(name='acc'),
    MeanTrueProbability(),
]


def get_cv(X, y):
    cv = StratifiedKFold(n_splits=3, shuffle=True, random_state=4)
    return cv.split(X, y)


def _read_data(path, f_name):
    data = pd.read_csv(os.path.join(path, 'data', f_name))
    y_array = data[_target_column_name].values
    X_array = data.drop([_target_column_name], axis=1).values
    return X_array, y_array


def get_train_data(path='.'):
    return _read_data(path, 'train.csv')


def get_test_data(path='.'):
    return _read_data(path, 'test.csv')
