"""The SQLFlow clause parser and translator, feature columns as SQL, and the explanation arrays
(no database)."""

import numpy as np
import pytest

from dbt.adapters.sqlflow.errors import OptionError
from dbt.adapters.sqlflow.ml import explain
from dbt.adapters.sqlflow.ml.preprocess import FeatureEncoder, RawColumn
from dbt.adapters.sqlflow.statements import StatementError, compile_statement
from dbt.adapters.sqlflow.statements.columns import embedding_blocks, feature_names, wrap
from dbt.adapters.sqlflow.statements.parse import split

REFS = {"m": {"database": "db", "schema": "s", "identifier": "m"}}
M = '"db"."s"."m"'


def plan(sql, name="node", config=None):
    return compile_statement(sql, name, None, config or {}, REFS)


@pytest.mark.parametrize(
    "clause, verb",
    [
        ("TO TRAIN DNNClassifier LABEL c INTO node", "train"),
        ("train DNNClassifier label c into node;", "train"),
        (f"TO PREDICT node.c USING {M}", "predict"),
        (f"predict node.c using {M};", "predict"),
        (f"TO EXPLAIN {M}", "explain"),
        (f"ANALYZE {M} USING KernelExplainer", "explain"),
        (f"to evaluate {M} label c into node", "evaluate"),
    ],
)
def test_both_spellings_any_case_with_or_without_semicolon(clause, verb):
    found = split(f"select a, b from t where x in (select y from u)\n{clause}")
    assert found.verb == verb
    assert found.select == "select a, b from t where x in (select y from u)"


def test_keywords_in_strings_comments_and_aliases_do_not_count():
    for sql in (
        "select 'to train x' as s from t",
        "select a as predict, b train from t -- to predict x.y using m",
        "select (select 1 to) from t",
        "select ')' as p, 'to' as q from t where a = 'predict'",
    ):
        assert split(sql) is None, sql


def test_parentheses_and_keywords_inside_strings_do_not_hide_the_clause():
    found = split(f"select ')(' as p, 'to train' as q from t TO EXPLAIN {M} WITH key = 'with'")
    assert found.verb == "explain" and found.attributes == {"key": "with"}


def test_a_ref_rendered_by_dbt_run_empty_is_still_the_model():
    empty = f"(select * from {M} where false limit 0) _dbt_limit_subq_m"
    found, config = plan(f"select * from t to explain {empty} with background = 3")
    assert config == {"model": "m", "background": 3}
    assert plan(f"select 1 to predict node.c using {empty};")[1]["model"] == "m"


def test_train_maps_attributes_columns_and_label():
    found, config = plan(
        "select * from t TO TRAIN DNNRegressor WITH model.hidden_units = [8, 4], train.epoch = 3, "
        "train.batch_size = 32, optimizer.learning_rate = 0.01, model.optimizer = optimizer.Adam, "
        "seed = 5 COLUMN a, NUMERIC(v, 3, ';') LABEL y INTO node"
    )
    assert found.materialization == "ml_train"
    assert config == {
        "model_type": "dnn_regressor",
        "hidden_units": [8, 4],
        "epochs": 3,
        "batch_size": 32,
        "learning_rate": 0.01,
        "optimizer": "adam",
        "seed": 5,
        "feature_columns": ["a", "NUMERIC(v, 3, ';')"],
        "label": "y",
    }


def test_cluster_model_with_a_pretrained_ref():
    _, config = plan(
        "select * from users TO TRAIN sqlflow_models.DeepEmbeddingClusterModel WITH "
        "model.encode_units = [100, 7], model.n_clusters = 5, model.run_pretrain = false "
        f"COLUMN m1, m2 USING {M} INTO node"
    )
    assert config["model_type"] == "dec" and config["pretrained_model"] == "m"
    assert config["run_pretrain"] is False and config["features"] == ["m1", "m2"]


def test_predict_evaluate_explain():
    found, config = plan(f"select * from t to predict NODE.label using {M}")
    assert (found.materialization, config) == (
        "ml_predict",
        {"model": "m", "prediction_column": "label"},
    )
    found, config = plan(f'select * from t to evaluate {M} with validation.metrics = "Accuracy, AUC, MSE"')
    assert config["metrics"] == ["accuracy", "roc_auc", "mse"]
    found, config = plan(f"select * from t to explain {M} with background = 5 using KernelExplainer")
    assert found.side_suffixes == ["global"]
    assert config == {"model": "m", "background": 5, "explainer": "kernel"}


@pytest.mark.parametrize(
    "sql, message",
    [
        ("select 1 to predict node.c using m", "write {{ ref('m') }}"),
        (f"select 1 to predict other.c using {M}", "write TO PREDICT node.c"),
        (f"select 1 to predict c using {M}", "<table>.<column>"),
        ("select 1 to train XGBoost.gbtree into node", "XGBoost models are not supported"),
        ("select 1 to train DNNClassifier with train.max_steps = 3 into node", "WITH train.max_steps"),
        ("select 1 to train DNNClassifier with model.hidden_units = into node", "expected a value"),
        (f"select 1 to train DNNClassifier using {M} into node", "only clusterModel"),
        ("select 1 to train DNNClassifier into elsewhere", "INTO must name this model"),
        (f"select 1 to explain {M} with summary.plot_type = bar", "summary plot"),
        (f"select 1 to explain {M} using TreeExplainer", "TreeExplainer needs tree models"),
        (f"select 1 to evaluate {M} with validation.metrics = 'Perplexity'", "'Perplexity' is not a metric"),
        ("select 1 to train DNNClassifier column a for b into node", "COLUMN ... FOR"),
        ("to train DNNClassifier into node; select 1", None),
    ],
)
def test_clauses_we_cannot_honour_fail_with_the_fix(sql, message):
    if message is None:  # no SELECT before it: not a clause, PostgreSQL will say what is wrong
        assert plan(sql)[0].materialization == "table"
        return
    with pytest.raises(StatementError, match=None) as caught:
        plan(sql)
    assert message in str(caught.value)


def test_with_and_config_must_agree():
    sql = "select 1 to train DNNClassifier with model.hidden_units = [10] label c into node"
    assert plan(sql, config={"hidden_units": [10]})[1]["hidden_units"] == [10]
    with pytest.raises(StatementError, match="'hidden_units' is \\[64\\] in config\\(\\) but \\[10\\]"):
        plan(sql, config={"hidden_units": [64]})


def test_feature_columns_names_and_sql():
    specs = ["a", "NUMERIC(v, 2, ';')", "CATEGORY_ID(c, 10)", "EMBEDDING(CATEGORY_ID(t, 3, ','), 4)"]
    assert feature_names(specs) == ["a", "v_0", "v_1", "c", "t_0", "t_1", "t_2"]
    assert embedding_blocks(specs) == [(["t_0", "t_1", "t_2"], 4)]
    sql = wrap("select * from x", ["a", "v", "c", "t"], specs)
    assert "(__sqlflow_fc.\"c\")::text as \"c\"" in sql or '(__sqlflow_fc.c)::text as c' in sql
    assert sql.count("string_to_array") == 5
    with pytest.raises(OptionError, match="BUCKET, CROSS"):
        feature_names(["BUCKET(a, [1, 2])"])
    with pytest.raises(OptionError, match="combiner sum"):
        feature_names(["EMBEDDING(CATEGORY_ID(t, 3, ','), 4, mean)"])


def _encoder():
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, 200)
    x[:5] = np.nan
    c = np.array(list("aabcc") * 40, dtype=object)
    c[7] = None
    columns = [
        RawColumn("x", x, np.isnan(x), False),
        RawColumn("c", c, np.array([v is None for v in c]), True),
    ]
    return FeatureEncoder().fit(columns), columns


def test_encoded_means_are_the_training_means_of_the_encoded_columns():
    encoder, columns = _encoder()
    X = encoder.transform({col.name: col for col in columns})
    center, scale = encoder.affine()
    raw = X * scale + center  # the encoded columns before normalization
    assert explain.encoded_means(encoder.to_dict()) == pytest.approx(raw.mean(axis=0), abs=1e-12)
    assert explain.feature_groups(encoder.to_dict()) == [("x", [0]), ("c", [1, 2, 3])]


def test_shap_values_add_up_and_find_the_features_that_matter():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(60, 10))
    f = lambda A: np.tanh(2 * A[:, 2]) - A[:, 7] ** 2  # noqa: E731
    for explainer in ("permutation", "kernel", "exact"):
        values, base = explain.shap_values(f, X[:8], X[:20], explainer, seed=0)
        assert values.sum(axis=1) == pytest.approx(f(X[:8]) - base, abs=1e-6), explainer
        ranked = np.argsort(-np.abs(values).mean(axis=0))
        assert set(ranked[:2]) == {2, 7}, explainer


def test_discrimination_shares_and_sign():
    labels = np.array([0, 0, 0, 1, 1, 1, 1, 1])
    states = {"g": np.array(["a", "a", "b", "b", "b", "b", "b", "a"], dtype=object)}
    rows = {(r[0], r[2]): r for r in explain.discrimination(labels, 2, states)}
    _, _, _, c, r, score = rows[(0, "a")]
    assert (c, r) == (pytest.approx(2 / 3), pytest.approx(1 / 5))
    assert score == pytest.approx((2 / 3 - 1 / 5) * np.log((2 / 3 + 1e-6) / (1 / 5 + 1e-6)))
    assert rows[(0, "b")][5] < 0  # b favours the rest
