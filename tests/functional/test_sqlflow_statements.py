"""materialized='sqlflow': SQLFlow's TO TRAIN / TO PREDICT / TO EVALUATE / TO EXPLAIN statements as
model bodies, and ml_explain's attributions (exact for linear models, SHAP for networks, cluster
discrimination for k-means), checked against hand computation on real PostgreSQL."""

import numpy as np
import pytest
from dbt.tests.util import run_dbt, run_dbt_and_capture
from sklearn.datasets import load_iris

IRIS = load_iris()


def iris_csv():
    lines = ["id,sepal_length,sepal_width,petal_length,petal_width,class"]
    for i, (row, y) in enumerate(zip(IRIS.data, IRIS.target)):
        lines.append(f"{i}," + ",".join(repr(float(v)) for v in row) + f",{y}")
    return "\n".join(lines) + "\n"


def ten_features_csv(n=400, seed=3):
    """y depends on x2 and x7 only; tags is a text list of ids for NUMERIC / CATEGORY_ID columns."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 10))
    y = 3.0 * X[:, 2] - 2.0 * X[:, 7] + 0.01 * rng.normal(size=n)
    lines = ["id," + ",".join(f"x{j}" for j in range(10)) + ",vec,tag,tags,grp,y,big"]
    for i in range(n):
        vec = f"{X[i, 0]:.6f};{X[i, 1]:.6f}"
        lines.append(
            f"{i},"
            + ",".join(f"{v:.6f}" for v in X[i])
            + f",{vec},{i % 4},{i % 4};{(i // 4) % 4},{'abcd'[int(X[i, 2] > 0) + 2 * int(rng.random() < 0.3)]},{y[i]:.6f},{int(y[i] > 0)}"
        )
    return "\n".join(lines) + "\n"


TRAIN_DNN = """
select * from {{ ref('iris') }} where id % 5 <> 0
TO TRAIN DNNClassifier
WITH model.n_classes = 3, model.hidden_units = [10, 10], train.epoch = 60, train.batch_size = 16,
     optimizer.learning_rate = 0.05,
     validation.select = 'select * from {{ ref("iris") }} where id % 5 = 0'
COLUMN sepal_length, sepal_width, petal_length, petal_width
LABEL class
INTO iris_dnn;
"""

MODELS = {
    "iris_dnn.sql": "{{ config(materialized='sqlflow', seed=1) }}" + TRAIN_DNN,
    "iris_predicted.sql": "{{ config(materialized='sqlflow') }}\n"
    "select id, sepal_length, sepal_width, petal_length, petal_width from {{ ref('iris') }}\n"
    "to predict iris_predicted.class using {{ ref('iris_dnn') }}",
    "iris_evaluated.sql": "{{ config(materialized='sqlflow') }}\nSELECT * FROM {{ ref('iris') }}\n"
    "TO EVALUATE {{ ref('iris_dnn') }} WITH validation.metrics = \"Accuracy,AUC\" LABEL class "
    "INTO iris_evaluated",
    "iris_explained.sql": "{{ config(materialized='sqlflow') }}\n"
    "select * from {{ ref('iris') }} where id < 30\n"
    "TO EXPLAIN {{ ref('iris_dnn') }} WITH background = 20, key = 'id' USING PermutationExplainer;",
    "plain_table.sql": "{{ config(materialized='sqlflow') }}\nselect 1 as predict, 'to train' as x;",
    # the exact path: a linear regression and a logistic regression, explained in PostgreSQL
    "lin.sql": "{{ config(materialized='ml_train', model_type='linear_regression', label='y', key='id', "
    "features=['x0','x1','x2','x3','x4','x5','x6','x7','x8','x9','tag'], epochs=80, "
    "learning_rate=0.1, batch_size=64, seed=1) }} select * from {{ ref('ten') }}",
    "logit.sql": "{{ config(materialized='ml_train', model_type='logistic_regression', label='big', "
    "key='id', features=['x0','x2','x7'], epochs=30, batch_size=64, seed=1) }} "
    "select * from {{ ref('ten') }}",
    "lin_explained.sql": "{{ config(materialized='ml_explain', model='lin') }}\n"
    "-- depends_on: {{ ref('lin') }}\nselect * from {{ ref('ten') }}",
    "logit_explained.sql": "{{ config(materialized='ml_explain', model='logit') }}\n"
    "-- depends_on: {{ ref('logit') }}\nselect * from {{ ref('ten') }} where id < 50",
    # SHAP: a DNN regressor on NUMERIC and CATEGORY_ID feature columns
    "dnn_reg.sql": "{{ config(materialized='sqlflow') }}\nselect * from {{ ref('ten') }}\n"
    "TO TRAIN DNNRegressor WITH model.hidden_units = [16], train.epoch = 60, seed = 2\n"
    "COLUMN x0, x1, x2, x3, x4, x5, x6, x7, x8, x9, NUMERIC(vec, 2, ';'),\n"
    "  EMBEDDING(CATEGORY_ID(tag, 4), 2, mean), EMBEDDING(CATEGORY_ID(tags, 4, ';'), 3)\n"
    "LABEL y INTO dnn_reg",
    "dnn_predicted.sql": "{{ config(materialized='sqlflow') }}\n"
    "select id, x0, x1, x2, x3, x4, x5, x6, x7, x8, x9, vec, tag, tags from {{ ref('ten') }} where id < 10\n"
    "TO PREDICT dnn_predicted.y_hat USING {{ ref('dnn_reg') }}",
    "dnn_explained.sql": "{{ config(materialized='ml_explain', model='dnn_reg', background=30, seed=1) }}\n"
    "-- depends_on: {{ ref('dnn_reg') }}\nselect * from {{ ref('ten') }} where id < 40",
    "lin_importance.sql": "select * from {{ ml_global_explain(ref('lin_explained')) }}",
    # SHAP on the other network types: an autoencoder, a factorization machine, DEC
    "ae.sql": "{{ config(materialized='ml_train', model_type='autoencoder', encode_units=[8, 3], epochs=5, "
    "features=['x0','x1','x2','x3','x4'], seed=1) }} select * from {{ ref('ten') }}",
    "ae_explained.sql": "{{ config(materialized='ml_explain', model='ae', background=10, key='id') }}\n"
    "-- depends_on: {{ ref('ae') }}\nselect * from {{ ref('ten') }} where id < 15",
    "fm.sql": "{{ config(materialized='ml_train', model_type='factorization_machine', label='y', "
    "features=['x0','x1','x2','x7','grp'], epochs=20, seed=1) }} select * from {{ ref('ten') }}",
    "fm_explained.sql": "{{ config(materialized='ml_explain', model='fm', background=10, key='id', "
    "explainer='kernel') }}\n-- depends_on: {{ ref('fm') }}\nselect * from {{ ref('ten') }} where id < 15",
    "dec_model.sql": "{{ config(materialized='ml_train', model_type='dec', n_clusters=3, encode_units=[8, 2], "
    "pretrain_epochs=3, epochs=2, features=['x0','x1','x2','x3'], seed=1) }} select * from {{ ref('ten') }}",
    "dec_explained.sql": "{{ config(materialized='ml_explain', model='dec_model', background=10, key='id') }}\n"
    "-- depends_on: {{ ref('dec_model') }}\nselect * from {{ ref('ten') }} where id < 15",
    # multiclass logistic regression: the predicted class's logit, exactly, in PostgreSQL
    "iris_logit.sql": "{{ config(materialized='ml_train', model_type='logistic_regression', label='class', "
    "features=['sepal_length','sepal_width','petal_length','petal_width'], epochs=40, seed=1) }} "
    "select * from {{ ref('iris') }}",
    "iris_logit_scored.sql": "{{ config(materialized='ml_predict', model='iris_logit') }}\n"
    "-- depends_on: {{ ref('iris_logit') }}\nselect * from {{ ref('iris') }}",
    "iris_logit_explained.sql": "{{ config(materialized='ml_explain', model='iris_logit', key='id') }}\n"
    "-- depends_on: {{ ref('iris_logit') }}\nselect * from {{ ref('iris') }}",
    "em_segments.sql": "{{ config(materialized='cluster', model_type='em', n_clusters=2, seed=0, "
    "features=['x2','grp']) }} select * from {{ ref('ten') }}",
    "em_explained.sql": "{{ config(materialized='ml_explain', model='em_segments') }}\n"
    "-- depends_on: {{ ref('em_segments') }}\nselect * from {{ ref('ten') }}",
    # empty input and NULLs
    "lin_empty.sql": "{{ config(materialized='ml_explain', model='lin') }}\n"
    "-- depends_on: {{ ref('lin') }}\nselect * from {{ ref('ten') }} where false",
    "dnn_empty.sql": "{{ config(materialized='ml_explain', model='dnn_reg') }}\n"
    "-- depends_on: {{ ref('dnn_reg') }}\nselect * from {{ ref('ten') }} where false",
    "segments_empty.sql": "{{ config(materialized='ml_explain', model='segments') }}\n"
    "-- depends_on: {{ ref('segments') }}\nselect * from {{ ref('ten') }} where false",
    "lin_nulls.sql": "{{ config(materialized='ml_explain', model='lin') }}\n-- depends_on: {{ ref('lin') }}\n"
    "select id, case when id = 1 then null else x0 end as x0, x1, x2, x3, x4, x5, x6, x7, x8, x9, tag "
    "from {{ ref('ten') }} where id < 5",
    "lin_numbered.sql": "{{ config(materialized='ml_explain', model='lin') }}\n-- depends_on: {{ ref('lin') }}\n"
    "select 7 as row_id, x0, x1, x2, x3, x4, x5, x6, x7, x8, x9, tag from {{ ref('ten') }} where id < 3",
    "segments.sql": "{{ config(materialized='cluster', model_type='kmeans', n_clusters=3, seed=0, "
    "features=['x2','x7','grp']) }} select * from {{ ref('ten') }}",
    "segments_explained.sql": "{{ config(materialized='ml_explain', model='segments') }}\n"
    "-- depends_on: {{ ref('segments') }}\nselect * from {{ ref('ten') }}",
}


class TestSqlflowStatements:
    @pytest.fixture(scope="class")
    def seeds(self):
        return {"iris.csv": iris_csv(), "ten.csv": ten_features_csv()}

    @pytest.fixture(scope="class")
    def models(self):
        return MODELS

    @pytest.fixture(scope="class", autouse=True)
    def built(self, project):
        run_dbt(["seed"])
        results = run_dbt(["run"])
        assert len(results) == len(MODELS)
        return results

    def rows(self, project, sql):
        return project.run_sql(sql.replace("{s}", project.test_schema), fetch="all")

    def test_train_registers_a_dnn_with_the_statement_options(self, project):
        (row,) = self.rows(
            project,
            "select model_type, options->>'hidden_units', options->>'epochs', "
            "options->>'n_classes', (metrics->>'eval_accuracy')::float, row_count "
            "from {s}.sqlflow_models where relation_identifier = 'iris_dnn'",
        )
        assert row[:4] == ("dnn_classifier", "[10, 10]", "60", "3")
        assert row[4] >= 0.8  # held out: the rows of validation.select
        assert row[5] == 150  # 120 training rows + 30 held out

    def test_predict_writes_the_prediction_into_the_named_column(self, project):
        columns = [
            r[0]
            for r in self.rows(
                project,
                "select column_name from information_schema.columns where table_schema = '{s}' "
                "and table_name = 'iris_predicted' order by ordinal_position",
            )
        ]
        assert columns == [
            "id",
            "sepal_length",
            "sepal_width",
            "petal_length",
            "petal_width",
            "class",
            "model_version",
        ]
        (accuracy,) = self.rows(
            project,
            "select avg((p.class = i.class)::int) from {s}.iris_predicted p join {s}.iris i using (id)",
        )[0:1][0]
        assert accuracy >= 0.85

    def test_evaluate_writes_one_row_of_the_metrics_asked_for(self, project):
        rows = self.rows(
            project, "select model_version, rows, accuracy, roc_auc from {s}.iris_evaluated"
        )
        assert len(rows) == 1
        version, n, accuracy, auc = rows[0]
        assert (version, n) == (1, 150)
        predicted = self.rows(
            project,
            "select avg((p.class = i.class)::int) from {s}.iris_predicted p join {s}.iris i using (id)",
        )[0][0]
        assert accuracy == pytest.approx(float(predicted), abs=1e-9)
        assert 0.9 <= auc <= 1.0

    def test_no_clause_is_an_ordinary_table(self, project):
        assert self.rows(project, "select predict, x from {s}.plain_table") == [(1, "to train")]

    def test_explain_a_dnn_classifier_sums_to_prediction_minus_baseline(self, project):
        rows = self.rows(
            project,
            "select id, sum(attribution), min(prediction - baseline), count(*), min(explained_output) "
            "from {s}.iris_explained group by id order by id",
        )
        assert len(rows) == 30 and all(r[3] == 4 for r in rows)
        for _, total, gap, _, output in rows:
            assert total == pytest.approx(gap, abs=1e-6)
            assert output.startswith("probability(class=")

    def test_linear_attributions_are_weight_times_value_minus_mean(self, project):
        weights = dict(
            self.rows(
                project,
                "select feature, value from {s}.lin where tensor = 'weights' and feature like 'x%'",
            )
        )
        means = dict(
            self.rows(
                project,
                "select 'x' || j, avg(v) from {s}.ten, lateral (values "
                + ", ".join(f"({j}, x{j})" for j in range(10))
                + ") as t(j, v) group by j",
            )
        )
        got = self.rows(
            project,
            "select e.id, e.feature, e.attribution, t.x0, t.x3 from {s}.lin_explained e "
            "join {s}.ten t using (id) where e.feature in ('x0', 'x3') and e.id < 20",
        )
        assert len(got) == 40
        for _, feature, attribution, x0, x3 in got:
            value = x0 if feature == "x0" else x3
            assert attribution == pytest.approx(
                weights[feature] * (value - float(means[feature])), abs=1e-9
            )
        sums = self.rows(
            project,
            "select id, sum(attribution), min(prediction), min(baseline) from {s}.lin_explained group by id",
        )
        scored = dict(self.rows(project, "select id, y from {s}.ten"))
        assert len(sums) == 400
        for _, total, prediction, baseline in sums:
            assert total == pytest.approx(prediction - baseline, abs=1e-9)
        ranked = [
            r[0]
            for r in self.rows(
                project, "select feature from {s}.lin_importance order by rank"
            )
        ]
        assert set(ranked[:2]) == {"x2", "x7"}
        assert scored  # the seed is there to join

    def test_logistic_attributions_are_in_logits(self, project):
        rows = self.rows(
            project,
            "select id, sum(attribution), min(prediction - baseline), min(explained_output) "
            "from {s}.logit_explained group by id",
        )
        assert len(rows) == 50
        for _, total, gap, output in rows:
            assert total == pytest.approx(gap, abs=1e-9)
            assert output == "logit(big=1)"

    def test_shap_on_a_dnn_ranks_the_two_features_that_matter_first(self, project):
        sums = self.rows(
            project,
            "select row_id, sum(attribution), min(prediction - baseline), count(*) "
            "from {s}.dnn_explained group by row_id",
        )
        assert len(sums) == 40
        for _, total, gap, n in sums:
            assert n == 17  # x0..x9, vec_0, vec_1, tag and tags_0..tags_3
            assert total == pytest.approx(gap, abs=1e-6)
        top = self.rows(
            project, "select feature from {s}.dnn_explained__global order by rank limit 2"
        )
        assert {r[0] for r in top} == {"x2", "x7"}

    def test_embedding_columns_are_learned_tables_and_scoring_replays_the_columns(self, project):
        shapes = self.rows(
            project,
            "select tensor, max(i) + 1, max(j) + 1 from {s}.dnn_reg where tensor like 'embeddings/%' "
            "group by tensor order by tensor",
        )
        assert shapes == [("embeddings/embedding_0", 4, 2), ("embeddings/embedding_1", 4, 3)]
        predicted = self.rows(project, "select id, y_hat from {s}.dnn_predicted order by id")
        assert [r[0] for r in predicted] == list(range(10))
        truth = dict(self.rows(project, "select id, y from {s}.ten where id < 10"))
        errors = [abs(y_hat - truth[i]) for i, y_hat in predicted]
        assert np.mean(errors) < 1.0  # y spans about +-10

    @pytest.mark.parametrize(
        "node, features, output",
        [
            ("ae_explained", 5, "reconstruction_error"),
            ("fm_explained", 5, "predicted_y"),
            ("dec_explained", 4, "distance_to_cluster_"),
        ],
    )
    def test_shap_sums_for_autoencoder_fm_and_dec(self, project, node, features, output):
        rows = self.rows(
            project,
            f"select id, sum(attribution), min(prediction - baseline), count(*), min(explained_output) "
            f"from {{s}}.{node} group by id",
        )
        assert len(rows) == 15
        for _, total, gap, n, explained in rows:
            assert n == features and explained.startswith(output)
            assert total == pytest.approx(gap, abs=1e-6)
        if node == "dec_explained":  # the distance to the centre the row is assigned to
            assigned = self.rows(
                project,
                "select e.id, min(e.explained_output), min(e.prediction) from {s}.dec_explained e group by e.id",
            )
            assert all(p >= 0 for _, _, p in assigned)

    def test_multiclass_logistic_explains_the_predicted_class_logit(self, project):
        rows = self.rows(
            project,
            "select e.id, sum(e.attribution), min(e.prediction - e.baseline), min(e.explained_output), "
            "min(s.predicted_class) from {s}.iris_logit_explained e join {s}.iris_logit_scored s using (id) "
            "group by e.id",
        )
        assert len(rows) == 150
        for _, total, gap, output, predicted in rows:
            assert total == pytest.approx(gap, abs=1e-9)
            assert output == f"logit(class={predicted})"

    def test_em_discrimination_table(self, project):
        rows = self.rows(project, "select cluster_id, feature, cluster_share from {s}.em_explained")
        assert {r[0] for r in rows} == {0, 1}
        for cluster in (0, 1):
            assert sum(r[2] for r in rows if r[0] == cluster and r[1] == "grp") == pytest.approx(1.0)

    def test_empty_input_gives_empty_tables(self, project):
        for node in ("lin_empty", "dnn_empty", "segments_empty"):
            assert self.rows(project, f"select count(*) from {{s}}.{node}") == [(0,)]
            assert self.rows(project, f"select count(*) from {{s}}.{node}__global") == [(0,)]

    def test_rows_without_a_key_are_numbered(self, project):
        # the SELECT has neither the model's key (id) nor a key config: row_id numbers its rows,
        # even where the SELECT has a row_id column of its own
        assert self.rows(project, "select distinct row_id from {s}.lin_numbered order by 1") == [(1,), (2,), (3,)]

    def test_a_null_feature_is_imputed_with_the_mean_and_attributes_nothing(self, project):
        rows = self.rows(
            project,
            "select id, value, attribution from {s}.lin_nulls where feature = 'x0' order by id",
        )
        assert len(rows) == 5
        assert rows[1][1] is None and rows[1][2] == pytest.approx(0.0, abs=1e-9)
        assert all(r[1] is not None for r in rows if r[0] != 1)

    def test_kmeans_discrimination_table(self, project):
        rows = self.rows(
            project,
            "select cluster_id, feature, state_or_bin, cluster_share, rest_share, score "
            "from {s}.segments_explained",
        )
        assert {r[0] for r in rows} == {0, 1, 2}
        assert {r[1] for r in rows} == {"x2", "x7", "grp"}
        for cluster in range(3):
            for feature in ("x2", "x7", "grp"):
                shares = [r[3] for r in rows if r[0] == cluster and r[1] == feature]
                assert sum(shares) == pytest.approx(1.0)
        for _, _, _, c, r, score in rows:
            assert np.sign(score) == np.sign(c - r)
        # the shares of a categorical state, counted by hand from the cluster node's own rows
        counted = self.rows(
            project,
            "select cluster_id, avg((grp = 'a')::int), (select avg((grp = 'a')::int) from {s}.segments o "
            "where o.cluster_id <> c.cluster_id) from {s}.segments c group by cluster_id",
        )
        shares = {(r[0], r[2]): (r[3], r[4]) for r in rows if r[1] == "grp"}
        for cluster, inside, rest in counted:
            assert shares[(cluster, "a")] == pytest.approx((float(inside), float(rest)), abs=1e-12)
        ranked = self.rows(
            project, "select feature, rank from {s}.segments_explained__global order by rank"
        )
        assert [r[1] for r in ranked] == sorted(r[1] for r in ranked) and len(ranked) == 3


BAD = {
    "bare_name": (
        "select * from {{ ref('iris') }} to predict bare_name.class using iris_dnn",
        "write {{ ref('iris_dnn') }}",
    ),
    "wrong_into": (
        "select * from {{ ref('iris') }} to train DNNClassifier label class into other_name",
        "INTO must name this model ('wrong_into')",
    ),
    "boosted": (
        "select * from {{ ref('iris') }} to train BoostedTreesClassifier label class into boosted",
        "boosted trees and XGBoost models are not supported",
    ),
    "unknown_attr": (
        "select * from {{ ref('iris') }} to train DNNClassifier with model.foo = 1 "
        "label class into unknown_attr",
        "WITH model.foo is not an attribute",
    ),
    "n_classes_off": (
        "select * from {{ ref('iris') }} to train DNNClassifier with model.n_classes = 2, "
        "train.epoch = 1 label class into n_classes_off",
        "n_classes=2, but label column",
    ),
    "disagrees": (
        "{{ config(hidden_units=[64]) }} select * from {{ ref('iris') }} to train DNNClassifier "
        "with model.hidden_units = [10] label class into disagrees",
        "'hidden_units' is [64] in config() but [10] in the SQLFlow statement",
    ),
    "bad_key": (
        "select * from {{ ref('iris') }} to explain {{ ref('iris_dnn') }} with key = \"nope\"",
        "key column(s) nope are not in the SELECT",
    ),
    "no_label": (
        "select id, sepal_length, sepal_width, petal_length, petal_width from {{ ref('iris') }} "
        "to evaluate {{ ref('iris_dnn') }}",
        "TO EVALUATE compares predictions with label column 'class'",
    ),
    "embedding": (
        "select * from {{ ref('iris') }} to train LinearClassifier "
        "column sepal_length, EMBEDDING(CATEGORY_ID(id, 150), 2) label class into embedding",
        "EMBEDDING columns feed a DNN's first layer",
    ),
}


class TestEmptyRun:
    """`dbt run --empty` on a fresh project: every sqlflow node builds its columns, trains nothing."""

    @pytest.fixture(scope="class")
    def seeds(self):
        return {"iris.csv": iris_csv()}

    @pytest.fixture(scope="class")
    def models(self):
        return {
            "iris_dnn.sql": "{{ config(materialized='sqlflow', seed=1) }}" + TRAIN_DNN,
            "iris_predicted.sql": MODELS["iris_predicted.sql"],
            "iris_evaluated.sql": MODELS["iris_evaluated.sql"],
            "iris_explained.sql": MODELS["iris_explained.sql"],
        }

    def test_empty_run_builds_every_node(self, project):
        run_dbt(["seed"])
        assert len(run_dbt(["run", "--empty"])) == 4
        for node in ("iris_predicted", "iris_evaluated", "iris_explained", "iris_explained__global"):
            count = project.run_sql(f"select count(*) from {project.test_schema}.{node}", fetch="one")
            assert count == (0,), node


class TestStatementErrors:
    @pytest.fixture(scope="class")
    def seeds(self):
        return {"iris.csv": iris_csv()}

    @pytest.fixture(scope="class")
    def models(self):
        out = {
            "iris_dnn.sql": "{{ config(materialized='sqlflow', seed=1) }}"
            + TRAIN_DNN.replace("60", "2")
        }
        for name, (body, _) in BAD.items():
            out[f"{name}.sql"] = (
                "{{ config(materialized='sqlflow') }}\n-- {{ ref('iris_dnn') }}\n" + body
            )
        return out

    def test_each_bad_statement_fails_its_node_with_the_fix(self, project):
        run_dbt(["seed"])
        run_dbt(["run", "-s", "iris_dnn"])
        for name, (_, message) in BAD.items():
            _, output = run_dbt_and_capture(["run", "-s", name], expect_pass=False)
            named = f"{name}: " in output or f"model '{name}'" in output
            assert named and message in output, (name, output[-3000:])
            assert "Traceback" not in output
            exists = project.run_sql(
                f"select to_regclass('{project.test_schema}.{name}') is not null", fetch="one"
            )[0]
            assert not exists
