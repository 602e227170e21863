from sklearn.ensemble import RandomForestClassifier


def get_estimator():
    return RandomForestClassifier(n_estimators=50, max_depth=5, n_jobs=2, random_state=0)
