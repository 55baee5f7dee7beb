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
        ({"extra": {"features": ["x", "empty"], "null_handling": "error"}}, '"empty" holds only NULLs'),
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
