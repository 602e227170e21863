"""Write the data/ files of the RAMP test kits from scikit-learn's bundled data sets.

Run from this folder: python make_data.py. The files are small and committed; this script
says where they came from and rebuilds them.
"""

from pathlib import Path

import numpy as np
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris, load_wine

HERE = Path(__file__).resolve().parent


def shuffled(frame, seed=0):
    return frame.iloc[np.random.default_rng(seed).permutation(len(frame))].reset_index(drop=True)


def write(frame, kit, name):
    frame.to_csv(HERE / kit / "data" / name, index=False)


def main():
    iris = load_iris(as_frame=True)
    frame = iris.frame.rename(columns={"target": "species"})
    frame["species"] = iris.target_names[iris.target]
    frame = shuffled(frame)
    write(frame.iloc[:110], "iris_classifier", "train.csv")
    write(frame.iloc[110:], "iris_classifier", "test.csv")

    diabetes = shuffled(load_diabetes(as_frame=True).frame.round(6))
    write(diabetes.iloc[:160], "diabetes_regressor", "train.csv")
    write(diabetes.iloc[160:220], "diabetes_regressor", "test.csv")
    write(diabetes.iloc[220:380], "diabetes_features", "train.csv")
    write(diabetes.iloc[380:], "diabetes_features", "test.csv")

    # The external data: each row's bmi, looked up by a key the features carry.
    keyed = diabetes.iloc[:220].copy()
    keyed.insert(0, "key", np.arange(len(keyed)))
    write(keyed[["key", "bmi"]], "diabetes_external", "external_data.csv")
    keyed = keyed.drop(columns=["bmi"])
    write(keyed.iloc[:160], "diabetes_external", "train.csv")
    write(keyed.iloc[160:], "diabetes_external", "test.csv")

    # Three targets: the progression and two serum measurements, from the other columns.
    write(diabetes.iloc[:300], "diabetes_multi", "train.csv")
    write(diabetes.iloc[300:], "diabetes_multi", "test.csv")

    wine = load_wine(as_frame=True).frame.rename(columns={"target": "cultivar"})
    wine = shuffled(wine.round(6), seed=1)
    write(wine.iloc[:130], "wine_custom", "train.csv")
    write(wine.iloc[130:], "wine_custom", "test.csv")

    cancer = load_breast_cancer(as_frame=True).frame
    columns = ["mean radius", "mean texture", "mean smoothness", "worst concavity", "target"]
    write(shuffled(cancer[columns]).iloc[:240], "cancer_estimator", "train.csv")


if __name__ == "__main__":
    main()
