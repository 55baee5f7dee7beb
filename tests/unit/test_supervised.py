"""Targets, held-out splits and class weights (no TensorFlow needed)."""
import numpy as np
import pytest

from dbt.adapters.sqlflow.ml import supervised
from dbt.adapters.sqlflow.ml.params import Split


def test_classification_target_keeps_sorted_classes():
    target = supervised.Target.of(np.array(["b", "a", "b"], object), None, True, "y")
    assert target.task == "binary" and target.classes == ["a", "b"] and target.y.tolist() == [1, 0, 1]
    assert supervised.Target.of(np.array([2, 0, 1]), None, True, "y").task == "multiclass"


@pytest.mark.parametrize("values, nulls, classification, message", [
    (np.array([1.0, 2.0]), np.array([False, True]), False, 'has 1 NULL values'),
    (np.array(["a", "a"], object), None, True, "single class"),
    (np.array(["a", "b"], object), None, False, "needs a numeric label"),
])
def test_bad_targets_are_named(values, nulls, classification, message):
    with pytest.raises(supervised.TargetError, match=message):
        supervised.Target.of(values, nulls, classification, "y")


def test_random_split_is_seeded_and_sized():
    a = supervised.held_out_mask(1000, Split(0.2, "random", 3))
    b = supervised.held_out_mask(1000, Split(0.2, "random", 3))
    assert a.sum() == 200 and (a == b).all()
    assert (supervised.held_out_mask(1000, Split(0.2, "random", 4)) != a).any()


def test_seq_split_holds_out_the_last_rows_in_key_order():
    order = np.array([4, 0, 3, 1, 2])  # each row's rank in key order
    held = supervised.held_out_mask(5, Split(0.4, "seq", 0), order)
    assert held.tolist() == [True, False, True, False, False]


def test_flag_column_split():
    flag = np.array([True, False, False])
    assert supervised.held_out_mask(3, Split(None, "holdout", 0), flag=flag).tolist() == [True, False, False]


def test_balanced_and_mapped_class_weights():
    y = np.array([0, 0, 0, 1])
    np.testing.assert_allclose(supervised.class_weights(y, 2, "balanced", ["a", "b"]), [2 / 3] * 3 + [2.0])
    np.testing.assert_allclose(supervised.class_weights(y, 2, {"b": 5}, ["a", "b"]), [1, 1, 1, 5])
    assert supervised.class_weights(y, 2, None, ["a", "b"]) is None


def test_metrics_by_task():
    regression = supervised.metrics("regression", np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 4.0]))
    assert regression["mse"] == pytest.approx(1 / 3) and regression["mae"] == pytest.approx(1 / 3)
    probabilities = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    binary = supervised.metrics("binary", np.array([0, 1, 1]), probabilities)
    assert binary["accuracy"] == pytest.approx(2 / 3) and binary["recall"] == pytest.approx(0.5)
    assert binary["roc_auc"] == pytest.approx(1.0)


def test_class_names_follow_postgresql():
    assert supervised.class_name(True) == "true" and supervised.class_name(np.bool_(False)) == "false"
    assert supervised.class_name(3) == "3" and supervised.class_name("a b") == "a b"
