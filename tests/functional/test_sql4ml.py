"""sql4ml through dbt on real PostgreSQL (design section 8): models written in SQL are trained by
TensorFlow, checked against PostgreSQL, stored as a weights table, exported as a program, and scored
inside PostgreSQL by ml_predict."""
import csv
import io
import os
import subprocess
import sys

import numpy as np
import pytest
from dbt.tests.util import run_dbt, run_dbt_and_capture
from sklearn.datasets import load_diabetes
from sklearn.linear_model import LinearRegression
from sklearn.preprocessing import StandardScaler


def long_csv(X, names):
    lines = ["obs_id,feature,value"]
    for i, row in enumerate(X):
        lines += [f"{i},{n},{v:.15f}" for n, v in zip(names, row)]  # agate reads no exponents
    return "\n".join(lines) + "\n"


def target_csv(y, name="target"):
    return f"obs_id,{name}\n" + "".join(f"{i},{float(v):.15f}\n" for i, v in enumerate(y))


DIABETES = load_diabetes()
DIABETES_X = StandardScaler().fit_transform(DIABETES.data)

LINEAR = """{{ config(materialized='ml_train', model_type='sql', weights={'w': ['feature'], 'b': []},
          prediction='predictions', key='obs_id', learning_rate=1.0, epochs=1500, seed=0) }}
with features as (                    -- long format (id, name, value), as in the paper
    select obs_id, feature, value from {{ ref('diabetes_features') }}
), targets as (
    select obs_id, target as value from {{ ref('diabetes_targets') }}
), predictions as (
    select f.obs_id, sum(f.value * w.value) + (select value from b) as value
    from features f join w on w.feature = f.feature
    group by f.obs_id
)
select avg(power(p.value - t.value, 2))
from predictions p join targets t on t.obs_id = p.obs_id
"""

SCORED = """{{ config(materialized='ml_predict', model='diabetes_sql') }}
-- depends_on: {{ ref('diabetes_sql') }}
select obs_id, feature, value from {{ ref('diabetes_features') }}
"""

RANGES = """select tensor, min(value) as lowest, max(value) as highest, count(*) as n
from {{ ref('diabetes_sql') }} group by tensor
"""


def ols(X, y):
    model = LinearRegression().fit(X, y)
    return model, float(((model.predict(X) - y) ** 2).mean())


class TestLinearRegressionInSql:
    @pytest.fixture(scope="class")
    def seeds(self):
        return {
            "diabetes_features.csv": long_csv(DIABETES_X, DIABETES.feature_names),
            "diabetes_targets.csv": target_csv(DIABETES.target),
        }

    @pytest.fixture(scope="class")
    def models(self):
        return {"diabetes_sql.sql": LINEAR, "diabetes_sql_scored.sql": SCORED,
                "diabetes_weight_ranges.sql": RANGES}

    @pytest.fixture(scope="class", autouse=True)
    def built(self, project):
        run_dbt(["seed"])
        results, output = run_dbt_and_capture(["run"])
        assert len(results) == 3
        return output

    def rows(self, project, sql):
        return project.run_sql(sql.replace("{s}", project.test_schema), fetch="all")

    def test_objective_and_coefficients_match_least_squares(self, project):
        model, mse = ols(DIABETES_X, DIABETES.target)
        (objective,) = self.rows(project, "select (metrics->>'objective')::float8 from {s}.sqlflow_models")[0]
        assert objective == pytest.approx(mse, rel=0.005)
        weights = dict(self.rows(project, "select feature, value from {s}.diabetes_sql where tensor = 'w'"))
        expected = dict(zip(DIABETES.feature_names, model.coef_))
        for name, coefficient in expected.items():
            assert weights[name] == pytest.approx(coefficient, rel=0.01), name
        (bias,) = self.rows(project, "select value from {s}.diabetes_sql where tensor = 'b'")[0]
        assert bias == pytest.approx(model.intercept_, rel=0.01)

    def test_weights_table_has_index_columns_and_version(self, project):
        columns = self.rows(project, "select column_name, data_type from information_schema.columns "
                                     "where table_schema = '{s}' and table_name = 'diabetes_sql' order by ordinal_position")
        assert [c for c, _ in columns] == ["model_version", "tensor", "feature", "value"]
        assert dict(columns)["feature"] == "text"
        counts = dict(self.rows(project, "select tensor, count(*) from {s}.diabetes_sql group by tensor"))
        assert counts == {"w": 10, "b": 1}
        (nulls,) = self.rows(project, "select count(*) from {s}.diabetes_sql where tensor = 'b' and feature is null")[0]
        assert nulls == 1

    def test_registry_records_self_check_program_and_objective_per_epoch(self, project):
        (info, params) = self.rows(project, "select training_info, parameters from {s}.sqlflow_models")[0]
        check = info["self_check"]
        assert check["postgresql"] == pytest.approx(check["tensorflow"], rel=1e-6)
        assert len(info["objective"]) == 1500 and info["objective"][0] > info["objective"][-1]
        assert info["parse_ms"] > 0 and info["analysis_ms"] > 0 and info["codegen_ms"] > 0
        assert "sum(f.value * w.value)" in params["program"]

    def test_ml_predict_in_postgresql_equals_the_trained_model(self, project):
        model, _ = ols(DIABETES_X, DIABETES.target)
        rows = self.rows(project, "select obs_id, predicted_value, model_version from {s}.diabetes_sql_scored order by obs_id")
        assert len(rows) == len(DIABETES.target) and {r[2] for r in rows} == {1}
        weights = dict(self.rows(project, "select feature, value from {s}.diabetes_sql where tensor = 'w'"))
        (bias,) = self.rows(project, "select value from {s}.diabetes_sql where tensor = 'b'")[0]
        w = np.array([weights[n] for n in DIABETES.feature_names])
        np.testing.assert_allclose([r[1] for r in rows], DIABETES_X @ w + bias, rtol=1e-9)

    def test_downstream_query_of_weight_ranges(self, project):
        ranges = {r[0]: r[1:] for r in self.rows(project, "select * from {s}.diabetes_weight_ranges")}
        assert ranges["w"][2] == 10 and ranges["w"][0] < 0 < ranges["w"][1]

    def test_generated_program_reproduces_the_weights(self, project, postgres_server):
        path = os.path.join(project.project_root, "target", "sqlflow", "diabetes_sql.py")
        source = open(path).read()
        assert "tf.einsum" in source and "def objective(weights, data, masks)" in source
        dsn = " ".join(f"{k}={v}" for k, v in postgres_server["dsn"].items() if v not in (None, ""))
        done = subprocess.run([sys.executable, path], env={**os.environ, "SQLFLOW_DSN": dsn},
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        produced = {(r["tensor"], r["feature"]): float(r["value"]) for r in csv.DictReader(io.StringIO(done.stdout))}
        stored = {(t, f or ""): v for t, f, v in self.rows(project, "select tensor, feature, value from {s}.diabetes_sql")}
        assert produced.keys() == stored.keys()
        for k, v in stored.items():
            assert produced[k] == pytest.approx(v, rel=1e-6, abs=1e-9), k
