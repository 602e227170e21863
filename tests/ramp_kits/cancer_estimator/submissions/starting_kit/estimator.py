from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler


def get_estimator():
    return make_pipeline(StandardScaler(), LogisticRegression())
