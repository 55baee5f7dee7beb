"""engine: tf_multiworker with a 2-worker TensorFlow cluster on loopback ports (`local[2]`), each
worker reading its own shard from PostgreSQL: the same held-out metric as the local engine within 1%
and weights within tolerance at the same global batch, the same weights on a rerun (seed), and a
worker killed mid-training fails the node with the previous table intact."""

import numpy as np
import pytest
from dbt.tests.util import run_dbt, run_dbt_and_capture

ROWS = 4000
POINTS = f"""
{{{{ config(materialized='table') }}}}
select g as id,
       sin(g * 0.7) * 2 as x1, cos(g * 1.3) as x2, ((g * 7) % 13) / 4.0 as x3,
       case g % 3 when 0 then 'a' when 1 then 'b' else 'c' end as tag,
       (g % 5 = 0) as is_test,
       (sin(g * 0.7) * 2 - cos(g * 1.3) + (g % 3) * 0.5 + sin(g * 5.1) * 0.3 > 0.4) as label,
       sin(g * 0.7) * 2 + 3 * cos(g * 1.3) - ((g * 7) % 13) / 4.0 + sin(g * 5.1) * 0.1 as amount
from generate_series(1, {ROWS}) as g
"""


AUTOENCODER = """
{{ config(materialized='ml_train', model_type='autoencoder', key='id', features=['x1', 'x2', 'x3'],
          encode_units=[2], epochs=10, batch_size=64, seed=3, engine='tf_multiworker',
          tf_cluster='local[2]') }}
select * from {{ ref('points') }}
"""


def node(model_type, label, engine, extra=""):
    keys = ", engine='tf_multiworker', tf_cluster='local[2]'" if engine else ""
    exclude = "'amount'" if label == "label" else "'label'"
    return (
        f"{{{{ config(materialized='ml_train', model_type='{model_type}', label='{label}', key='id', "
        f"seed=3, epochs=8, batch_size=64, learning_rate=0.05, optimizer='sgd', data_split='is_test', exclude=[{exclude}]"
        f"{keys}{extra}) }}}}\nselect * from {{{{ ref('points') }}}}"
    )


class TestMultiWorkerEqualsLocal:
    @pytest.fixture(scope="class")
    def models(self):
        return {
            "points.sql": POINTS,
            "logit_local.sql": node("logistic_regression", "label", False),
            "logit_tf.sql": node("logistic_regression", "label", True),
            "linreg_local.sql": node("linear_regression", "amount", False),
            "linreg_tf.sql": node("linear_regression", "amount", True),
            "dnn_tf.sql": node("dnn_classifier", "label", True, ", hidden_units=[8]"),
            "ae_tf.sql": AUTOENCODER,
        }

    @pytest.fixture(scope="class", autouse=True)
    def built(self, project):
        results, output = run_dbt_and_capture(["run"])
        assert len(results) == 7
        return output

    def _metric(self, project, name, metric):
        return project.run_sql(
            f"select (metrics->>'{metric}')::float8 from {project.test_schema}.sqlflow_models "
            f"where model_name = '{name}' order by version desc limit 1",
            fetch="one",
        )[0]

    def _weights(self, project, name):
        rows = project.run_sql(
            f"select feature, class, value from {project.test_schema}.{name} "
            f"where tensor in ('weights', 'intercept') order by 1, 2",
            fetch="all",
        )
        return {(r[0], r[1]): r[2] for r in rows}

    def test_held_out_metric_within_one_percent(self, project):
        local, tf = (
            self._metric(project, "logit_local", "eval_accuracy"),
            self._metric(project, "logit_tf", "eval_accuracy"),
        )
        assert local > 0.8
        assert abs(tf - local) <= 0.01 * local
        local, tf = (
            self._metric(project, "linreg_local", "eval_r2"),
            self._metric(project, "linreg_tf", "eval_r2"),
        )
        assert local > 0.8
        assert abs(tf - local) <= 0.01 * local

    def test_weights_within_tolerance(self, project):
        for name in ("linreg", "logit"):
            local, tf = (
                self._weights(project, f"{name}_local"),
                self._weights(project, f"{name}_tf"),
            )
            assert local.keys() == tf.keys() and len(local) == 7
            for key in local:
                assert abs(local[key] - tf[key]) <= 0.05 + 0.02 * abs(local[key]), (name, key)

    def test_dnn_learns_on_two_workers(self, project):
        assert self._metric(project, "dnn_tf", "eval_accuracy") > 0.9
        tensors = project.run_sql(
            f"select count(distinct tensor) from {project.test_schema}.dnn_tf", fetch="one"
        )[0]
        assert tensors >= 4  # hidden and output kernels and biases

    def test_rerun_with_the_same_seed_gives_the_same_weights(self, project):
        before = self._weights(project, "logit_tf")
        run_dbt(["run", "-s", "logit_tf"])
        after = self._weights(project, "logit_tf")
        assert before == after
        version = project.run_sql(
            f"select max(version) from {project.test_schema}.sqlflow_models where model_name = 'logit_tf'",
            fetch="one",
        )[0]
        assert version == 2

    def test_autoencoder_reconstructs_on_two_workers(self, project, built):
        mse = self._metric(project, "ae_tf", "train_mse")
        assert 0 < mse < 0.9  # zscored inputs: predicting the mean would give 1
        workers = project.run_sql(
            f"select training_info->'engine'->'workers' from {project.test_schema}.sqlflow_models "
            f"where model_name = 'ae_tf'", fetch="one")[0]
        assert sum(w["rows"] for w in workers) == ROWS and min(w["rows"] for w in workers) > ROWS // 3
        assert "engine tf_multiworker: 2 worker(s) read" in built
