from sklearn.preprocessing import StandardScaler


class Features:
    def fit(self, X, y):
        self.scaler = StandardScaler().fit(X)
        return self

    def transform(self, X):
        return self.scaler.transform(X)
