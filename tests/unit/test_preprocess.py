"""The feature encoder: normalization, categorical states, NULL handling, attribute limit, persistence."""
import json

import numpy as np
import pytest
from sklearn.preprocessing import MinMaxScaler, StandardScaler

from dbt.adapters.sqlflow.ml.preprocess import EncodingError, FeatureEncoder, RawColumn


def col(name, values, nulls=None, categorical=False):
    return RawColumn(name, np.asarray(values), None if nulls is None else np.asarray(nulls), categorical)


def encode(columns, **options):
    encoder = FeatureEncoder(**options).fit(columns)
    return encoder, encoder.transform({c.name: c for c in columns})


def test_zscore_equals_standard_scaler():
    x = np.random.default_rng(1).normal(5, 3, size=(100, 2))
    _, X = encode([col("a", x[:, 0]), col("b", x[:, 1])])
    np.testing.assert_allclose(X, StandardScaler().fit_transform(x), atol=1e-12)


def test_minmax_equals_minmax_scaler_and_none_is_identity():
    x = np.array([1.0, 4.0, 10.0])
    _, X = encode([col("a", x)], normalize="minmax")
    np.testing.assert_allclose(X[:, 0], MinMaxScaler().fit_transform(x.reshape(-1, 1))[:, 0])
    _, X = encode([col("a", x)], normalize="none")
    np.testing.assert_allclose(X[:, 0], x)


@pytest.mark.parametrize("normalize", ["zscore", "minmax"])
def test_constant_column_gives_no_nan(normalize):
    _, X = encode([col("a", [3.0, 3.0, 3.0])], normalize=normalize)
    assert np.isfinite(X).all() and (X == 0).all()


def test_categorical_keeps_the_most_frequent_states_and_groups_the_rest():
    values = ["a"] * 5 + ["b"] * 3 + ["c"] * 2 + ["d"]
    encoder, X = encode([col("city", np.array(values, object), categorical=True)], max_states=2)
    assert encoder.feature_names == ["city=a", "city=b", "city=__other__"]
    assert X.sum(axis=0).tolist() == [5, 3, 3]
    unseen = encoder.transform({"city": col("city", np.array(["zzz", "a"], object), categorical=True)})
    assert unseen.tolist() == [[0, 0, 1], [1, 0, 0]]


def test_booleans_are_categorical():
    encoder, X = encode([col("flag", np.array([True, False, True]), categorical=True)])
    assert encoder.feature_names == ["flag=true", "flag=false"]


def test_impute_uses_mean_and_most_frequent_state():
    encoder, X = encode([col("x", [1.0, 0.0, 3.0], nulls=[False, True, False]),
                         col("s", np.array(["a", "", "a"], object), nulls=[False, True, False], categorical=True)],
                        normalize="none")
    assert X[:, 0].tolist() == [1.0, 2.0, 3.0] and X[:, 1].tolist() == [1, 1, 1]


def test_indicator_adds_a_missing_flag():
    encoder, X = encode([col("x", [1.0, 0.0, 3.0], nulls=[False, True, False])], null_handling="indicator",
                        normalize="none")
    assert encoder.feature_names == ["x", "x__missing__"]
    assert X[:, 1].tolist() == [0, 1, 0]


def test_null_handling_error_names_the_column():
    with pytest.raises(EncodingError, match='"x" has 1 NULL values and null_handling=\'error\''):
        encode([col("x", [1.0, 0.0], nulls=[False, True])], null_handling="error")


def test_all_null_column_is_refused():
    with pytest.raises(EncodingError, match='"x" holds only NULLs'):
        encode([col("x", [0.0, 0.0], nulls=[True, True])])


def test_max_input_attributes_keeps_continuous_then_frequent_states():
    columns = [col("x", [1.0, 2.0, 3.0, 4.0]),
               col("s", np.array(["a", "a", "b", "c"], object), categorical=True)]
    encoder, X = encode(columns, max_input_attributes=2)
    assert encoder.feature_names == ["x", "s=a"]  # states beyond the limit encode as all zeros
    assert X[:, 1].tolist() == [1, 1, 0, 0]


def test_state_round_trips_through_json():
    columns = [col("x", [1.0, 5.0, 2.0]), col("s", np.array(["a", "b", "a"], object), categorical=True)]
    encoder, X = encode(columns)
    restored = FeatureEncoder.from_dict(json.loads(json.dumps(encoder.to_dict())))
    np.testing.assert_array_equal(restored.transform({c.name: c for c in columns}), X)


def test_missing_column_at_transform_is_named():
    encoder, _ = encode([col("x", [1.0, 2.0])])
    with pytest.raises(EncodingError, match='"x" is missing'):
        encoder.transform({"y": col("y", [1.0])})


def test_fitting_in_batches_equals_fitting_at_once():
    rng = np.random.default_rng(4)
    x = rng.normal(100, 7, 1000)
    s = rng.choice(np.array(["a", "b", "c"], object), 1000)
    columns = {"x": col("x", x), "s": col("s", s, categorical=True)}
    whole = FeatureEncoder().fit(list(columns.values()))
    parts = [{"x": col("x", x[i:i + 128]), "s": col("s", s[i:i + 128], categorical=True)} for i in range(0, 1000, 128)]
    batched = FeatureEncoder().fit_batches(parts)
    np.testing.assert_allclose(batched.transform(columns), whole.transform(columns), atol=1e-12)
    assert batched.to_dict()["encoded"] == whole.to_dict()["encoded"]


def test_training_profile_over_batches_is_a_uniform_sample():
    """The drift bins: quantile edges from a sample drawn uniformly over all batches (the batches
    are sorted, so a first-rows sample would be far off), shares summing to 1 with the NULLs."""
    rng = np.random.default_rng(3)
    values = np.sort(rng.random(100_000))
    nulls = np.zeros(20_000, bool)
    nulls[::20] = True  # 5% NULLs spread over the batch
    batches = [
        {"x": RawColumn("x", values[i:i + 20_000], nulls.copy(), False),
         "c": RawColumn("c", np.array(["a", "b", "b", "c"] * 5000, dtype=object), None, True)}
        for i in range(0, 100_000, 20_000)
    ]
    encoder = FeatureEncoder(max_states=2).fit_batches(batches)
    x, c = encoder.features_[0]["profile"], encoder.features_[1]["profile"]
    present = values[np.tile(~nulls, 5)]
    np.testing.assert_allclose(x["edges"], np.quantile(present, np.linspace(0.1, 0.9, 9)), atol=0.01)
    assert abs(sum(x["shares"]) + x["nulls"] - 1) < 1e-12 and x["nulls"] == 0.05
    np.testing.assert_allclose(x["shares"], 0.095, atol=0.005)
    assert c == {"states": ["b", "a"], "shares": [0.5, 0.25, 0.25], "nulls": 0.0}
