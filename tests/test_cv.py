"""Folds and the test split: scikit-learn's splitters with the kit's seed, and clear
messages when the data cannot be split as asked."""

import numpy as np
import pytest
from sklearn import model_selection as ms

from datarun.errors import UsageError
from datarun.problems.cv import make_folds, split_test

Y = np.repeat(np.array(["a", "b", "c"]), [10, 14, 6])


@pytest.mark.parametrize(
    ("strategy", "splitter"),
    [
        ("kfold", ms.KFold(4, shuffle=True, random_state=7)),
        ("stratified-kfold", ms.StratifiedKFold(4, shuffle=True, random_state=7)),
        ("shuffle-split", ms.ShuffleSplit(4, test_size=0.25, random_state=7)),
        ("stratified-shuffle-split", ms.StratifiedShuffleSplit(4, test_size=0.25, random_state=7)),
        ("time-series", ms.TimeSeriesSplit(4)),
    ],
)
def test_each_strategy_gives_the_folds_of_its_sklearn_splitter(strategy, splitter):
    test_size = 0.25 if "shuffle" in strategy else None
    folds = make_folds(strategy, 4, 7, test_size, Y)
    expected = list(splitter.split(np.zeros((len(Y), 1)), Y))
    assert len(folds) == 4
    for (train, valid), (exp_train, exp_valid) in zip(folds, expected, strict=True):
        assert train.dtype == np.int64 and valid.dtype == np.int64
        np.testing.assert_array_equal(train, exp_train)
        np.testing.assert_array_equal(valid, exp_valid)


def test_the_seed_changes_shuffled_folds():
    first = make_folds("kfold", 3, 1, None, Y)
    second = make_folds("kfold", 3, 2, None, Y)
    assert not np.array_equal(first[0][1], second[0][1])


def test_stratified_kfold_refuses_more_splits_than_a_class_has_rows():
    with pytest.raises(UsageError, match="class 'c' has 6 in the training data: lower \\[cv\\] n_splits"):
        make_folds("stratified-kfold", 7, 0, None, Y)


def test_kfold_refuses_more_splits_than_rows():
    with pytest.raises(UsageError, match="n_splits = 31 is more than the 30 training rows"):
        make_folds("kfold", 31, 0, None, Y)


def test_time_series_refuses_as_many_splits_as_rows():
    with pytest.raises(UsageError, match="needs more than 30 training rows"):
        make_folds("time-series", 30, 0, None, Y)


def test_stratified_shuffle_split_refuses_a_class_of_one_row():
    y = np.array(["a"] * 10 + ["b"])
    with pytest.raises(UsageError, match="class 'b' has 1 .*use shuffle-split"):
        make_folds("stratified-shuffle-split", 3, 0, 0.3, y)


def test_a_splitter_complaint_becomes_a_one_line_usage_error():
    # 3 classes cannot all be in a validation share of 2 rows.
    with pytest.raises(UsageError, match="stratified-shuffle-split cannot split the training data") as info:
        make_folds("stratified-shuffle-split", 2, 0, 0.05, Y)
    assert "\n" not in str(info.value)


def test_the_test_split_is_stratified_and_seeded():
    train, test = split_test(len(Y), 0.2, 3, Y, ordered=False)
    assert len(test) == 6 and len(train) == 24
    assert sorted(np.unique(Y[test], return_counts=True)[1].tolist()) == [1, 2, 3]
    assert np.intersect1d(train, test).size == 0
    again_train, again_test = split_test(len(Y), 0.2, 3, Y, ordered=False)
    np.testing.assert_array_equal(test, again_test)
    np.testing.assert_array_equal(train, again_train)


def test_the_test_split_of_a_time_series_holds_out_the_last_rows():
    train, test = split_test(10, 0.3, 0, None, ordered=True)
    assert train.tolist() == list(range(7)) and test.tolist() == [7, 8, 9]


def test_a_test_split_that_leaves_no_training_rows_is_refused():
    with pytest.raises(UsageError, match="leaves no test or no training rows out of 1"):
        split_test(1, 0.5, 0, None, ordered=False)


def test_a_stratified_test_split_refuses_a_class_of_one_row():
    y = np.array(["a"] * 9 + ["b"])
    with pytest.raises(UsageError, match="class 'b' has 1 .*give a test file"):
        split_test(10, 0.2, 0, y, ordered=False)


def test_a_stratified_test_split_too_small_for_every_class_is_refused():
    y = np.repeat(np.array(["a", "b", "c"]), 4)
    with pytest.raises(UsageError, match=r"\[data\] test_size cannot split the data: .*number of classes"):
        split_test(12, 0.05, 0, y, ordered=False)


def test_an_unknown_strategy_is_refused_by_the_splitter_factory():
    from datarun.problems.cv import make_splitter

    with pytest.raises(UsageError, match="unknown \\[cv\\] strategy 'leave-one-out'"):
        make_splitter("leave-one-out", 3, 0, None)
