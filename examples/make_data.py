"""Regenerate the example kits' data from scikit-learn's bundled data sets.

The CSV files are committed so the demo needs nothing else; this script rebuilds them
byte for byte (fixed seeds, no randomness left to chance):

    python examples/make_data.py
"""

from pathlib import Path

import numpy as np
from sklearn.datasets import load_diabetes, load_iris
from sklearn.model_selection import train_test_split

HERE = Path(__file__).resolve().parent


def make_iris(folder: Path) -> None:
    # A separate test file, split stratified so each species is in both files.
    bunch = load_iris(as_frame=True)
    frame = bunch.data.rename(columns=lambda c: c.replace(" (cm)", "").replace(" ", "_"))
    frame["species"] = np.asarray(bunch.target_names)[bunch.target]
    train, test = train_test_split(frame, test_size=30, stratify=frame["species"], random_state=0)
    folder.mkdir(parents=True, exist_ok=True)
    train.sort_index().to_csv(folder / "train.csv", index=False)
    test.sort_index().to_csv(folder / "test.csv", index=False)


def make_diabetes(folder: Path) -> None:
    # One file: the kit holds out its test rows with [data] test_size.
    bunch = load_diabetes(as_frame=True, scaled=False)
    frame = bunch.data.copy()
    frame["progression"] = bunch.target
    folder.mkdir(parents=True, exist_ok=True)
    frame.to_csv(folder / "train.csv", index=False)


def main(root: Path = HERE) -> None:
    make_iris(root / "iris" / "data")
    make_diabetes(root / "diabetes" / "data")


if __name__ == "__main__":
    main()
