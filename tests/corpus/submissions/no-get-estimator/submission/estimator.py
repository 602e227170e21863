def make_estimator():
    return None
