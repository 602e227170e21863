from sklearn.linear_model import LogisticRegression


class Classifier:
    def fit(self, X, y):
        self.clf = LogisticRegression(max_iter=500)
        self.clf.fit(X, y)

    def predict_proba(self, X):
        return self.clf.predict_proba(X)
