"""The adapter owns the transaction: the read phase (with in-transaction pre-hooks) is committed
before the model trains; the fit-and-write phase commits with the swap, or not at all."""
import json

import pytest
from dbt.tests.util import run_dbt, run_dbt_and_capture

SEED = "id,x,y\n" + "".join(f"{i},{(i % 7) * 1.5},{(i % 5) * 2.0}\n" for i in range(60))
MODEL = """
{{ config(materialized='cluster', key='id', seed=1, n_clusters=var('k', 2),
          pre_hook="insert into {{ this.schema }}.audit values ('{{ var('k', 2) }}')") }}
select * from {{ ref('points') }}
"""
FAIL_ON_INSERT = """
create function {schema}.refuse() returns trigger language plpgsql as
$$ begin raise exception 'refused by the test trigger'; end $$;
create trigger refuse after insert on {schema}.sqlflow_models for each row execute function {schema}.refuse();
"""


class TestAFailedWriteCommitsNothing:
    @pytest.fixture(scope="class")
    def seeds(self):
        return {"points.csv": SEED}

    @pytest.fixture(scope="class")
    def models(self):
        return {"segments.sql": MODEL}

    def test_registry_failure_rolls_back_the_nodes_writes(self, project):
        s = project.test_schema
        project.run_sql(f"create table {s}.audit (k text)")
        run_dbt(["seed"])
        run_dbt(["run"])
        before = project.run_sql(f"select count(distinct cluster_id), count(*) from {s}.segments", fetch="one")
        project.run_sql(FAIL_ON_INSERT.format(schema=s))
        _, output = run_dbt_and_capture(["run", "--vars", json.dumps({"k": 3})], expect_pass=False)
        assert "refused by the test trigger" in output
        # the node's own writes: none committed (no version, old tables, no intermediates left)
        assert project.run_sql(f"select count(*) from {s}.sqlflow_models", fetch="one")[0] == 1
        assert project.run_sql(f"select count(distinct cluster_id), count(*) from {s}.segments", fetch="one") == before
        leftovers = project.run_sql(f"select count(*) from pg_tables where schemaname = '{s}' "
                                    f"and tablename like '%__dbt_tmp'", fetch="one")[0]
        assert leftovers == 0
        # the in-transaction pre-hook ran with the read phase, which was committed (documented)
        assert project.run_sql(f"select k from {s}.audit order by k", fetch="all") == [("2",), ("3",)]
