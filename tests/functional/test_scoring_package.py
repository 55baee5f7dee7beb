"""The dbt Cloud path: a plain `type: postgres` project installs the macro-only package
`sqlflow_scoring` (packages.yml, local path) and scores with models the adapter trained; its scores
equal the adapter's ml_predict to 1e-9."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
from dbt.tests.util import run_dbt

PACKAGE = Path(__file__).resolve().parents[2] / "sqlflow_scoring"

CUSTOMERS = "id,x1,x2,plan,spend,churned\n" + "".join(
    f"{i},{(i * 37) % 100 / 10},{(i * 53) % 100 / 10},{['basic', 'pro', 'team'][i % 3]},"
    f"{round(3 * ((i * 37) % 100 / 10) - (i * 53) % 100 / 20 + (i % 7) * 0.3, 3)},"
    f"{str(((i * 37) % 100 / 10 + 0.5 * ((i * 53) % 100 / 10) > 7) != ((i * 7919) % 11 == 0)).lower()}\n"
    for i in range(300))

TRAINED = {
    "churn_model.sql": "{{ config(materialized='ml_train', model_type='logistic_regression', label='churned', "
                       "key='id', features=['x1', 'x2', 'plan'], epochs=40, learning_rate=0.1, seed=1) }}\n"
                       "select * from {{ ref('customers') }}",
    "spend_model.sql": "{{ config(materialized='ml_train', model_type='linear_regression', label='spend', "
                       "key='id', features=['x1', 'x2', 'plan'], epochs=40, learning_rate=0.05, seed=1) }}\n"
                       "select * from {{ ref('customers') }}",
    "segments.sql": "{{ config(materialized='cluster', n_clusters=3, key='id', features=['x1', 'x2', 'plan'], "
                    "seed=1) }}\nselect * from {{ ref('customers') }}",
    "mixture.sql": "{{ config(materialized='cluster', model_type='em', n_clusters=3, key='id', "
                   "features=['x1', 'x2'], seed=1) }}\nselect * from {{ ref('customers') }}",
}
# a model written in SQL (sql4ml): long-format features, squared error, weights w[feature] and b
FEATS = ("{{ config(materialized='table') }}\n"
         "select id as obs_id, 'x1' as feature, x1 as value from {{ ref('customers') }} union all "
         "select id, 'x2', x2 from {{ ref('customers') }}")
SPEND_SQL = """{{ config(materialized='ml_train', model_type='sql', weights={'w': ['feature'], 'b': []},
          prediction='predictions', key='obs_id', learning_rate=0.01, epochs=200, seed=0) }}
with features as (select obs_id, feature, value from {{ ref('feats') }}),
targets as (select id as obs_id, spend as value from {{ ref('customers') }}),
predictions as (
    select f.obs_id, sum(f.value * w.value) + (select value from b) as value
    from features f join w on w.feature = f.feature group by f.obs_id
)
select avg(power(p.value - t.value, 2)) from predictions p join targets t on t.obs_id = p.obs_id
"""
SQL_SCORES = ("{{ config(materialized='ml_predict', model='spend_sql') }}\n"
              "-- depends_on: {{ ref('spend_sql') }}\nselect obs_id, feature, value from {{ ref('feats') }}")

SCORED = {  # name: (model, output_probabilities)
    "churn_scores": ("churn_model", True),
    "spend_scores": ("spend_model", False),
    "segment_scores": ("segments", False),
    "mixture_scores": ("mixture", True),
}


def _adapter_model(model, probabilities):
    return (f"{{{{ config(materialized='ml_predict', model='{model}', output_probabilities={str(probabilities).lower()}) }}}}\n"
            f"-- depends_on: {{{{ ref('{model}') }}}}\nselect id, x1, x2, plan from {{{{ ref('customers') }}}}")


def _package_model(model, probabilities):
    return ("{{ config(materialized='table') }}\n"
            f"{{{{ sqlflow_scoring.ml_predict(source('ml', '{model}'), 'select id, x1, x2, plan from ' ~ "
            f"source('ml', 'customers'), output_probabilities={str(probabilities).lower()}) }}}}")


def _write_postgres_project(root: Path, server: dict, schema: str, trained_schema: str) -> None:
    (root / "models").mkdir(parents=True)
    (root / "dbt_project.yml").write_text("name: cloud\nversion: '1.0'\nconfig-version: 2\nprofile: cloud\n")
    (root / "packages.yml").write_text(f"packages:\n  - local: {PACKAGE}\n")
    dsn = server["dsn"]
    (root / "profiles.yml").write_text(
        f"cloud:\n  target: default\n  outputs:\n    default:\n      type: postgres\n      host: {dsn['host']}\n"
        f"      port: {dsn['port']}\n      user: {dsn['user']}\n      password: '{dsn['password']}'\n"
        f"      dbname: {dsn['dbname']}\n      schema: {schema}\n      threads: 2\n")
    tables = "".join(f"      - name: {t}\n" for t in ["customers", "feats", "spend_sql",
                                                         *{m for m, _ in SCORED.values()}])
    (root / "models" / "sources.yml").write_text(
        f"sources:\n  - name: ml\n    schema: {trained_schema}\n    tables:\n{tables}")
    for name, (model, probabilities) in SCORED.items():
        (root / "models" / f"{name}.sql").write_text(_package_model(model, probabilities))
    (root / "models" / "spend_sql_scores.sql").write_text(
        "{{ config(materialized='table') }}\n{{ sqlflow_scoring.ml_predict(source('ml', 'spend_sql'), "
        "'select obs_id, feature, value from ' ~ source('ml', 'feats')) }}")


class TestScoringPackageOnPlainPostgres:
    @pytest.fixture(scope="class")
    def seeds(self):
        return {"customers.csv": CUSTOMERS}

    @pytest.fixture(scope="class")
    def models(self):
        return {**TRAINED, **{f"{name}.sql": _adapter_model(*spec) for name, spec in SCORED.items()},
                "feats.sql": FEATS, "spend_sql.sql": SPEND_SQL, "spend_sql_scores.sql": SQL_SCORES}

    def _dbt(self, root, *args):
        dbt = os.path.join(os.path.dirname(sys.executable), "dbt")
        done = subprocess.run([dbt, *args, "--project-dir", str(root), "--profiles-dir", str(root)],
                              capture_output=True, text=True, timeout=600)
        return done.returncode, done.stdout + done.stderr

    def test_postgres_project_scores_equal_the_adapter(self, project, postgres_server):
        s = project.test_schema
        run_dbt(["seed"])
        run_dbt(["run"])
        root = Path(project.project_root) / "cloud"
        _write_postgres_project(root, postgres_server, f"{s}_cloud", s)
        assert self._dbt(root, "deps")[0] == 0
        code, output = self._dbt(root, "run")
        assert code == 0, output
        assert "adapter=postgres" in output or "Registered adapter: postgres" in output

        for name, (model, probabilities) in SCORED.items():
            columns = [c[0] for c in project.run_sql(
                f"select column_name from information_schema.columns where table_schema = '{s}' "
                f"and table_name = '{name}' order by ordinal_position", fetch="all")]
            cloud = [c[0] for c in project.run_sql(
                f"select column_name from information_schema.columns where table_schema = '{s}_cloud' "
                f"and table_name = '{name}' order by ordinal_position", fetch="all")]
            assert cloud == columns, name
            numeric = [c for c in columns if c.startswith(("probability", "cluster_distance", "cluster_prob"))
                       or c == "predicted_spend"]
            exact = [c for c in columns if c not in numeric]
            worst = ", ".join(f"max(abs(a.{c} - b.{c}))" for c in numeric) or "0"
            same = " and ".join(f"a.{c} is not distinct from b.{c}" for c in exact)
            row = project.run_sql(
                f"select count(*), count(*) filter (where {same}), {worst} "
                f"from {s}.{name} a join {s}_cloud.{name} b using (id)", fetch="one")
            assert row[0] == row[1] == 300, name
            assert all(d < 1e-9 for d in row[2:]), (name, row)
        row = project.run_sql(
            f"select count(*), count(*) filter (where a.model_version = b.model_version), "
            f"max(abs(a.predicted_value - b.predicted_value)) "
            f"from {s}.spend_sql_scores a join {s}_cloud.spend_sql_scores b using (obs_id)", fetch="one")
        assert row[:2] == (300, 300) and row[2] < 1e-9, row

    def test_clear_errors(self, project, postgres_server):
        s = project.test_schema
        run_dbt(["seed"])
        run_dbt(["run", "-s", "churn_model"])
        root = Path(project.project_root) / "cloud_errors"
        _write_postgres_project(root, postgres_server, f"{s}_cloud2", s)
        models = root / "models"
        for f in models.glob("*_scores.sql"):
            f.unlink()
        (models / "missing_feature.sql").write_text(
            "{{ config(materialized='table') }}\n{{ sqlflow_scoring.ml_predict(source('ml', 'churn_model'), "
            "'select id, x1 from ' ~ source('ml', 'customers')) }}")
        (models / "no_version.sql").write_text(
            "{{ config(materialized='table') }}\n{{ sqlflow_scoring.ml_predict(source('ml', 'churn_model'), "
            "source('ml', 'customers'), version=9) }}")
        assert self._dbt(root, "deps")[0] == 0
        code, output = self._dbt(root, "run")
        assert code == 1, output
        assert "model 'churn_model' v" in output and "was trained on x2, plan, which the input does not return" in output
        assert "has no version 9 of" in output and "train it with the dbt-sqlflow adapter" in output
