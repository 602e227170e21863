import diabetes_io
import rampwf as rw
from sklearn.model_selection import KFold

problem_title = 'Diabetes progression and two blood serums (3 regression targets)'
Predictions = rw.prediction_types.make_regression(label_names=diabetes_io.TARGETS)
workflow = rw.workflows.Regressor()
score_types = [
    rw.score_types.RMSE(),
    rw.score_types.NormalizedRMSE(name='nrmse'),
]


def get_cv(X, y):
    cv = KFold(n_splits=3, shuffle=True, random_state=21)
    return cv.split(X)


def get_train_data(path='.'):
    return diabetes_io.read(path, 'train.csv')


def get_test_data(path='.'):
    return diabetes_io.read(path, 'test.csv')
