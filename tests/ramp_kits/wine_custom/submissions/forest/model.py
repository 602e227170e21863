from sklearn.ensemble import RandomForestClassifier


def get_model():
    return RandomForestClassifier(n_estimators=30, max_depth=4, random_state=0)
