from sklearn.linear_model import LogisticRegression


def get_model():
    return LogisticRegression(C=0.5, max_iter=1000)
