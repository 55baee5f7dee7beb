"""dbt's table configs on ML nodes (indexes, unlogged, sql_header applied; contracts refused),
--full-refresh with retrain='on_change', `dbt run --empty`, and unreadable stored artifacts."""
import json

import pytest
from dbt.tests.util import run_dbt, run_dbt_and_capture

SEED = "id,x,y,target\n" + "".join(f"{i},{(i % 7) * 1.5},{(i % 5) * 2.0},{(i % 3) * 1.0}\n" for i in range(60))
SEGMENTS = """
{{ config(materialized='cluster', key='id', seed=1, n_clusters=2, exclude=['target'], retrain='on_change',
          indexes=[{'columns': ['id'], 'unique': true}], unlogged=true,
          sql_header="set local search_path to " ~ this.schema ~ ", public") }}
select * from points
"""
NET = """
{{ config(materialized='ml_train', model_type='dnn_regressor', label='target', key='id', hidden_units=[4],
          epochs=2, seed=1) }}
select * from {{ ref('points') }}
"""
NET_SCORED = """
{{ config(materialized='ml_predict', model='net') }}
-- depends_on: {{ ref('net') }}
select * from {{ ref('points') }}
"""
WEIGHTS_SCORED = """
{{ config(materialized='ml_predict', model='segments') }}
-- depends_on: {{ ref('segments') }}
-- depends_on: {{ ref('points') }}
select * from {{ ref('points') }}
"""


class TestTableConfigs:
    @pytest.fixture(scope="class")
    def seeds(self):
        return {"points.csv": SEED}

    @pytest.fixture(scope="class")
    def models(self):
        return {"segments.sql": "-- depends_on: {{ ref('points') }}\n" + SEGMENTS, "net.sql": NET,
                "net_scored.sql": NET_SCORED, "seg_scored.sql": WEIGHTS_SCORED}

    def test_indexes_unlogged_and_sql_header(self, project):
        run_dbt(["seed"])
        run_dbt(["run", "-s", "segments"])  # the unqualified `points` resolves through sql_header's search_path
        s = project.test_schema
        index = project.run_sql(f"select indexdef from pg_indexes where schemaname = '{s}' and tablename = 'segments'",
                                fetch="all")
        assert len(index) == 1 and "UNIQUE" in index[0][0] and "(id)" in index[0][0]
        persistence = project.run_sql(f"select relpersistence from pg_class where oid = '{s}.segments'::regclass",
                                      fetch="one")[0]
        assert persistence == "u"

    def test_full_refresh_retrains_an_unchanged_model(self, project):
        run_dbt(["seed"])
        run_dbt(["run", "-s", "segments"])
        results = run_dbt(["run", "-s", "segments"])
        assert results[0].adapter_response["code"] == "UNCHANGED"
        results = run_dbt(["run", "-s", "segments", "--full-refresh"])
        assert results[0].adapter_response["code"] == "CLUSTER"

    def test_contract_is_refused(self, project):
        from dbt.tests.util import write_file

        write_file("version: 2\nmodels:\n  - name: segments\n    config:\n      contract: {enforced: true}\n"
                   "    columns:\n      - name: id\n        data_type: int\n",
                   project.project_root, "models", "contract.yml")
        try:
            _, output = run_dbt_and_capture(["run", "-s", "segments"], expect_pass=False)
            assert "has contract: {enforced: true}, but an ML node's columns are set by the model" in output
        finally:
            import os

            os.remove(os.path.join(project.project_root, "models", "contract.yml"))

    def test_an_unreadable_artifact_says_retrain(self, project):
        run_dbt(["seed"])
        run_dbt(["run", "-s", "net"])
        s = project.test_schema
        digest = project.run_sql(f"select artifact_sha256 from {s}.sqlflow_models where relation_identifier = 'net'",
                                 fetch="one")[0]
        assert len(digest) == 64, "every stored artifact carries its SHA-256"
        # truncated in the registry: the digest no longer matches, checked before anything is loaded
        project.run_sql(f"update {s}.sqlflow_models set artifact = substring(artifact from 1 for 200) "
                        f"where relation_identifier = 'net'")
        _, output = run_dbt_and_capture(["run", "-s", "net_scored"], expect_pass=False)
        assert ("the stored artifact of net v1 is unreadable or unsafe (its SHA-256 does not match the one "
                "registered with it); retrain it") in output
        assert "safe_mode" not in output and "This is a bug" not in output
        # rewritten along with its digest: the safe loader still refuses what is not a Keras file
        project.run_sql(f"update {s}.sqlflow_models set artifact_sha256 = encode(sha256(artifact), 'hex') "
                        f"where relation_identifier = 'net'")
        _, output = run_dbt_and_capture(["run", "-s", "net_scored"], expect_pass=False)
        assert "the stored artifact of net v1 is unreadable or unsafe; retrain it" in output
        assert "safe_mode" not in output and "This is a bug" not in output


class TestEmpty:
    @pytest.fixture(scope="class")
    def seeds(self):
        return {"points.csv": SEED}

    @pytest.fixture(scope="class")
    def models(self):
        return {"segments.sql": SEGMENTS.replace("from points", "from {{ ref('points') }}").replace(
                    'sql_header="set local search_path to " ~ this.schema ~ ", public"', "tags=['e']"),
                "net.sql": NET, "net_scored.sql": NET_SCORED, "seg_scored.sql": WEIGHTS_SCORED}

    def test_empty_builds_every_relation_with_its_columns(self, project):
        run_dbt(["seed"])
        results = run_dbt(["run", "--empty"])
        assert all(r.status == "success" for r in results)
        s = project.test_schema
        for table, columns in [("segments", {"id", "x", "y", "target", "cluster_id", "cluster_distance"}),
                               ("segments__centroids", {"cluster_id", "feature", "value", "normalized_value"}),
                               ("segments__profile", {"cluster_id", "size", "share"}),
                               ("net", {"model_version", "tensor", "i", "j", "feature", "class", "value"}),
                               ("seg_scored", {"id", "x", "y", "target", "model_version"})]:
            found = project.run_sql(f"select column_name from information_schema.columns where table_schema = '{s}' "
                                    f"and table_name = '{table}'", fetch="all")
            assert columns <= {c for (c,) in found}, table
            assert project.run_sql(f"select count(*) from {s}.{table}", fetch="one")[0] == 0
        assert project.run_sql(f"select to_regclass('{s}.sqlflow_models')", fetch="one")[0] is None
        run_dbt(["run"])  # then a real run trains and scores as usual
        assert project.run_sql(f"select count(*) from {s}.seg_scored where cluster_id is not null",
                               fetch="one")[0] == 60
