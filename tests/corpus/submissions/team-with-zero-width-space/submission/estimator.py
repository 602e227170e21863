from sklearn.linear_model import LogisticRegression

def get_estimator():
    return LogisticRegression()
