import os

import pandas as pd
import rampwf as rw
from sklearn.model_selection import StratifiedShuffleSplit

problem_title = 'Iris species (Classifier workflow)'
_target_column_name = 'species'
_prediction_label_names = ['setosa', 'versicolor', 'virginica']
Predictions = rw.prediction_types.make_multiclass(
    label_names=_prediction_label_names)
workflow = rw.workflows.Classifier()
score_types = [
    rw.score_types.Accuracy(name='acc'),
    rw.score_types.NegativeLogLikelihood(name='nll'),
    rw.score_types.BalancedAccuracy(name='bal_acc'),
]


def get_cv(X, y):
    cv = StratifiedShuffleSplit(n_splits=3, test_size=0.3, random_state=57)
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
