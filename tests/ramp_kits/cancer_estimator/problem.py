import os

import pandas as pd
import rampwf as rw
from sklearn.model_selection import StratifiedKFold

problem_title = 'Breast cancer (Estimator workflow, no test data)'
_target_column_name = 'target'
Predictions = rw.prediction_types.make_multiclass(label_names=[0, 1])
workflow = rw.workflows.Estimator()
score_types = [
    rw.score_types.ROCAUC(name='auc'),
    rw.score_types.Accuracy(name='acc'),
]


def get_cv(X, y):
    cv = StratifiedKFold(n_splits=4, shuffle=True, random_state=11)
    return cv.split(X, y)


def get_train_data(path='.'):
    data = pd.read_csv(os.path.join(path, 'data', 'train.csv'))
    y_array = data[_target_column_name].values
    X_df = data.drop([_target_column_name], axis=1)
    return X_df, y_array


def get_test_data(path='.'):
    # The test set is kept by the organisers: none in the kit.
    return None, None
