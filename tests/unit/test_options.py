"""Config validation: defaults, mistyped keys, misplaced keys, bad values."""
import pytest

from dbt.adapters.sqlflow.options import OptionError, resolve


def test_defaults_for_a_cluster_node():
    options = resolve("cluster", {"materialized": "cluster", "tags": ["x"]}, "segments")
    assert options["model_type"] == "kmeans" and options["n_clusters"] == 10
    assert options["normalize"] == "zscore" and options["null_handling"] == "impute"
    assert options["n_init"] == 1 and "covariance_type" not in options
    assert options["k_range"] == [2, 10] and options["seed"] == 0


def test_strings_become_lists_for_column_keys():
    options = resolve("cluster", {"key": "customer_id", "exclude": "note"}, "segments")
    assert options["key"] == ["customer_id"] and options["exclude"] == ["note"]


def test_mistyped_key_names_model_key_and_closest_match():
    with pytest.raises(OptionError) as err:
        resolve("cluster", {"n_cluster": 4}, "segments")
    message = str(err.value)
    assert "segments" in message and "'n_cluster'" in message and "did you mean 'n_clusters'" in message


@pytest.mark.parametrize("key, value", [("covariance_type", "full"), ("encode_units", [10, 2])])
def test_key_of_another_model_type_is_misplaced(key, value):
    with pytest.raises(OptionError, match=f"'{key}'.*(does not apply|applies to).*kmeans|'{key}' applies to"):
        resolve("cluster", {"model_type": "kmeans", key: value}, "segments")


def test_n_init_does_not_apply_to_em():
    with pytest.raises(OptionError, match="'n_init' applies to model_type kmeans, dec only"):
        resolve("cluster", {"model_type": "em", "n_init": 3}, "segments")


@pytest.mark.parametrize("key, value, expected", [
    ("n_clusters", -1, "a whole number >= 0"),
    ("normalize", "l2", "'zscore', 'minmax' or 'none'"),
    ("k_range", [5, 2], "[min, max]"),
    ("null_handling", "drop", "'error', 'impute' or 'indicator'"),
    ("seed", 1.5, "a whole number"),
])
def test_invalid_values_say_what_is_expected(key, value, expected):
    with pytest.raises(OptionError) as err:
        resolve("cluster", {key: value}, "segments")
    assert f"{key}={value!r}" in str(err.value) and expected in str(err.value)


def test_unknown_model_type_lists_the_choices():
    with pytest.raises(OptionError, match="model_type 'dbscan' is not available here; use one of kmeans, em"):
        resolve("cluster", {"model_type": "dbscan"}, "segments")


def test_ml_train_needs_a_model_type():
    with pytest.raises(OptionError, match="needs model_type"):
        resolve("ml_train", {}, "weights")


def test_ml_predict_needs_a_model():
    with pytest.raises(OptionError, match="config\\(model="):
        resolve("ml_predict", {}, "scores")


def test_project_keys_far_from_ours_are_left_alone():
    options = resolve("cluster", {"owner_team": "growth", "materialized": "cluster"}, "segments")
    assert "owner_team" not in options


def test_sql_model_defaults_and_keys():
    options = resolve("ml_train", {"model_type": "sql", "weights": {"w": ["feature"], "b": []}, "key": "obs_id"},
                      "sales_model")
    assert options["batch_size"] == 0 and options["prediction"] == "predictions"
    assert options["key"] == ["obs_id"] and options["optimizer"] == "adam" and "normalize" not in options


def test_sql_model_needs_weights():
    with pytest.raises(OptionError, match="sales_model.*declare them with config\\(weights="):
        resolve("ml_train", {"model_type": "sql"}, "sales_model")


@pytest.mark.parametrize("key, value", [("label", "y"), ("hidden_units", [8]), ("normalize", "none")])
def test_keys_of_other_model_types_are_refused_for_sql_models(key, value):
    with pytest.raises(OptionError, match=f"'{key}' does not apply to model_type 'sql'"):
        resolve("ml_train", {"model_type": "sql", "weights": {"w": []}, key: value}, "sales_model")


def test_replaces_is_an_ml_predict_key():
    options = resolve("ml_predict", {"model": "sales_model", "replaces": "features"}, "scored")
    assert options["replaces"] == "features"


def test_incremental_scoring_needs_a_unique_key_of_column_names():
    options = resolve("ml_predict", {"model": "m", "incremental": True, "unique_key": "id"}, "scored")
    assert options["unique_key"] == ["id"] and options["on_schema_change"] == "ignore"
    with pytest.raises(OptionError, match=r"incremental=true scores only rows .* add config\(unique_key="):
        resolve("ml_predict", {"model": "m", "incremental": True}, "scored")
    with pytest.raises(OptionError, match=r"unique_key is a column name or a list of them, got \[1, 2\]"):
        resolve("ml_predict", {"model": "m", "incremental": True, "unique_key": [1, 2]}, "scored")
