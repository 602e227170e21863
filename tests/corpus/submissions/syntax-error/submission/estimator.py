def get_estimator(:
    pass
