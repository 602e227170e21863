"""datarun: train and test data-challenge submissions on cross-validation folds."""

__version__ = "0.1.0"
