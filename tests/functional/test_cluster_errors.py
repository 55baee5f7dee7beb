"""Bad config and bad data end the node with a clear dbt error, and leave the previous build intact."""
import pytest
from dbt.tests.util import run_dbt, run_dbt_and_capture

SEED = "id,x,y,city,empty\n" + "".join(
    f"{i},{(i % 7) * 1.5},{(i % 5) * 2.0},{['oslo', 'rome', 'lima'][i % 3]},\n" for i in range(60)
)

MODEL = """
{{ config(materialized='cluster', key='id', seed=1, n_clusters=var('k', 3), exclude=['empty'],
          **var('extra', {})) }}
select * {{ var('more_columns', '') }} from {{ ref('points') }} {{ var('where', '') }}
"""


class TestErrorsKeepThePreviousBuild:
    @pytest.fixture(scope="class")
    def seeds(self):
        return {"points.csv": SEED}

    @pytest.fixture(scope="class")
    def models(self):
        return {"segments.sql": MODEL}

    @pytest.fixture(scope="class", autouse=True)
    def first_build(self, project):
        run_dbt(["seed"])
        run_dbt(["run"])

    def state(self, project):
        schema = project.test_schema
        return (
            project.run_sql(f"select count(*), count(distinct cluster_id) from {schema}.segments", fetch="one"),
            project.run_sql(f"select count(*) from {schema}.segments__centroids", fetch="one"),
            project.run_sql(f"select count(*) from {schema}.segments__profile", fetch="one"),
            project.run_sql(f"select count(*) from {schema}.sqlflow_models", fetch="one"),
        )

    @pytest.mark.parametrize("variables, expected", [
        ({"extra": {"n_cluster": 4}}, "unknown config key 'n_cluster'; did you mean 'n_clusters'?"),
        ({"extra": {"covariance_type": "full"}}, "'covariance_type' applies to model_type em only"),
        ({"extra": {"normalize": "l1"}}, "normalize='l1' is not valid; expected 'zscore', 'minmax' or 'none'"),
        ({"extra": {"features": ["x", "nope"]}}, "feature column(s) 'nope' not in the SELECT"),
        ({"where": "where false"}, "the SELECT returned no rows"),
        ({"k": 500}, "n_clusters=500 is larger than the 60 distinct input rows"),
        ({"extra": {"features": ["x", "empty"]}}, "column 'empty' is both in features and in exclude"),
        ({"more_columns": ", null::float8 as blank", "extra": {"features": ["x", "blank"]}},
         '"blank" holds only NULLs'),
        ({"more_columns": ", '{}'::jsonb as payload"}, 'column "payload" has type jsonb'),
        ({"more_columns": ", case when id = 3 then null else x end as gap", "extra": {"null_handling": "error"}},
         '"gap" has 1 NULL values and null_handling=\'error\''),
    ])
    def test_error_is_clear_and_nothing_changes(self, project, variables, expected):
        before = self.state(project)
        import json

        _, output = run_dbt_and_capture(["run", "--vars", json.dumps(variables)], expect_pass=False)
        assert expected in output
        assert "segments" in output and "Traceback" not in output
        assert self.state(project) == before
        assert before[0] == (60, 3)


class TestPredictErrors:
    @pytest.fixture(scope="class")
    def seeds(self):
        return {"points.csv": SEED}

    @pytest.fixture(scope="class")
    def models(self):
        return {
            "segments.sql": "{{ config(materialized='cluster', key='id', n_clusters=3, exclude=['empty']) }} "
                            "select * from {{ ref('points') }}",
            "scored.sql": "{{ config(materialized='ml_predict', model='segments') }}\n"
                          "-- depends_on: {{ ref('segments') }}\n"
                          "select id, x {{ var('more', '') }} from {{ ref('points') }}",
            "versioned.sql": "{{ config(materialized='ml_predict', model='segments', version=9) }}\n"
                             "-- depends_on: {{ ref('segments') }}\nselect * from {{ ref('points') }}",
        }

    def test_missing_feature_and_missing_version(self, project):
        run_dbt(["seed"])
        run_dbt(["run", "-s", "segments"])
        _, output = run_dbt_and_capture(["run", "-s", "scored"], expect_pass=False)
        assert "model 'segments' v1 was trained on 'y', 'city', which the SELECT does not return" in output
        _, output = run_dbt_and_capture(["run", "-s", "versioned"], expect_pass=False)
        assert "version 9 of model 'segments' is not in the registry" in output and "there: 1 live)" in output
        run_dbt(["run", "-s", "scored", "--vars", '{"more": ", y, city"}'])
        count = project.run_sql(f"select count(*), count(cluster_id) from {project.test_schema}.scored", fetch="one")
        assert count == (60, 60)


class TestLongNamesAndRegistrySchema:
    LONG = "segments_with_a_long_name_that_nearly_fills_the_63_limit"

    @pytest.fixture(scope="class")
    def dbt_profile_target(self, postgres_server, unique_schema):
        return {"type": "sqlflow", "threads": 2, "schema": "dbt_sqlflow_test",
                "registry_schema": f"{unique_schema}_ml", **postgres_server["profile"]}

    @pytest.fixture(scope="class")
    def seeds(self):
        return {"points.csv": SEED}

    @pytest.fixture(scope="class")
    def models(self):
        return {f"{self.LONG}.sql": "{{ config(materialized='cluster', key='id', n_clusters=2, exclude=['empty']) }} "
                                    "select * from {{ ref('points') }}",
                "profile_of_long.sql": "select * from {{ ml_profile(ref('" + self.LONG + "')) }}"}

    def test_side_tables_fit_in_63_characters_and_registry_goes_to_its_schema(self, project, unique_schema):
        run_dbt(["seed"])
        run_dbt(["run"])
        tables = [r[0] for r in project.run_sql(
            f"select table_name from information_schema.tables where table_schema = '{project.test_schema}' "
            "order by 1", fetch="all")]
        side = [t for t in tables if t.endswith("__profile") or t.endswith("__centroids")]
        assert len(side) == 2 and all(len(t) <= 63 for t in side)
        assert project.run_sql(f"select count(*) from {project.test_schema}.profile_of_long", fetch="one") == (2,)
        registry = project.run_sql(f"select model_name from {unique_schema}_ml.sqlflow_models", fetch="all")
        assert registry == [(self.LONG,)]
        project.run_sql(f"drop schema {unique_schema}_ml cascade")
