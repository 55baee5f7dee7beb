"""`ml_train` linear and logistic regression (TensorFlow) and `ml_predict` in Python and in PostgreSQL."""
import json
import os

import numpy as np
import pytest
from dbt.tests.util import run_dbt, run_dbt_and_capture
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.metrics import accuracy_score, log_loss, r2_score
from sklearn.preprocessing import StandardScaler


def csv(data, target, target_name="target", target_names=None):
    names = [f"f{i}" for i in range(data.shape[1])]
    lines = ["id," + ",".join(names) + f",{target_name}"]
    for i, (row, y) in enumerate(zip(data, target)):
        label = target_names[y] if target_names is not None else (repr(float(y)) if isinstance(y, float) else int(y))
        lines.append(f"{i}," + ",".join(repr(float(v)) for v in row) + f",{label}")
    return "\n".join(lines) + "\n"


DIABETES, CANCER, IRIS = load_diabetes(), load_breast_cancer(), load_iris()
C_L2 = 1 / (2 * 1.0 * len(CANCER.target))  # sklearn's C=1 as a Keras L2 on the mean loss

MODELS = {
    "diabetes_lr.sql": "{{ config(materialized='ml_train', model_type='linear_regression', label='target', "
                       "key='id', exclude=['id'], learning_rate=0.1, epochs=200, batch_size=442, seed=1) }} "
                       "select * from {{ ref('diabetes') }}",
    "cancer_logit.sql": "{{ config(materialized='ml_train', model_type='logistic_regression', label='target', "
                        f"key='id', exclude=['id'], learning_rate=0.1, epochs=200, batch_size=569, l2={C_L2!r}, "
                        "seed=1) }} select * from {{ ref('cancer') }}",
    "iris_softmax.sql": "{{ config(materialized='ml_train', model_type='logistic_regression', label='species', "
                        "key='id', exclude=['id'], learning_rate=0.1, epochs=200, batch_size=120, seed=1, "
                        "validation_split=0.2) }} select * from {{ ref('iris_species') }}",
    "diabetes_scored.sql": "{{ config(materialized='ml_predict', model='diabetes_lr') }}\n"
                           "-- depends_on: {{ ref('diabetes_lr') }}\nselect * from {{ ref('diabetes') }}",
    "diabetes_scored_py.sql": "{{ config(materialized='ml_predict', model='diabetes_lr', in_database=false) }}\n"
                              "-- depends_on: {{ ref('diabetes_lr') }}\nselect * from {{ ref('diabetes') }}",
    "cancer_scored.sql": "{{ config(materialized='ml_predict', model='cancer_logit', output_probabilities=true) }}\n"
                         "-- depends_on: {{ ref('cancer_logit') }}\nselect * from {{ ref('cancer') }}",
    "cancer_scored_py.sql": "{{ config(materialized='ml_predict', model='cancer_logit', output_probabilities=true, "
                            "in_database=false) }}\n-- depends_on: {{ ref('cancer_logit') }}\n"
                            "select * from {{ ref('cancer') }}",
    "diabetes_weights.sql": "select * from {{ ml_weights(ref('diabetes_lr')) }}",
    "iris_scored.sql": "{{ config(materialized='ml_predict', model='iris_softmax', output_probabilities=true) }}\n"
                       "-- depends_on: {{ ref('iris_softmax') }}\nselect * from {{ ref('iris_species') }}",
    "iris_scored_py.sql": "{{ config(materialized='ml_predict', model='iris_softmax', output_probabilities=true, "
                          "in_database=false) }}\n-- depends_on: {{ ref('iris_softmax') }}\n"
                          "select * from {{ ref('iris_species') }}",
}


class TestLinearAndLogistic:
    @pytest.fixture(scope="class")
    def seeds(self):
        return {"diabetes.csv": csv(DIABETES.data, DIABETES.target.astype(float)),
                "cancer.csv": csv(CANCER.data, CANCER.target),
                "iris_species.csv": csv(IRIS.data, IRIS.target, "species", IRIS.target_names)}

    @pytest.fixture(scope="class")
    def models(self):
        return MODELS

    @pytest.fixture(scope="class", autouse=True)
    def built(self, project):
        run_dbt(["seed"])
        results, output = run_dbt_and_capture(["run", "--threads", "3"])
        assert len(results) == len(MODELS)
        return output

    def rows(self, project, sql):
        return project.run_sql(sql.replace("{s}", project.test_schema), fetch="all")

    def test_linear_regression_r2_matches_scikit_learn(self, project):
        rows = self.rows(project, "select target, predicted_target from {s}.diabetes_scored order by id")
        ours = r2_score([r[0] for r in rows], [r[1] for r in rows])
        reference = LinearRegression().fit(DIABETES.data, DIABETES.target).score(DIABETES.data, DIABETES.target)
        assert ours == pytest.approx(reference, abs=0.01)

    def test_logistic_regression_matches_scikit_learn(self, project):
        rows = self.rows(project, 'select target, predicted_target, "probability_1" from {s}.cancer_scored order by id')
        X = StandardScaler().fit_transform(CANCER.data)
        reference = LogisticRegression(C=1.0, max_iter=5000).fit(X, CANCER.target)
        y = [r[0] for r in rows]
        assert accuracy_score(y, [r[1] for r in rows]) == pytest.approx(reference.score(X, CANCER.target), abs=0.01)
        ours_loss = log_loss(y, [r[2] for r in rows])
        assert ours_loss == pytest.approx(log_loss(CANCER.target, reference.predict_proba(X)), rel=0.02)

    def test_multiclass_with_string_labels(self, project):
        rows = self.rows(project, "select species, predicted_species, probability_setosa + probability_versicolor "
                                  "+ probability_virginica from {s}.iris_scored")
        assert np.mean([r[0] == r[1] for r in rows]) >= 0.95
        np.testing.assert_allclose([r[2] for r in rows], 1.0, atol=1e-9)

    @pytest.mark.parametrize("model, columns", [
        ("diabetes", ["predicted_target"]),
        ("cancer", ["predicted_target", "probability_0", "probability_1"]),
        ("iris", ["predicted_species", "probability_setosa", "probability_versicolor", "probability_virginica"]),
    ])
    def test_in_database_equals_python(self, project, model, columns):
        quoted = ", ".join(f'"{c}"' for c in columns)
        sql = "select id, {cols} from {s}.{m} order by id"
        in_db = self.rows(project, sql.format(cols=quoted, s="{s}", m=f"{model}_scored"))
        in_py = self.rows(project, sql.format(cols=quoted, s="{s}", m=f"{model}_scored_py"))
        assert len(in_db) == len(in_py) > 0
        for a, b in zip(in_db, in_py):
            for x, y in zip(a, b):
                assert x == pytest.approx(y, abs=1e-9) if isinstance(x, float) else x == y

    def test_ml_weights_macro(self, project):
        rows = self.rows(project, "select tensor, count(*), count(distinct feature) from {s}.diabetes_weights group by 1 order by 1")
        assert rows == [("intercept", 1, 1), ("weights", 10, 10)]

    def test_weights_in_original_units_reproduce_predictions_in_plain_sql(self, project):
        unpivot = " union all ".join(f"select id, 'f{i}' as feature, f{i}::float8 as value from {{s}}.diabetes"
                                     for i in range(10))
        rows = self.rows(project, f"""
            select x.id, sum(w.value * x.value) + max(b.value) as by_sql, max(p.predicted_target) as by_predict
            from ({unpivot}) x
            join {{s}}.diabetes_lr w on w.tensor = 'weights' and w.feature = x.feature
            cross join (select value from {{s}}.diabetes_lr where tensor = 'intercept') b
            join {{s}}.diabetes_scored p on p.id = x.id
            group by x.id""")
        assert len(rows) == 442
        for _, by_sql, by_predict in rows:
            assert by_sql == pytest.approx(by_predict, abs=1e-9)

    def test_registry_metrics_history_and_lineage(self, project):
        metrics = dict(self.rows(project, "select metric, value from {s}.sqlflow_models r, lateral "
                                          "(select key as metric, (value #>> array[]::text[])::float8 as value "
                                          "from jsonb_each(r.metrics)) m where model_name = 'iris_softmax'"))
        for name in ["accuracy", "precision", "recall", "f1", "log_loss", "roc_auc"]:
            assert f"train_{name}" in metrics and f"eval_{name}" in metrics
        info = self.rows(project, "select training_info, label, row_count from {s}.sqlflow_models "
                                  "where model_name = 'iris_softmax'")[0]
        assert len(info[0]["loss"]) == 200 and len(info[0]["val_loss"]) == 200
        assert info[0]["held_out_rows"] == 30 and info[1] == "species" and info[2] == 150
        with open(os.path.join(project.project_root, "target", "manifest.json")) as f:
            manifest = json.load(f)
        assert "model.test.iris_softmax" in manifest["nodes"]["model.test.iris_scored"]["depends_on"]["nodes"]

    def test_status_lines(self, built):
        assert "TRAIN 442 rows, linear_regression, v1" in built
        assert "PREDICT 442 rows, diabetes_lr v1 in PostgreSQL" in built
        assert "PREDICT 442 rows, diabetes_lr v1 in Python" in built


def moons_csv():
    from sklearn.datasets import make_moons

    X, y = make_moons(n_samples=600, noise=0.1, random_state=0)
    return csv(X, y)


def interactions_csv():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(1500, 6))
    y = 2.0 * X[:, 0] * X[:, 1] - 1.5 * X[:, 2] * X[:, 3] + X[:, 4] * X[:, 5] + 0.3 * X[:, 0]
    return csv(X, y + rng.normal(scale=0.05, size=len(y)))


NETWORKS = {
    "moons_dnn.sql": "{{ config(materialized='ml_train', model_type='dnn_classifier', label='target', key='id', "
                     "exclude=['id'], hidden_units=[32, 16], learning_rate=0.02, epochs=60, batch_size=32, seed=3) }} "
                     "select * from {{ ref('moons') }}",
    "moons_linear.sql": "{{ config(materialized='ml_train', model_type='logistic_regression', label='target', "
                        "key='id', exclude=['id'], epochs=60, batch_size=600, learning_rate=0.1) }} "
                        "select * from {{ ref('moons') }}",
    "moons_scored.sql": "{{ config(materialized='ml_predict', model='moons_dnn', output_probabilities=true) }}\n"
                        "-- depends_on: {{ ref('moons_dnn') }}\nselect * from {{ ref('moons') }}",
    "pairs_fm.sql": "{{ config(materialized='ml_train', model_type='factorization_machine', label='target', key='id', "
                    "exclude=['id'], n_factors=4, learning_rate=0.05, epochs=80, batch_size=64, seed=2) }} "
                    "select * from {{ ref('pairs') }}",
    "pairs_linear.sql": "{{ config(materialized='ml_train', model_type='linear_regression', label='target', key='id', "
                        "exclude=['id'], learning_rate=0.1, epochs=100, batch_size=1500) }} select * from {{ ref('pairs') }}",
    "pairs_fm_scored.sql": "{{ config(materialized='ml_predict', model='pairs_fm') }}\n"
                           "-- depends_on: {{ ref('pairs_fm') }}\nselect * from {{ ref('pairs') }}",
    "pairs_linear_scored.sql": "{{ config(materialized='ml_predict', model='pairs_linear') }}\n"
                               "-- depends_on: {{ ref('pairs_linear') }}\nselect * from {{ ref('pairs') }}",
    "moons_ae.sql": "{{ config(materialized='ml_train', model_type='autoencoder', key='id', exclude=['id', 'target'], "
                    "encode_units=[8, 1], activation='tanh', epochs=30, batch_size=64, learning_rate=0.01) }} "
                    "select * from {{ ref('moons') }}",
    "moons_embedded.sql": "{{ config(materialized='ml_predict', model='moons_ae', pass_through=false) }}\n"
                          "-- depends_on: {{ ref('moons_ae') }}\nselect * from {{ ref('moons') }}",
}


class TestNetworks:
    @pytest.fixture(scope="class")
    def seeds(self):
        return {"moons.csv": moons_csv(), "pairs.csv": interactions_csv()}

    @pytest.fixture(scope="class")
    def models(self):
        return NETWORKS

    @pytest.fixture(scope="class", autouse=True)
    def built(self, project):
        run_dbt(["seed"])
        results = run_dbt(["run", "--threads", "3"])
        assert len(results) == len(NETWORKS)

    def rows(self, project, sql):
        return project.run_sql(sql.replace("{s}", project.test_schema), fetch="all")

    def test_dnn_learns_a_non_linear_boundary(self, project):
        rows = self.rows(project, 'select target, predicted_target, "probability_0" + "probability_1" '
                                  "from {s}.moons_scored")
        assert np.mean([r[0] == r[1] for r in rows]) >= 0.95
        np.testing.assert_allclose([r[2] for r in rows], 1.0, atol=1e-6)
        linear = self.rows(project, "select (metrics ->> 'train_accuracy')::float8 from {s}.sqlflow_models "
                                    "where model_name = 'moons_linear'")[0][0]
        assert linear < 0.9

    def test_factorization_machine_captures_interactions(self, project):
        fm = self.rows(project, "select target, predicted_target from {s}.pairs_fm_scored")
        lin = self.rows(project, "select target, predicted_target from {s}.pairs_linear_scored")
        assert r2_score([r[0] for r in fm], [r[1] for r in fm]) >= 0.9
        assert r2_score([r[0] for r in lin], [r[1] for r in lin]) <= 0.5

    def test_weights_tables_hold_every_layer(self, project):
        tensors = dict(self.rows(project, "select tensor, count(*) from {s}.moons_dnn group by 1"))
        assert tensors == {"hidden_0/kernel": 2 * 32, "hidden_0/bias": 32, "hidden_1/kernel": 32 * 16,
                           "hidden_1/bias": 16, "output/kernel": 16, "output/bias": 1}
        features = self.rows(project, "select distinct feature from {s}.moons_dnn where tensor = 'hidden_0/kernel'")
        assert sorted(f[0] for f in features) == ["f0", "f1"]
        fm = dict(self.rows(project, "select tensor, count(*) from {s}.pairs_fm group by 1"))
        assert fm == {"linear/kernel": 6, "linear/bias": 1, "pairwise/factors": 6 * 4}
        stored = self.rows(project, "select artifact_format, length(artifact) > 0 from {s}.sqlflow_models "
                                    "where model_name in ('moons_dnn', 'pairs_fm', 'moons_ae')")
        assert stored == [("keras", True)] * 3

    def test_autoencoder_embeds_and_reconstructs(self, project):
        rows = self.rows(project, "select id, embedding_0, reconstruction_error, model_version from {s}.moons_embedded")
        assert len(rows) == 600 and all(r[2] >= 0 for r in rows) and {r[3] for r in rows} == {1}
        columns = [r[0] for r in self.rows(project, "select column_name from information_schema.columns where "
                   "table_schema = '{s}' and table_name = 'moons_embedded' order by ordinal_position")]
        assert columns == ["id", "embedding_0", "reconstruction_error", "model_version"]

    def test_retraining_with_the_same_seed_gives_the_same_weights(self, project):
        before = self.rows(project, "select tensor, i, j, value from {s}.moons_dnn order by 1, 2, 3")
        run_dbt(["run", "-s", "moons_dnn"])
        after = self.rows(project, "select tensor, i, j, value from {s}.moons_dnn order by 1, 2, 3")
        assert before == after


MIXED_SQL = """
-- numbers with NULLs, a category with NULLs, a boolean and a date; the label depends on all of them
select g as id,
       case when g % 17 = 0 then null else (g % 23) * 1.5 end as spend,
       case when g % 13 = 0 then null else (array['red', 'green', 'blue', 'teal'])[1 + g % 4] end as colour,
       g % 3 = 0 as member,
       date '2026-01-01' + (g % 300) as joined,
       g % 10 = 0 as holdout,
       ((case when g % 17 = 0 then 0 else (g % 23) * 1.5 end) * 0.2 + (case when g % 4 = 1 then 3 else 0 end)
        + (g % 3 = 0)::int * 2 + (g % 300) / 100.0 + sin(g) * 0.1 > 5.5) as bought
from generate_series(1, 2000) g
"""
NEW_ROWS_SQL = """
select id + 100000 as id, spend, case when id % 5 = 0 then 'purple' else colour end as colour, member, joined
from {{ ref('mixed') }} where id <= 300
"""

KNOBS = {
    "mixed.sql": "{{ config(materialized='table') }}" + MIXED_SQL,
    "new_rows.sql": "{{ config(materialized='table') }}" + NEW_ROWS_SQL,
    "buyers.sql": "{{ config(materialized='ml_train', model_type='logistic_regression', label='bought', key='id', "
                  "data_split='holdout', null_handling='indicator', max_states=3, epochs=200, batch_size=512, "
                  "learning_rate=0.3, early_stopping=2, seed=4) }} select * from {{ ref('mixed') }}",
    "buyers_db.sql": "{{ config(materialized='ml_predict', model='buyers', output_probabilities=true) }}\n"
                     "-- depends_on: {{ ref('buyers') }}\nselect * from {{ ref('new_rows') }}",
    "buyers_py.sql": "{{ config(materialized='ml_predict', model='buyers', output_probabilities=true, "
                     "in_database=false) }}\n-- depends_on: {{ ref('buyers') }}\nselect * from {{ ref('new_rows') }}",
}


class TestPreprocessingSplitsAndStopping:
    @pytest.fixture(scope="class")
    def models(self):
        return KNOBS

    @pytest.fixture(scope="class", autouse=True)
    def built(self, project):
        assert len(run_dbt(["run"])) == len(KNOBS)

    def rows(self, project, sql):
        return project.run_sql(sql.replace("{s}", project.test_schema), fetch="all")

    def test_in_database_equals_python_with_nulls_categories_and_unseen_states(self, project):
        sql = 'select id, predicted_bought, "probability_true" from {s}.{m} order by id'
        in_db = self.rows(project, sql.replace("{m}", "buyers_db"))
        in_py = self.rows(project, sql.replace("{m}", "buyers_py"))
        assert len(in_db) == 300
        for a, b in zip(in_db, in_py):
            assert a[0] == b[0] and a[1] == b[1] and a[2] == pytest.approx(b[2], abs=1e-9)

    def test_encodings_and_split_column(self, project):
        info = self.rows(project, "select features, training_info, metrics from {s}.sqlflow_models "
                                  "where model_name = 'buyers'")[0]
        features = {f["name"]: f for f in info[0]["features"]}
        assert "holdout" not in features and "id" not in features
        states = features["colour"]["states"]  # the three most frequent (max_states=3), then the NULL state
        assert len(states) == 4 and set(states[:3]) < {"red", "green", "blue", "teal"} and states[3] == "__missing__"
        assert features["colour"]["other"]
        assert features["spend"]["indicator"] and features["joined"]["kind"] == "continuous"
        assert info[1]["held_out_rows"] == 200 and info[1]["train_rows"] == 1800
        assert info[2]["eval_accuracy"] > 0.8
        weights = {r[0] for r in self.rows(project, "select feature from {s}.buyers where tensor = 'weights'")}
        assert {"spend", "spend__missing__", f"colour={states[0]}", "colour=__other__", "member=true", "joined"} <= weights

    def test_early_stopping_ends_before_the_last_epoch(self, project):
        info = self.rows(project, "select training_info from {s}.sqlflow_models where model_name = 'buyers'")[0][0]
        assert 2 < info["epochs"] < 200 and len(info["val_loss"]) == info["epochs"]


STREAMED = {
    "mixed.sql": "{{ config(materialized='table') }}" + MIXED_SQL,
    "streamed.sql": "{{ config(materialized='ml_train', model_type='logistic_regression', label='bought', key='id', "
                    "exclude=['holdout'], validation_split=0.2, data_split='seq', null_handling='indicator', "
                    "epochs=40, batch_size=256, learning_rate=0.05, class_weight='balanced', seed=4, "
                    "memory_budget_mb=0, sample_size=300) }} select * from {{ ref('mixed') }}",
    "in_memory.sql": "{{ config(materialized='ml_train', model_type='logistic_regression', label='bought', key='id', "
                     "exclude=['holdout'], validation_split=0.2, data_split='seq', null_handling='indicator', "
                     "epochs=40, batch_size=256, learning_rate=0.05, class_weight='balanced', seed=4) }} "
                     "select * from {{ ref('mixed') }}",
    "scores.sql": "{{ config(materialized='table') }} select id, spend, colour, member, "
                  "coalesce(spend, 0) * 0.5 + member::int * 3 + (coalesce(colour, '') = 'red')::int * 2 as score from {{ ref('mixed') }}",
    "streamed_dnn.sql": "{{ config(materialized='ml_train', model_type='dnn_regressor', label='score', key='id', "
                        "exclude=['id'], hidden_units=[16], epochs=30, batch_size=64, learning_rate=0.01, "
                        "memory_budget_mb=0, sample_size=500) }} select * from {{ ref('scores') }}",
}


class TestStreamedTraining:
    @pytest.fixture(scope="class")
    def models(self):
        return STREAMED

    @pytest.fixture(scope="class", autouse=True)
    def built(self, project):
        results, output = run_dbt_and_capture(["run"])
        assert len(results) == len(STREAMED)
        return output

    def rows(self, project, sql):
        return project.run_sql(sql.replace("{s}", project.test_schema), fetch="all")

    def test_streamed_fit_matches_the_in_memory_fit(self, project, built):
        assert "streaming 2000 rows in batches" in built
        info = dict(self.rows(project, "select model_name, training_info from {s}.sqlflow_models "
                                       "where model_name in ('streamed', 'in_memory')"))
        assert info["streamed"]["train_rows"] == info["in_memory"]["train_rows"] == 1600
        assert info["streamed"]["held_out_rows"] == 400 and len(info["streamed"]["loss"]) == 40
        metrics = dict(self.rows(project, "select model_name, metrics from {s}.sqlflow_models "
                                          "where model_name in ('streamed', 'in_memory')"))
        # the same rows held out (seq), the same preprocessing; only the batch order differs
        assert metrics["streamed"]["eval_accuracy"] == pytest.approx(metrics["in_memory"]["eval_accuracy"], abs=0.03)
        features = dict(self.rows(project, "select model_name, features -> 'encoded' from {s}.sqlflow_models "
                                           "where model_name in ('streamed', 'in_memory')"))
        assert features["streamed"] == features["in_memory"]

    def test_streamed_network(self, project):
        metrics = self.rows(project, "select metrics from {s}.sqlflow_models where model_name = 'streamed_dnn'")[0][0]
        assert metrics["train_r2"] > 0.9


class TestRetrainOnChange:
    @pytest.fixture(scope="class")
    def seeds(self):
        return {"diabetes.csv": csv(DIABETES.data, DIABETES.target.astype(float))}

    @pytest.fixture(scope="class")
    def models(self):
        return {"lr.sql": "{{ config(materialized='ml_train', model_type='linear_regression', label='target', "
                          "exclude=['id'], epochs=5, retrain='on_change') }} select * from {{ ref('diabetes') }} "
                          "where id < {{ var('upto', 442) }}"}

    def test_unchanged_input_is_not_retrained(self, project):
        run_dbt(["seed"])
        run_dbt(["run"])
        _, output = run_dbt_and_capture(["run"])
        assert "TRAIN unchanged, v1 kept" in output
        _, output = run_dbt_and_capture(["run", "--vars", '{"upto": 400}'])
        assert "TRAIN 400 rows, linear_regression, v2" in output
        assert project.run_sql(f"select count(*) from {project.test_schema}.lr", fetch="one") == (11,)
