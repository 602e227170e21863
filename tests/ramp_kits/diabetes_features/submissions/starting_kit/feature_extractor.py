class FeatureExtractor:
    def fit(self, X_df, y):
        return self

    def transform(self, X_df):
        X_df = X_df.copy()
        X_df['bmi_bp'] = X_df['bmi'] * X_df['bp']
        return X_df.values
