"""Incremental ml_predict (incremental=true, unique_key): only new rows and rows of a version that is
no longer live are scored and merged in; --full-refresh rescores all. Through dbt on real PostgreSQL."""
import pytest
from dbt.tests.util import run_dbt, run_dbt_and_capture

POINTS = "id,x,y\n" + "".join(f"{i},{(i % 7) * 1.5 + (i % 3) * 0.1},{(i % 5) * 2.0}\n" for i in range(90))

MODELS = {
    "train_rows.sql": "{{ config(materialized='table') }} select * from {{ ref('points') }} where id < 60",
    "segments.sql": "{{ config(materialized='cluster', n_clusters=var('k', 3), key='id', seed=1, retrain='on_change') }}\n"
                    "select * from {{ ref('train_rows') }}",
    # the rows to score: a batch is appended when `upto` grows; `dup` adds two rows with one new key
    "feed.sql": "{{ config(materialized='view') }} select id, x, y from {{ ref('points') }} "
                "where id < {{ var('upto', 60) }}"
                "{% if var('dup', false) %} union all select 95, x, y from {{ ref('points') }} where id in (3, 4){% endif %}",
    "scores.sql": "{{ config(materialized='ml_predict', model='segments', incremental=true, unique_key='id',"
                  " pass_through=var('pass_through', true), on_schema_change=var('osc', 'ignore')) }}\n"
                  "-- depends_on: {{ ref('segments') }}\nselect * from {{ ref('feed') }}",
    "scores_py.sql": "{{ config(materialized='ml_predict', model='segments', incremental=true, unique_key=['id'],"
                     " in_database=false) }}\n"
                     "-- depends_on: {{ ref('segments') }}\nselect * from {{ ref('feed') }}",
    # the reference: everything rescored on every run
    "scores_full.sql": "{{ config(materialized='ml_predict', model='segments') }}\n"
                       "-- depends_on: {{ ref('segments') }}\nselect * from {{ ref('feed') }}",
}


def _rows(results, name):
    return next(r.adapter_response for r in results if r.node.name == name)


class TestIncrementalPredict:
    @pytest.fixture(scope="class")
    def seeds(self):
        return {"points.csv": POINTS}

    @pytest.fixture(scope="class")
    def models(self):
        return MODELS

    def _same_as_full(self, project, table):
        s = project.test_schema
        return project.run_sql(
            f"select count(*), count(*) filter (where i.cluster_id = f.cluster_id "
            f"and i.model_version = f.model_version "
            f"and abs(i.cluster_distance - f.cluster_distance) < 1e-9) "
            f"from {s}.{table} i full join {s}.scores_full f using (id)", fetch="one")

    def _xmin(self, project):
        return dict(project.run_sql(f"select id, xmin::text from {project.test_schema}.scores", fetch="all"))

    def test_appended_batch_then_promotion(self, project):
        s = project.test_schema
        run_dbt(["seed"])
        results = run_dbt(["run"])
        assert _rows(results, "scores")["rows_affected"] == 60
        before = self._xmin(project)

        # an appended batch: only its 30 rows are scored; the first 60 rows are not rewritten
        results = run_dbt(["run", "--vars", "{upto: 90}"])
        for name in ("scores", "scores_py"):
            assert _rows(results, name)["rows_affected"] == 30, name
            assert "PREDICT 30 new or rescored rows, segments v1" in _rows(results, name)["_message"]
            assert self._same_as_full(project, name) == (90, 90)
        after = self._xmin(project)
        assert all(after[i] == before[i] for i in before), "rows scored earlier were rewritten"

        # nothing new: nothing scored
        results = run_dbt(["run", "-s", "scores", "--vars", "{upto: 90}"])
        assert _rows(results, "scores")["rows_affected"] == 0
        assert project.run_sql(f"select count(*) from {s}.scores", fetch="one")[0] == 90

        # a new live version: every row still in the SELECT is rescored with it
        run_dbt(["run", "-s", "segments", "scores_full", "--vars", "{upto: 90, k: 4}"])
        results = run_dbt(["run", "-s", "scores", "scores_py", "--vars", "{upto: 90}"])
        for name in ("scores", "scores_py"):
            assert _rows(results, name)["rows_affected"] == 90
            assert project.run_sql(f"select min(model_version), max(model_version), max(cluster_id) "
                                   f"from {s}.{name}", fetch="one") == (2, 2, 3)
            assert self._same_as_full(project, name) == (90, 90)

        # rollback to v1: rescored with v1
        run_dbt(["run-operation", "sqlflow_promote", "--args", "{model: segments, version: 1}"])
        results = run_dbt(["run", "-s", "scores", "scores_full", "--vars", "{upto: 90}"])
        assert _rows(results, "scores")["rows_affected"] == 90
        assert self._same_as_full(project, "scores") == (90, 90)
        assert project.run_sql(f"select max(model_version) from {s}.scores", fetch="one")[0] == 1

        # --full-refresh rescores all rows
        results = run_dbt(["run", "-s", "scores", "--full-refresh", "--vars", "{upto: 90}"])
        assert _rows(results, "scores")["rows_affected"] == 90
        assert "PREDICT 90 rows, segments v1" in _rows(results, "scores")["_message"]

    def test_bad_keys_and_changed_columns_keep_the_table(self, project):
        s = project.test_schema
        run_dbt(["seed"])
        run_dbt(["run", "--vars", "{upto: 90}"])
        count = f"select count(*), count(distinct id) from {s}.scores"
        kept = project.run_sql(count, fetch="one")
        assert kept[0] == kept[1] > 0

        _, output = run_dbt_and_capture(["run", "-s", "feed", "scores", "--vars", "{upto: 90, dup: true}"],
                                        expect_pass=False)
        assert "unique_key (id) is not unique in the SELECT, e.g. 95 (2 rows)" in output
        assert project.run_sql(count, fetch="one") == kept

        run_dbt(["run", "-s", "feed", "--vars", "{upto: 90}"])
        _, output = run_dbt_and_capture(["run", "-s", "scores", "--vars", "{upto: 90, pass_through: false}"],
                                        expect_pass=False)
        assert "the scored columns differ from the table's (no longer scored: x, y)" in output
        assert "--full-refresh" in output and "on_schema_change='sync_all_columns'" in output
        assert project.run_sql(count, fetch="one") == kept

        # dbt's own schema sync, asked for, drops the columns and merges
        run_dbt(["run", "-s", "scores", "--vars", "{upto: 90, pass_through: false, osc: sync_all_columns}"])
        columns = project.run_sql(f"select column_name from information_schema.columns where table_schema = "
                                  f"'{s}' and table_name = 'scores' order by ordinal_position", fetch="all")
        assert [c[0] for c in columns] == ["id", "cluster_id", "cluster_distance", "model_version"]

    def test_unique_key_missing(self, project):
        from dbt.tests.util import write_file

        write_file("{{ config(materialized='ml_predict', model='segments', incremental=true, unique_key='key') }}\n"
                   "-- depends_on: {{ ref('segments') }}\nselect * from {{ ref('feed') }}",
                   project.project_root, "models", "no_key.sql")
        _, output = run_dbt_and_capture(["run", "-s", "no_key"], expect_pass=False)
        assert "unique_key 'key' is not a column of" in output
