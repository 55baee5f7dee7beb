"""Switching a model between dbt's materializations and the ML ones works both ways (the backup has
the existing relation's type); side tables get the node's grants and docs, are returned to dbt's
cache, and are dropped when the model stops being a cluster model."""
import pytest
from dbt.tests.util import run_dbt

SEED = "id,x,y,target\n" + "".join(f"{i},{(i % 7) * 1.5},{(i % 5) * 2.0},{i % 2}\n" for i in range(60))

ML = {
    "cluster": "{{ config(materialized='cluster', key='id', seed=1, n_clusters=2, exclude=['target']) }}",
    "ml_train": "{{ config(materialized='ml_train', model_type='linear_regression', label='target', key='id', "
                "epochs=3) }}",
    "ml_predict": "{{ config(materialized='ml_predict', model='base') }}\n-- depends_on: {{ ref('base') }}",
}
BASE = "{{ config(materialized='cluster', key='id', seed=1, n_clusters=2, exclude=['target']) }}\n" \
       "select * from {{ ref('points') }}"


def relation_kind(project, name):
    return project.run_sql(f"select c.relkind from pg_class c join pg_namespace n on n.oid = c.relnamespace "
                           f"where n.nspname = '{project.test_schema}' and c.relname = '{name}'", fetch="one")


@pytest.mark.parametrize("ml", ["cluster", "ml_train", "ml_predict"])
@pytest.mark.parametrize("plain", ["view", "table"])
class TestSwitchingMaterializations:
    @pytest.fixture(scope="class")
    def seeds(self):
        return {"points.csv": SEED}

    @pytest.fixture(scope="class")
    def models(self):
        return {"base.sql": BASE, "switch.sql": "select * from {{ ref('points') }}"}

    def test_there_and_back(self, project, plain, ml):
        from dbt.tests.util import write_file

        run_dbt(["seed"])
        run_dbt(["run", "-s", "base"])
        body = "select * from {{ ref('points') }}"
        write_file(f"{{{{ config(materialized='{plain}') }}}}\n{body}", project.project_root, "models", "switch.sql")
        run_dbt(["run", "-s", "switch"])
        assert relation_kind(project, "switch") == ("v" if plain == "view" else "r",)
        write_file(f"{ML[ml]}\n{body}", project.project_root, "models", "switch.sql")
        run_dbt(["run", "-s", "switch"])
        assert relation_kind(project, "switch") == ("r",)
        assert relation_kind(project, "switch__dbt_backup") is None
        run_dbt(["run", "-s", "switch"])  # and again: nothing left over breaks the next run
        write_file(f"{{{{ config(materialized='{plain}') }}}}\n{body}", project.project_root, "models", "switch.sql")
        run_dbt(["run", "-s", "switch"])
        assert relation_kind(project, "switch") == ("v" if plain == "view" else "r",)
        # a former cluster model keeps no side tables for the macros to read
        assert relation_kind(project, "switch__centroids") is None
        assert relation_kind(project, "switch__profile") is None
        assert project.run_sql(f"select count(*) from {project.test_schema}.switch", fetch="one")[0] == 60


class TestSideTablesFollowTheNode:
    @pytest.fixture(scope="class")
    def seeds(self):
        return {"points.csv": SEED}

    @pytest.fixture(scope="class")
    def models(self):
        return {
            "segments.sql": "{{ config(materialized='cluster', key='id', seed=1, n_clusters=3, exclude=['target'], "
                            "grants={'select': ['dbt_test_user_1']}, persist_docs={'relation': true}) }}\n"
                            "select * from {{ ref('points') }}",
            "schema.yml": "version: 2\nmodels:\n  - name: segments\n    description: Customer segments\n",
            "other.sql": "{{ config(materialized='cluster', key='id', seed=1, n_clusters=2, exclude=['target']) }}\n"
                         "select * from {{ ref('points') }}",
        }

    def test_a_role_with_select_can_use_the_macros(self, project, postgres_server):
        import psycopg2

        run_dbt(["seed"])
        run_dbt(["run"])
        s = project.test_schema
        project.run_sql(f"grant usage on schema {s} to dbt_test_user_1")
        comment = project.run_sql(f"select obj_description('{s}.segments__centroids'::regclass)", fetch="one")[0]
        assert "centroids" in comment and "segments" in comment
        query = (f"select (select count(*) from {s}.segments__centroids), (select count(*) from {s}.segments__profile),"
                 f" (select count(*) from {s}.sqlflow_models where relation_identifier = 'segments'),"
                 f" (select count(*) from {s}.sqlflow_models where relation_identifier = 'other')")
        conn = psycopg2.connect(**postgres_server["dsn"])
        try:
            with conn.cursor() as cur:
                cur.execute("set role dbt_test_user_1")
                cur.execute(query)
                seen = cur.fetchone()
        finally:
            conn.close()
        # its own model's rows and side tables; nothing of the model it was not granted
        assert seen == (3 * 2, 3, 1, 0)
