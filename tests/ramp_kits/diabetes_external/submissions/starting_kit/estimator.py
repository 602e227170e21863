import os

import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.linear_model import Ridge
from sklearn.pipeline import make_pipeline


class MergeExternal(BaseEstimator, TransformerMixin):
    """Adds the external data's column, looked up by the features' key."""

    def fit(self, X, y=None):
        path = os.path.join(os.path.dirname(__file__), 'external_data.csv')
        self.external_ = pd.read_csv(path)
        return self

    def transform(self, X):
        merged = X.merge(self.external_, on='key', how='left')
        return merged.drop(columns=['key']).values


def get_estimator():
    return make_pipeline(MergeExternal(), Ridge(alpha=0.1))
