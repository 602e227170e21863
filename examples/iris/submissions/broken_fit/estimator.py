"""A submission that fails in fit, to show how a failure is reported."""

from sklearn.base import BaseEstimator, ClassifierMixin


class Broken(ClassifierMixin, BaseEstimator):
    def fit(self, X, y):
        raise ValueError(f"this estimator cannot fit: expected 5 features, got {X.shape[1]}")

    def predict_proba(self, X):
        raise NotImplementedError


def get_estimator():
    return Broken()
