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
from sklearn.datasets import load_breast_cancer, load_diabetes
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


CANCER = load_breast_cancer()
CANCER_X = StandardScaler().fit_transform(CANCER.data)
CANCER_NAMES = [f"f{j:02d}" for j in range(CANCER_X.shape[1])]
CANCER_HELD = np.random.default_rng(0).random(len(CANCER.target)) < 0.25
L2 = 1 / (2 * 1.0 * len(CANCER.target))  # scikit-learn's C=1 on the mean log loss
SVM_L2 = 1 / (2 * 1.0 * int((~CANCER_HELD).sum()))

LOGISTIC = """{{ config(materialized='ml_train', model_type='sql', weights={'w': ['feature'], 'b': []},
          prediction='probabilities', key='obs_id', learning_rate=0.05, epochs=2000, seed=0) }}
with features as (
    select obs_id, feature, value from {{ ref('cancer_features') }}
), targets as (
    select obs_id, target as value from {{ ref('cancer_targets') }}
), scores as (
    select f.obs_id, sum(f.value * w.value) + (select value from b) as z
    from features f join w on w.feature = f.feature group by f.obs_id
), probabilities as (
    select obs_id, 1 / (1 + exp(-z)) as p from scores
)
select -avg(t.value * ln(greatest(p.p, 1e-15)) + (1 - t.value) * ln(greatest(1 - p.p, 1e-15)))
       + L2 * (select sum(power(value, 2)) from w)
from probabilities p join targets t on t.obs_id = p.obs_id
""".replace("L2", repr(L2))

SVM = """{{ config(materialized='ml_train', model_type='sql', weights={'w': ['feature'], 'b': []},
          key='obs_id', learning_rate=0.01, epochs=2000, seed=0) }}
with targets as (
    select obs_id, case when target = 1 then 1.0 else -1.0 end as value
    from {{ ref('cancer_targets') }} where not held_out
), features as (
    select f.obs_id, f.feature, f.value from {{ ref('cancer_features') }} f
    where f.obs_id in (select obs_id from targets)
), predictions as (
    select f.obs_id, sum(f.value * w.value) + (select value from b) as value
    from features f join w on w.feature = f.feature group by f.obs_id
)
select avg(greatest(0, 1 - t.value * p.value)) + L2 * (select sum(power(value, 2)) from w)
from predictions p join targets t on t.obs_id = p.obs_id
""".replace("L2", repr(SVM_L2))

SVM_SCORED = """{{ config(materialized='ml_predict', model='cancer_svm') }}
-- depends_on: {{ ref('cancer_svm') }}
select f.obs_id, f.feature, f.value from {{ ref('cancer_features') }} f
join {{ ref('cancer_targets') }} t on t.obs_id = f.obs_id where t.held_out
"""


def cancer_targets_csv():
    lines = ["obs_id,target,held_out"]
    lines += [f"{i},{int(y)},{str(bool(h)).lower()}" for i, (y, h) in enumerate(zip(CANCER.target, CANCER_HELD))]
    return "\n".join(lines) + "\n"


class TestClassifiersInSql:
    """Logistic regression with the sigmoid and L2 written in SQL, and a linear SVM (hinge loss)."""

    @pytest.fixture(scope="class")
    def seeds(self):
        return {"cancer_features.csv": long_csv(CANCER_X, CANCER_NAMES), "cancer_targets.csv": cancer_targets_csv()}

    @pytest.fixture(scope="class")
    def models(self):
        return {"cancer_logistic.sql": LOGISTIC, "cancer_svm.sql": SVM, "cancer_svm_scored.sql": SVM_SCORED}

    @pytest.fixture(scope="class", autouse=True)
    def built(self, project):
        run_dbt(["seed"])
        run_dbt(["run"])

    def rows(self, project, sql):
        return project.run_sql(sql.replace("{s}", project.test_schema), fetch="all")

    def test_logistic_objective_matches_scikit_learn(self, project):
        from sklearn.linear_model import LogisticRegression

        X, y = CANCER_X, CANCER.target
        reference = LogisticRegression(C=1.0, max_iter=10000).fit(X, y)
        p = np.clip(reference.predict_proba(X)[:, 1], 1e-15, 1 - 1e-15)
        objective = -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)) + L2 * np.sum(reference.coef_ ** 2)
        (ours, check) = self.rows(project, "select (metrics->>'objective')::float8, training_info->'self_check' "
                                           "from {s}.sqlflow_models where model_name = 'cancer_logistic'")[0]
        assert np.isfinite(ours) and ours == pytest.approx(objective, rel=0.01)
        assert check["postgresql"] == pytest.approx(check["tensorflow"], rel=1e-6)

    def test_svm_accuracy_matches_linear_svc(self, project):
        from sklearn.svm import LinearSVC

        train, held = ~CANCER_HELD, CANCER_HELD
        y = np.where(CANCER.target == 1, 1, -1)
        reference = LinearSVC(C=1.0, loss="hinge", max_iter=100000).fit(CANCER_X[train], y[train])
        expected = (reference.predict(CANCER_X[held]) == y[held]).mean()
        scored = dict(self.rows(project, "select obs_id, predicted_value from {s}.cancer_svm_scored"))
        assert len(scored) == int(held.sum())
        ours = np.mean([np.sign(scored[i]) == y[i] for i in np.where(held)[0]])
        assert abs(ours - expected) <= 0.01


def pairwise_problem(n=1000, f=6, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, f))
    y = X[:, 0] * X[:, 1] + X[:, 2] * X[:, 3] - X[:, 4] * X[:, 5] + 0.3 * X[:, 0] + rng.normal(0, 0.1, n)
    return X, y


FM_X, FM_Y = pairwise_problem()
FM_NAMES = [f"x{j}" for j in range(FM_X.shape[1])]

FM_SQL = """{{ config(materialized='ml_train', model_type='sql', key='obs_id',
          weights={'w': ['feature'], 'b': [],
                   'v': {'index': ['feature', 'factor'], 'size': {'factor': 4}, 'scale': 0.1}},
          learning_rate=0.02, epochs=2000, seed=0) }}
-- the paper's factorization machine: b + sum w x + 1/2 sum_f ((sum v x)^2 - sum v^2 x^2)
with features as (
    select obs_id, feature, value from {{ ref('pairs_features') }}
), targets as (
    select obs_id, y as value from {{ ref('pairs_targets') }}
), linear as (
    select f.obs_id, sum(f.value * w.value) as value
    from features f join w on w.feature = f.feature group by f.obs_id
), factor_sums as (
    select f.obs_id, v.factor, sum(f.value * v.value) as s, sum(power(f.value, 2) * power(v.value, 2)) as s2
    from features f join v on v.feature = f.feature group by f.obs_id, v.factor
), interactions as (
    select obs_id, 0.5 * sum(power(s, 2) - s2) as value from factor_sums group by obs_id
), predictions as (
    select l.obs_id, l.value + i.value + (select value from b) as value
    from linear l join interactions i on i.obs_id = l.obs_id
)
select avg(power(p.value - t.value, 2)) from predictions p join targets t on t.obs_id = p.obs_id
"""

PAIRS_LINEAR = """{{ config(materialized='ml_train', model_type='sql', key='obs_id',
          weights={'w': ['feature'], 'b': []}, learning_rate=0.05, epochs=500, seed=0) }}
with features as (select obs_id, feature, value from {{ ref('pairs_features') }}),
targets as (select obs_id, y as value from {{ ref('pairs_targets') }}),
predictions as (
    select f.obs_id, sum(f.value * w.value) + (select value from b) as value
    from features f join w on w.feature = f.feature group by f.obs_id
)
select avg(power(p.value - t.value, 2)) from predictions p join targets t on t.obs_id = p.obs_id
"""

PAIRS_BUILTIN = """{{ config(materialized='ml_train', model_type='factorization_machine', label='y', key='obs_id',
          exclude=['obs_id'], n_factors=4, learning_rate=0.02, epochs=2000, batch_size=1000, normalize='none',
          seed=0) }}
select * from {{ ref('pairs_wide') }}
"""

PAIRS_SCORED = """{{ config(materialized='ml_predict', model='pairs_fm') }}
-- depends_on: {{ ref('pairs_fm') }}
select obs_id, feature, value from {{ ref('pairs_features') }}
"""

PAIRS_BUILTIN_SCORED = """{{ config(materialized='ml_predict', model='pairs_builtin') }}
-- depends_on: {{ ref('pairs_builtin') }}
select * from {{ ref('pairs_wide') }}
"""


def wide_csv(X, y, names):
    lines = ["obs_id," + ",".join(names) + ",y"]
    lines += [f"{i}," + ",".join(f"{v:.15f}" for v in row) + f",{t:.15f}" for i, (row, t) in enumerate(zip(X, y))]
    return "\n".join(lines) + "\n"


class TestFactorizationMachineInSql:
    @pytest.fixture(scope="class")
    def seeds(self):
        return {"pairs_features.csv": long_csv(FM_X, FM_NAMES), "pairs_targets.csv": target_csv(FM_Y, "y"),
                "pairs_wide.csv": wide_csv(FM_X, FM_Y, FM_NAMES)}

    @pytest.fixture(scope="class")
    def models(self):
        return {"pairs_fm.sql": FM_SQL, "pairs_linear.sql": PAIRS_LINEAR, "pairs_builtin.sql": PAIRS_BUILTIN,
                "pairs_fm_scored.sql": PAIRS_SCORED, "pairs_builtin_scored.sql": PAIRS_BUILTIN_SCORED}

    @pytest.fixture(scope="class", autouse=True)
    def built(self, project):
        run_dbt(["seed"])
        run_dbt(["run"])

    def rows(self, project, sql):
        return project.run_sql(sql.replace("{s}", project.test_schema), fetch="all")

    def objective(self, project, model):
        return self.rows(project, f"select (metrics->>'objective')::float8 from {{s}}.sqlflow_models "
                                  f"where model_name = '{model}'")[0][0]

    def test_fm_learns_the_interactions_a_linear_model_cannot(self, project):
        variance = FM_Y.var()
        assert 1 - self.objective(project, "pairs_fm") / variance >= 0.9
        assert 1 - self.objective(project, "pairs_linear") / variance <= 0.5

    def test_fm_objective_is_close_to_the_builtin_factorization_machine(self, project):
        scored = dict(self.rows(project, "select obs_id, predicted_y from {s}.pairs_builtin_scored"))
        builtin = np.mean([(scored[i] - FM_Y[i]) ** 2 for i in range(len(FM_Y))])
        assert self.objective(project, "pairs_fm") == pytest.approx(builtin, rel=0.02)

    def test_rank3_weights_and_predictions_in_postgresql(self, project):
        rows = self.rows(project, "select tensor, feature, factor, value from {s}.pairs_fm")
        w = {f: v for t, f, _, v in rows if t == "w"}
        (b,) = [v for t, _, _, v in rows if t == "b"]
        V = np.zeros((len(FM_NAMES), 4))
        for t, f, k, v in rows:
            if t == "v":
                V[FM_NAMES.index(f), k] = v
        assert sorted({k for t, _, k, _ in rows if t == "v"}) == [0, 1, 2, 3]
        X = FM_X
        expected = b + X @ np.array([w[n] for n in FM_NAMES]) + 0.5 * (((X @ V) ** 2) - (X ** 2) @ (V ** 2)).sum(axis=1)
        scored = dict(self.rows(project, "select obs_id, predicted_value from {s}.pairs_fm_scored"))
        np.testing.assert_allclose([scored[i] for i in range(len(FM_Y))], expected, rtol=1e-9, atol=1e-12)


def favorita(n=3000, seed=1):
    """Observations of item sales in stores; the effects live in the item and store dimensions."""
    rng = np.random.default_rng(seed)
    families = [f"fam_{k}" for k in range(8)]
    cities = [f"city_{k}" for k in range(5)]
    items = [(i, families[i % 8], int(rng.random() < 0.3)) for i in range(60)]
    stores = [(s, cities[s % 5]) for s in range(10)]
    fam_effect = dict(zip(families, rng.normal(0, 2, 8)))
    city_effect = dict(zip(cities, rng.normal(0, 1, 5)))
    obs = []
    for o in range(n):
        item, store, promo = int(rng.integers(60)), int(rng.integers(10)), int(rng.random() < 0.2)
        sales = 10 + fam_effect[items[item][1]] + city_effect[stores[store][1]] + 1.5 * promo \
            - 0.8 * items[item][2] + rng.normal(0, 0.5)
        obs.append((o, item, store, promo, sales))
    return items, stores, obs


ITEMS, STORES, OBS = favorita()

FAVORITA = """{{ config(materialized='ml_train', model_type='sql', key='obs_id', weights={'w': ['feature'], 'b': []},
          learning_rate=0.05, epochs=60, batch_size=256, seed=2) }}
-- observations joined to the item and store dimensions; one-hot features built in SQL, as the paper's Favorita
with features as (
    select o.obs_id, 'family=' || i.family as feature, 1.0 as value
    from {{ ref('fav_obs') }} o join {{ ref('fav_items') }} i on i.item_id = o.item_id
    union all
    select o.obs_id, 'city=' || s.city, 1.0
    from {{ ref('fav_obs') }} o join {{ ref('fav_stores') }} s on s.store_id = o.store_id
    union all
    select o.obs_id, 'perishable', i.perishable::float8
    from {{ ref('fav_obs') }} o join {{ ref('fav_items') }} i on i.item_id = o.item_id
    union all
    select obs_id, 'onpromotion', onpromotion::float8 from {{ ref('fav_obs') }}
), targets as (
    select obs_id, unit_sales as value from {{ ref('fav_obs') }}
), predictions as (
    select f.obs_id, sum(f.value * w.value) + (select value from b) as value
    from features f join w on w.feature = f.feature group by f.obs_id
)
select avg(power(p.value - t.value, 2)) from predictions p join targets t on t.obs_id = p.obs_id
"""

FAVORITA_SCORED = """{{ config(materialized='ml_predict', model='fav_sales', replaces='features') }}
-- depends_on: {{ ref('fav_sales') }}
select o.obs_id, 'family=' || i.family as feature, 1.0 as value
from {{ ref('fav_obs') }} o join {{ ref('fav_items') }} i on i.item_id = o.item_id
union all
select o.obs_id, 'city=' || s.city, 1.0
from {{ ref('fav_obs') }} o join {{ ref('fav_stores') }} s on s.store_id = o.store_id
union all
select o.obs_id, 'perishable', i.perishable::float8
from {{ ref('fav_obs') }} o join {{ ref('fav_items') }} i on i.item_id = o.item_id
union all
select obs_id, 'onpromotion', onpromotion::float8 from {{ ref('fav_obs') }}
"""


def favorita_design():
    families = sorted({f for _, f, _ in ITEMS})
    cities = sorted({c for _, c in STORES})
    X = np.zeros((len(OBS), len(families) + len(cities) + 3))
    for r, (_, item, store, promo, _) in enumerate(OBS):
        X[r, families.index(ITEMS[item][1])] = 1
        X[r, len(families) + cities.index(STORES[store][1])] = 1
        X[r, -3], X[r, -2], X[r, -1] = ITEMS[item][2], promo, 1.0
    return X, np.array([o[-1] for o in OBS])


class TestNormalizedSchemaInSql:
    """The paper's Favorita setting, with mini-batches along obs_id."""

    @pytest.fixture(scope="class")
    def seeds(self):
        return {
            "fav_items.csv": "item_id,family,perishable\n" + "".join(f"{i},{f},{p}\n" for i, f, p in ITEMS),
            "fav_stores.csv": "store_id,city\n" + "".join(f"{s},{c}\n" for s, c in STORES),
            "fav_obs.csv": "obs_id,item_id,store_id,onpromotion,unit_sales\n"
                           + "".join(f"{o},{i},{s},{p},{y:.10f}\n" for o, i, s, p, y in OBS),
        }

    @pytest.fixture(scope="class")
    def models(self):
        return {"fav_sales.sql": FAVORITA, "fav_scored.sql": FAVORITA_SCORED}

    @pytest.fixture(scope="class", autouse=True)
    def built(self, project):
        run_dbt(["seed"])
        run_dbt(["run"])

    def rows(self, project, sql):
        return project.run_sql(sql.replace("{s}", project.test_schema), fetch="all")

    def test_predictions_match_least_squares(self, project):
        X, y = favorita_design()
        solution, *_ = np.linalg.lstsq(X, y, rcond=None)
        best = 1 - ((X @ solution - y) ** 2).mean() / y.var()
        scored = dict(self.rows(project, "select obs_id, predicted_value from {s}.fav_scored"))
        assert len(scored) == len(OBS)
        ours = np.array([scored[o[0]] for o in OBS])
        assert 1 - ((ours - y) ** 2).mean() / y.var() == pytest.approx(best, abs=0.01)

    def test_one_hot_weights_are_named_by_their_sql_features(self, project):
        names = {r[0] for r in self.rows(project, "select feature from {s}.fav_sales where tensor = 'w'")}
        assert names == {f"family=fam_{k}" for k in range(8)} | {f"city=city_{k}" for k in range(5)} | \
            {"perishable", "onpromotion"}

    def test_generated_program_reproduces_mini_batch_training(self, project, postgres_server):
        path = os.path.join(project.project_root, "target", "sqlflow", "fav_sales.py")
        dsn = " ".join(f"{k}={v}" for k, v in postgres_server["dsn"].items() if v not in (None, ""))
        done = subprocess.run([sys.executable, path], env={**os.environ, "SQLFLOW_DSN": dsn},
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        produced = {(r["tensor"], r["feature"]): float(r["value"]) for r in csv.DictReader(io.StringIO(done.stdout))}
        stored = {(t, f or ""): v for t, f, v in self.rows(project, "select tensor, feature, value from {s}.fav_sales")}
        assert produced.keys() == stored.keys()
        for k, v in stored.items():
            assert produced[k] == pytest.approx(v, rel=1e-6, abs=1e-9), k


FULL_BATCH = FAVORITA.replace("batch_size=256, seed=2", "batch_size=0, seed=2, sparse=SPARSE")

ONE_HOT_AUTO = """{{ config(materialized='ml_train', model_type='sql', weights={'w': ['feature'], 'b': []},
          learning_rate=0.1, epochs=150, seed=0) }}
-- 2,000 observations, 2 of 60 one-hot features each: 3% of the 120,000 cells, kept sparse by 'auto'
with obs as (select o as obs_id from generate_series(1, 2000) o
), features as (
    select obs_id, 'f' || lpad((obs_id % 60)::text, 2, '0') as feature, 1.0::float8 as value from obs
    union all
    select obs_id, 'f' || lpad(((obs_id * 7 + 13) % 60)::text, 2, '0'), 1.0::float8 from obs
), targets as (
    select obs_id, (obs_id % 60) * 0.1 + ((obs_id * 7 + 13) % 60) * 0.05 as value from obs
), predictions as (
    select f.obs_id, sum(f.value * w.value) + (select value from b) as value
    from features f join w on w.feature = f.feature group by f.obs_id
)
select avg(power(p.value - t.value, 2)) from predictions p join targets t on t.obs_id = p.obs_id
"""


class TestSparseDataInSql:
    """Long-format one-hot data held sparse (full batch): the weights, objective and self-check of the
    dense tensors, and 'auto' picks sparse where the rows fill little of the box."""

    @pytest.fixture(scope="class")
    def seeds(self):
        return TestNormalizedSchemaInSql.seeds.__wrapped__(self)

    @pytest.fixture(scope="class")
    def models(self):
        return {"fav_dense.sql": FULL_BATCH.replace("SPARSE", "false"),
                "fav_sparse.sql": FULL_BATCH.replace("SPARSE", "true"),
                "onehot_auto.sql": ONE_HOT_AUTO}

    @pytest.fixture(scope="class", autouse=True)
    def built(self, project):
        run_dbt(["seed"])
        run_dbt(["run"])

    def rows(self, project, sql):
        return project.run_sql(sql.replace("{s}", project.test_schema), fetch="all")

    def test_sparse_and_dense_tensors_learn_the_same_weights(self, project):
        info = dict(self.rows(project, "select model_name, training_info->'sparse' from {s}.sqlflow_models"))
        assert info == {"fav_dense": [], "fav_sparse": ["features", "targets"], "onehot_auto": ["features"]}
        weights = {m: {(t, f or ""): v for t, f, v in self.rows(project, f"select tensor, feature, value from {{s}}.{m}")}
                   for m in ("fav_dense", "fav_sparse")}
        assert weights["fav_dense"].keys() == weights["fav_sparse"].keys() and len(weights["fav_dense"]) == 16
        for k, v in weights["fav_dense"].items():
            assert weights["fav_sparse"][k] == pytest.approx(v, rel=1e-9, abs=1e-12), k

    def test_the_self_check_holds_for_sparse_training(self, project):
        for name in ("fav_sparse", "onehot_auto"):
            (ours, theirs) = self.rows(project, "select (metrics->>'objective')::float8, "
                                                "(metrics->>'objective_in_postgresql')::float8 from {s}.sqlflow_models "
                                                f"where model_name = '{name}'")[0]
            assert theirs == pytest.approx(ours, rel=1e-6)
        (objective,) = self.rows(project, "select (metrics->>'objective')::float8 from {s}.sqlflow_models "
                                          "where model_name = 'onehot_auto'")[0]
        assert objective < 0.05  # the target is a sum of two one-hot effects: learnable exactly

    def test_sparse_true_with_mini_batches_is_refused(self, project):
        write = FULL_BATCH.replace("SPARSE", "true").replace("batch_size=0", "batch_size=64")
        path = os.path.join(project.project_root, "models", "fav_sparse.sql")
        with open(path, "w") as f:
            f.write(write)
        result, out = run_dbt_and_capture(["run", "-s", "fav_sparse"], expect_pass=False)
        assert "sparse=true keeps the data sparse for full-batch descent" in out
        assert "set batch_size=0 or sparse='auto'" in out


SMALL = """{{ config(materialized='ml_train', model_type='sql', weights=WEIGHTS, key='obs_id', epochs=20) }}
with features as (
    select obs_id, feature, value from {{ ref('diabetes_features') }} where obs_id < 50
), targets as (
    select obs_id, target as value from {{ ref('diabetes_targets') }} where obs_id < 50
), predictions as (
    select f.obs_id, sum(f.value * w.value) + (select value from b) as value
    from features f join w on w.feature = f.feature
    group by f.obs_id
)
select avg(power(p.value - t.value, 2))
from predictions p join targets t on t.obs_id = p.obs_id
"""
GOOD_WEIGHTS = "{'w': ['feature'], 'b': []}"


def small(weights=GOOD_WEIGHTS, **replace):
    sql = SMALL.replace("WEIGHTS", weights)
    for old, new in replace.items():
        old, new = old.replace("_", " ") if " " not in old and old.startswith("~") else old, new
        sql = sql.replace(old, new)
    return sql


MISTAKES = {
    "window": (small(**{"sum(f.value * w.value) + (select": "sum(f.value * w.value) over () + (select"}),
               ["a window function", "in predictions, line 7, column 22", "Compute it in a data CTE"]),
    "percentile": (small(**{"select avg(power(p.value - t.value, 2))":
                            "select percentile_cont(0.5) within group (order by power(p.value - t.value, 2))"}),
                   ["the ordered-set aggregate percentile_cont()", "in the objective, line 11", "what is supported: + - * /"]),
    "udf": (small(**{"avg(power(p.value - t.value, 2))": "avg(my_loss(p.value - t.value))"}),
            ["the function my_loss()", "in the objective, line 11, column 12"]),
    "undeclared": (small(**{"(select value from b)": "(select value from bias)"}),
                   ["reads 'bias', which is neither a CTE of the program nor a declared weight", "config(weights="]),
    "undeclared_in_data": (small(**{"), predictions as (": "), lam as (select value from lambda_weight), predictions as ("}),
                           ["lam (line 6, column", "reads 'lambda_weight', which is neither a CTE, a relation in the "
                            "database, nor a declared weight", "config(weights={'lambda_weight'"]),
    "not_scalar": (small(**{"select avg(power(p.value - t.value, 2))\nfrom predictions p join targets t on t.obs_id = p.obs_id":
                            "select p.obs_id, avg(power(p.value - t.value, 2))\nfrom predictions p join targets t "
                            "on t.obs_id = p.obs_id group by p.obs_id"}),
                   ["must be one scalar", "line 11"]),
    "text_value": (small(**{"select obs_id, feature, value from": "select obs_id, feature, feature as value from"}),
                   ["f.value in predictions (line 7, column 26) is text", "cast it in the data CTE (features)"]),
    "no_domain": (small("{'w': ['feature'], 'b': ['k']}", **{"(select value from b)": "(select sum(value) from b)"}),
                  ["index b.k has no domain", "'size': {'k': 8}"]),
    "two_domains": (small(**{"), predictions as (": "), stores as (select 'store_' || obs_id::text as city, 1.0 as "
                                                     "value from targets), predictions as (",
                             "join w on w.feature = f.feature\n": "join w on w.feature = f.feature "
                                                                  "join stores s on s.city = w.feature\n"}),
                    ["weight index w.feature is joined to", "share no value", "two different domains"]),
    "nulls": (small(**{"select obs_id, feature, value from": "select obs_id, feature, nullif(value, value) as value from"}),
              ["data relation features has 500 NULL(s) in column value", "is not null"]),
    "prediction": (small().replace("key='obs_id'", "key='obs_id', prediction='scores'"),
                   ["prediction='scores' is not a CTE", "weight-dependent CTEs: predictions"]),
}


class TestMistakesInSqlModels:
    @pytest.fixture(scope="class")
    def seeds(self):
        return {"diabetes_features.csv": long_csv(DIABETES_X[:50], DIABETES.feature_names),
                "diabetes_targets.csv": target_csv(DIABETES.target[:50])}

    @pytest.fixture(scope="class")
    def models(self):
        return {"small_sql.sql": small()}

    @pytest.fixture(scope="class", autouse=True)
    def built(self, project):
        run_dbt(["seed"])
        run_dbt(["run"])

    @pytest.mark.parametrize("case", sorted(MISTAKES))
    def test_mistake_fails_the_node_naming_it_and_keeps_the_model(self, project, case):
        from dbt.tests.util import write_file

        sql, fragments = MISTAKES[case]
        write_file(sql, project.project_root, "models", "small_sql.sql")
        try:
            _, output = run_dbt_and_capture(["run"], expect_pass=False)
        finally:
            write_file(small(), project.project_root, "models", "small_sql.sql")
        flat = " ".join(output.split())
        assert "small_sql:" in flat
        for fragment in fragments:
            assert " ".join(fragment.split()) in flat, (fragment, flat[-3000:])
        assert "Traceback" not in output
        versions = project.run_sql(f"select distinct model_version from {project.test_schema}.small_sql", fetch="all")
        assert versions == [(1,)]

    def test_an_unused_weight_is_a_warning_and_left_out(self, project):
        from dbt.tests.util import write_file

        write_file(small("{'w': ['feature'], 'b': [], 'spare': []}"), project.project_root, "models", "small_sql.sql")
        try:
            _, output = run_dbt_and_capture(["run"])
        finally:
            write_file(small(), project.project_root, "models", "small_sql.sql")
        assert "declared weight(s) spare are never read" in " ".join(output.split())
        tensors = project.run_sql(f"select distinct tensor from {project.test_schema}.small_sql", fetch="all")
        assert sorted(t for (t,) in tensors) == ["b", "w"]


BATCHED = LINEAR.replace("learning_rate=1.0, epochs=1500, seed=0", "learning_rate=0.2, epochs=15, batch_size=64, seed=3")
STREAMED = BATCHED.replace("batch_size=64,", "batch_size=64, memory_budget_mb=0,")


class TestMiniBatchesStreamedFromPostgres:
    """Over memory_budget_mb, mini-batches are read from the database as they are due: the same
    batches, so the same weights as in memory."""

    @pytest.fixture(scope="class")
    def seeds(self):
        return {"diabetes_features.csv": long_csv(DIABETES_X, DIABETES.feature_names),
                "diabetes_targets.csv": target_csv(DIABETES.target)}

    @pytest.fixture(scope="class")
    def models(self):
        return {"in_memory.sql": BATCHED, "streamed.sql": STREAMED}

    @pytest.fixture(scope="class", autouse=True)
    def built(self, project):
        run_dbt(["seed"])
        run_dbt(["run"])

    def rows(self, project, sql):
        return project.run_sql(sql.replace("{s}", project.test_schema), fetch="all")

    def test_streamed_weights_equal_in_memory_weights(self, project):
        memory = {(t, f): v for t, f, v in self.rows(project, "select tensor, feature, value from {s}.in_memory")}
        streamed = {(t, f): v for t, f, v in self.rows(project, "select tensor, feature, value from {s}.streamed")}
        assert memory.keys() == streamed.keys() and len(memory) == 11
        for k, v in memory.items():
            assert streamed[k] == pytest.approx(v, rel=1e-9, abs=1e-12), k

    def test_registry_says_how_it_was_read_and_checked(self, project):
        info = dict(self.rows(project, "select model_name, training_info from {s}.sqlflow_models"))
        assert info["streamed"]["streamed"] is True and info["in_memory"]["streamed"] is False
        check = info["streamed"]["self_check"]
        assert check["observations"] == len(DIABETES.target)  # all 442 fit in the sample
        assert check["postgresql"] == pytest.approx(check["tensorflow"], rel=1e-6)
        assert len(info["streamed"]["objective"]) == 15
        np.testing.assert_allclose(info["streamed"]["objective"], info["in_memory"]["objective"], rtol=1e-9)


class TestOperatingSqlModels:
    """retrain='on_change', early stopping, --empty and scoring a pinned older version."""

    @pytest.fixture(scope="class")
    def seeds(self):
        return {"diabetes_features.csv": long_csv(DIABETES_X[:50], DIABETES.feature_names),
                "diabetes_targets.csv": target_csv(DIABETES.target[:50])}

    @pytest.fixture(scope="class")
    def models(self):
        return {"small_sql.sql": small().replace("epochs=20", "epochs=20, retrain='on_change'"),
                "pinned.sql": "{{ config(materialized='ml_predict', model='small_sql', version=1) }}\n"
                              "-- depends_on: {{ ref('small_sql') }}\n"
                              "select obs_id, feature, value from {{ ref('diabetes_features') }}"}

    @pytest.fixture(scope="class", autouse=True)
    def built(self, project):
        run_dbt(["seed"])
        run_dbt(["run", "-s", "small_sql"])

    def rows(self, project, sql):
        return project.run_sql(sql.replace("{s}", project.test_schema), fetch="all")

    def test_unchanged_sql_config_and_data_keep_the_version(self, project):
        _, output = run_dbt_and_capture(["run", "-s", "small_sql"])
        assert "TRAIN unchanged, v1 kept" in output
        assert self.rows(project, "select count(*) from {s}.sqlflow_models")[0][0] == 1

    def test_early_stopping_ends_training_before_the_last_epoch(self, project):
        from dbt.tests.util import write_file

        write_file(small().replace("epochs=20", "epochs=5000, learning_rate=1.0, early_stopping=5"),
                   project.project_root, "models", "small_sql.sql")
        run_dbt(["run", "-s", "small_sql"])
        (epochs, objective) = self.rows(project, "select training_info->'epochs', training_info->'objective' "
                                                 "from {s}.sqlflow_models order by version desc limit 1")[0]
        assert 5 < epochs < 5000 and len(objective) == epochs

    def test_a_pinned_older_version_is_scored_from_the_registry(self, project):
        run_dbt(["run", "-s", "pinned"])
        (rows,) = self.rows(project, "select parameters->'weights' from {s}.sqlflow_models where version = 1")[0]
        w = {f: v for f, v in rows["w"]["rows"]}
        (b,) = [v for (v,) in rows["b"]["rows"]]
        latest = self.rows(project, "select max(model_version) from {s}.small_sql")[0][0]
        assert latest > 1  # the weights table holds a newer version: v1 comes from the registry
        scored = dict(self.rows(project, "select obs_id, predicted_value from {s}.pinned where model_version = 1"))
        expected = DIABETES_X[:50] @ np.array([w[n] for n in DIABETES.feature_names]) + b
        np.testing.assert_allclose([scored[i] for i in range(50)], expected, rtol=1e-9)

    def test_replaces_must_name_a_data_cte(self, project):
        from dbt.tests.util import write_file

        write_file("{{ config(materialized='ml_predict', model='small_sql', replaces='observations') }}\n"
                   "-- depends_on: {{ ref('small_sql') }}\nselect obs_id, feature, value from {{ ref('diabetes_features') }}",
                   project.project_root, "models", "wrong_replaces.sql")
        try:
            _, output = run_dbt_and_capture(["run", "-s", "wrong_replaces"], expect_pass=False)
        finally:
            os.remove(os.path.join(project.project_root, "models", "wrong_replaces.sql"))
        assert "wrong_replaces: replaces='observations' is not a data CTE of the model's program; its data CTEs " \
               "are features, targets" in " ".join(output.split())

    def test_empty_builds_the_weights_table_shape(self, project):
        run_dbt(["run", "-s", "small_sql", "--empty"])
        columns = self.rows(project, "select column_name from information_schema.columns where table_schema = '{s}' "
                                     "and table_name = 'small_sql' order by ordinal_position")
        assert [c for (c,) in columns] == ["model_version", "tensor", "feature", "value"]
        assert self.rows(project, "select count(*) from {s}.small_sql")[0][0] == 0
