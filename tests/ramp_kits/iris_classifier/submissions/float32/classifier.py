import numpy as np
from sklearn.linear_model import LogisticRegression


class Classifier:
    """Probabilities in float32, as neural networks give them: scored as such by ramp-test."""

    def fit(self, X, y):
        self.clf = LogisticRegression(C=0.3, max_iter=500)
        self.clf.fit(X, y)

    def predict_proba(self, X):
        return self.clf.predict_proba(X).astype(np.float32)
