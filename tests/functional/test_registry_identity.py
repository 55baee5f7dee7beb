"""Registry rows belong to a relation (database, schema, identifier): aliases are followed, two
schemas with a model of the same name keep separate histories, names cannot escape their SQL
literal, and a registry written before this keying is migrated in place."""
import pytest
from dbt.tests.util import run_dbt

SEED = "id,x,y\n" + "".join(f"{i},{(i % 7) * 1.5},{(i % 5) * 2.0}\n" for i in range(60))
CLUSTER = "{{{{ config(materialized='cluster', key='id', seed=1, n_clusters={k}{extra}) }}}} select * from {{{{ ref('points') }}}}"


class TestAliasesAndSchemas:
    @pytest.fixture(scope="class")
    def seeds(self):
        return {"points.csv": SEED}

    @pytest.fixture(scope="class")
    def models(self):
        return {
            "aliased.sql": CLUSTER.format(k=3, extra=", alias='segments_v2'"),
            "quoted.sql": CLUSTER.format(k=2, extra=", alias=\"s' or 'a'='a\""),
            "dev_side.sql": CLUSTER.format(k=2, extra=", alias='segments', schema='other'"),
            "segments.sql": CLUSTER.format(k=4, extra=""),
            "introspect.sql": "{{ config(materialized='table') }}\n"
                              "select 'aliased' as m, count(*) as n from {{ ml_versions(ref('aliased')) }}\n"
                              "union all select 'quoted', count(*) from {{ ml_versions(ref('quoted')) }}\n"
                              "union all select 'segments', count(*) from {{ ml_versions(ref('segments')) }}\n"
                              "union all select 'evaluate', count(*) from {{ ml_evaluate(ref('aliased')) }}\n"
                              "union all select 'history', count(*) from {{ ml_training_info(ref('dev_side')) }}\n"
                              "union all select 'seg_k', max((options ->> 'n_clusters')::int)\n"
                              "  from {{ ml_versions(ref('segments')) }}\n"
                              "union all select 'dev_k', max((options ->> 'n_clusters')::int)\n"
                              "  from {{ ml_versions(ref('dev_side')) }}",
            "scored.sql": "{{ config(materialized='ml_predict', model='dev_side') }}\n"
                          "-- depends_on: {{ ref('dev_side') }}\nselect * from {{ ref('points') }}",
        }

    def test_each_relation_has_its_own_versions(self, project):
        run_dbt(["seed"])
        run_dbt(["run"])
        run_dbt(["run", "-s", "segments", "aliased"])  # second versions of two of them
        counts = dict(project.run_sql(f"select m, n from {project.test_schema}.introspect", fetch="all"))
        # introspect ran before the second run: one version each, found through the alias
        assert counts["aliased"] == 1 and counts["segments"] == 1
        assert counts["quoted"] == 1, "the alias with quotes must match only its own rows"
        assert counts["evaluate"] > 0
        assert counts["seg_k"] == 4 and counts["dev_k"] == 2, "same identifier, other schema: other model"
        assert counts["history"] >= 1  # the in-memory k-means fit: a row per iteration (of the other schema's model)
        rows = project.run_sql(
            f"select relation_schema, relation_identifier, max(version), count(*) from "
            f"{project.test_schema}.sqlflow_models group by 1, 2 order by 1, 2", fetch="all")
        assert (project.test_schema, "segments", 2, 2) in rows
        assert (project.test_schema, "segments_v2", 2, 2) in rows
        assert (f"{project.test_schema}_other", "segments", 1, 1) in rows
        # ml_predict follows the ref into the other schema: k=2, not the k=4 model of this schema
        scored = project.run_sql(f"select count(distinct cluster_id) from {project.test_schema}.scored",
                                 fetch="one")[0]
        assert scored == 2
        unique_ids = project.run_sql(f"select distinct unique_id from {project.test_schema}.sqlflow_models "
                                     f"where relation_identifier = 'segments_v2'", fetch="all")
        assert unique_ids == [("model.test.aliased",)]


OLD_REGISTRY = """
create table {schema}.sqlflow_models (
    model_name text not null, version integer not null, model_type text not null,
    materialization text not null, relation text not null, options jsonb not null,
    features jsonb not null, label text, parameters jsonb not null, metrics jsonb not null,
    training_info jsonb not null, row_count bigint not null, input_fingerprint text not null,
    sql_fingerprint text not null, trained_at timestamptz not null default clock_timestamp(),
    invocation_id text, artifact bytea, artifact_format text, primary key (model_name, version))
"""


class TestMigratesARegistryOfTheEarlierLayout:
    @pytest.fixture(scope="class")
    def seeds(self):
        return {"points.csv": SEED}

    @pytest.fixture(scope="class")
    def models(self):
        return {"segments.sql": CLUSTER.format(k=3, extra=""),
                "scored.sql": "{{ config(materialized='ml_predict', model='segments') }}\n"
                              "-- depends_on: {{ ref('segments') }}\nselect * from {{ ref('points') }}"}

    def test_old_rows_are_kept_and_keyed(self, project):
        run_dbt(["seed"])
        run_dbt(["run", "-s", "segments"])
        s = project.test_schema
        # rewrite the registry as the previous release wrote it, with the row the run just made
        project.run_sql(f"create table {s}.old_rows as select * from {s}.sqlflow_models")
        project.run_sql(f"drop table {s}.sqlflow_models")
        project.run_sql(OLD_REGISTRY.format(schema=s))
        project.run_sql(f"insert into {s}.sqlflow_models select model_name, version, model_type, materialization, "
                        f"relation, options, features, label, parameters, metrics, training_info, row_count, "
                        f"input_fingerprint, sql_fingerprint, trained_at, invocation_id, artifact, artifact_format "
                        f"from {s}.old_rows")
        run_dbt(["run", "-s", "scored"])  # reads the old layout as it is
        assert project.run_sql(f"select count(*), max(model_version) from {s}.scored", fetch="one") == (60, 1)
        run_dbt(["run", "-s", "segments"])  # writes: migrates first
        rows = project.run_sql(f"select version, relation_database, relation_schema, relation_identifier "
                               f"from {s}.sqlflow_models order by version", fetch="all")
        database = project.run_sql("select current_database()", fetch="one")[0]
        assert rows == [(1, database, s, "segments"), (2, database, s, "segments")]
        key = project.run_sql(f"select array_agg(a.attname order by a.attnum) from pg_index i join pg_attribute a "
                              f"on a.attrelid = i.indrelid and a.attnum = any(i.indkey) "
                              f"where i.indrelid = '{s}.sqlflow_models'::regclass and i.indisprimary", fetch="one")[0]
        assert sorted(key) == ["relation_database", "relation_identifier", "relation_schema", "version"]
