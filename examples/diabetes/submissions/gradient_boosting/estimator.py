from sklearn.ensemble import GradientBoostingRegressor


def get_estimator():
    return GradientBoostingRegressor(n_estimators=50, max_depth=2, learning_rate=0.1, random_state=0)
