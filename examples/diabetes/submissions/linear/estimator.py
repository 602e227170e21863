from sklearn.linear_model import LinearRegression


def get_estimator():
    return LinearRegression()
