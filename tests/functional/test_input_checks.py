"""What a hostile user tried (a fault probe): each mistake is a clear error that names the column and
the fix, and leaves the previous build as it was; NaN and Infinity are handled the same way in
Python and in PostgreSQL."""
import json

import pytest
from dbt.tests.util import run_dbt, run_dbt_and_capture

SEED = "id,x,y,z,city,target\n" + "".join(
    f"{i},{(i % 7) * 1.5},{(i % 5) * 2.0},{(i % 3) * 0.5},{['oslo', 'rome', 'lima'][i % 3]},{i % 2}\n"
    for i in range(80)
)

SEGMENTS = """
{{ config(materialized='cluster', key='id', seed=1, n_clusters=3, exclude=['target'], **var('c', {})) }}
select * {{ var('more', '') }} from {{ ref('points') }}
"""
CHURN = """
{{ config(materialized='ml_train', model_type='logistic_regression', label='target', key=var('key', 'id'), seed=1,
          epochs=5, **var('t', {})) }}
select * {{ var('more', '') }} from {{ ref('points') }}
"""


class TestMistakesAreClearErrors:
    @pytest.fixture(scope="class")
    def seeds(self):
        return {"points.csv": SEED}

    @pytest.fixture(scope="class")
    def models(self):
        return {"segments.sql": SEGMENTS, "churn.sql": CHURN}

    @pytest.fixture(scope="class", autouse=True)
    def first_build(self, project):
        run_dbt(["seed"])
        run_dbt(["run"])

    def state(self, project):
        s = project.test_schema
        return (project.run_sql(f"select count(*), sum(cluster_id) from {s}.segments", fetch="one"),
                project.run_sql(f"select count(*), sum(value) from {s}.churn", fetch="one"),
                project.run_sql(f"select count(*) from {s}.sqlflow_models", fetch="one"))

    @pytest.mark.parametrize("variables, expected", [
        ({"t": {"features": []}}, "features=[] names no column"),
        ({"t": {"features": ["x", "target"]}}, "label 'target' is listed in features"),
        ({"t": {"features": ["x", "id"]}}, "key column 'id' is listed in features"),
        ({"key": "target"}, "label 'target' is also the key"),
        ({"t": {"features": ["x", "y"], "exclude": ["y"]}}, "column 'y' is both in features and in exclude"),
        ({"more": ", case when id = 5 then 'NaN'::float8 else x end as bad"},
         "feature column 'bad' has 1 NaN or Infinity value(s)"),
        ({"more": ", case when id = 5 then 'Infinity'::float8 else x end as bad"},
         "feature column 'bad' has 1 NaN or Infinity value(s)"),
        ({"more": ", 1 as cluster_id"}, "already has a column named 'cluster_id'"),
    ])
    def test_error_names_the_problem_and_nothing_changes(self, project, variables, expected):
        before = self.state(project)
        node = "segments" if "c" in variables or "cluster_id" in variables.get("more", "") else "churn"
        _, output = run_dbt_and_capture(["run", "-s", node, "--vars", json.dumps(variables)], expect_pass=False)
        assert expected in output
        assert "Traceback" not in output and "This is a bug" not in output
        assert self.state(project) == before

    def test_dropped_attributes_are_named_and_recorded(self, project):
        _, output = run_dbt_and_capture(["run", "-s", "segments", "--vars",
                                         json.dumps({"c": {"max_input_attributes": 3}})])
        assert "max_input_attributes=3: 3 encoded attribute(s) left out of the model: city=" in output
        dropped = project.run_sql(f"select features -> 'dropped' from {project.test_schema}.sqlflow_models "
                                  f"where model_name = 'segments' order by version desc limit 1", fetch="one")[0]
        assert sorted(dropped) == ["city=lima", "city=oslo", "city=rome"]


SCORED = """
{{ config(materialized='ml_predict', model=var('model'), in_database=var('in_db', 'auto')) }}
-- depends_on: {{ ref('segments') }}
-- depends_on: {{ ref('churn') }}
select id, case when id in (1, 2) then 'NaN'::float8 when id = 3 then '-Infinity'::float8 else x end as x,
       y, z, city from {{ ref('points') }}
"""


class TestNonFiniteFeaturesScoreToNull:
    @pytest.fixture(scope="class")
    def seeds(self):
        return {"points.csv": SEED}

    @pytest.fixture(scope="class")
    def models(self):
        return {"segments.sql": SEGMENTS, "churn.sql": CHURN, "scored.sql": SCORED}

    @pytest.fixture(scope="class", autouse=True)
    def first_build(self, project):
        run_dbt(["seed"])
        run_dbt(["run", "--exclude", "scored", "--vars", json.dumps({"t": {"features": ["x", "y", "z"]}})])

    @pytest.mark.parametrize("model, column", [("segments", "cluster_id"), ("churn", "predicted_target")])
    def test_python_and_postgresql_agree(self, project, model, column):
        rows = {}
        for in_db in (True, False):
            run_dbt(["run", "-s", "scored", "--vars", json.dumps({"model": model, "in_db": in_db})])
            rows[in_db] = project.run_sql(f"select id, {column}::text from {project.test_schema}.scored order by id",
                                          fetch="all")
        assert rows[True] == rows[False]
        nulls = [i for i, value in rows[True] if value is None]
        assert nulls == [1, 2, 3]
        assert len(rows[True]) == 80

    @pytest.mark.parametrize("in_db", [True, False])
    def test_an_input_column_named_like_a_prediction_is_named(self, project, in_db):
        from dbt.tests.util import run_dbt_and_capture, write_file

        write_file("{{ config(materialized='ml_predict', model='churn', in_database=" + str(in_db).lower() + ") }}\n"
                   "-- depends_on: {{ ref('churn') }}\nselect *, 1 as predicted_target from {{ ref('points') }}",
                   project.project_root, "models", "collide.sql")
        _, output = run_dbt_and_capture(["run", "-s", "collide"], expect_pass=False)
        assert "already has a column named 'predicted_target'" in output and "Traceback" not in output
