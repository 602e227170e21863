from sklearn.linear_model import Ridge


class Regressor:
    """One model for the three targets (y has three columns)."""

    def fit(self, X, y):
        self.reg = Ridge(alpha=0.1)
        self.reg.fit(X, y)

    def predict(self, X):
        return self.reg.predict(X)
