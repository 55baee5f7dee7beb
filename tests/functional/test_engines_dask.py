"""engine: dask on a local cluster of 2 worker processes (`local[2]`, and a LocalCluster the test
starts and reaches over tcp://), each worker reading its own shard from PostgreSQL: k-means and EM
equal the local engine, the assignments are written by the workers, and a worker lost mid-job or an
unreachable scheduler fails the node cleanly with the previous table intact."""

import numpy as np
import pytest
from dbt.tests.util import run_dbt, run_dbt_and_capture

ROWS = 3000


def points_sql(rows):
    # three blobs in four columns, a text column passed through, deterministic
    return f"""
select g as id,
       (g % 3) * 4.0 + sin(g * 1.7) as x1,
       (g % 3) * -2.0 + cos(g * 0.3) as x2,
       ((g * 7) % 11) / 3.0 as x3,
       sin(g * 0.11) * 2 as x4,
       case g % 3 when 0 then 'a' when 1 then 'b' else 'c' end as tag
from generate_series(1, {rows}) as g
"""


def node(materialized, model_type, engine, extra=""):
    engine_keys = f", engine='dask', dask_scheduler=var('scheduler', 'local[2]')" if engine else ""
    return (
        f"{{{{ config(materialized='{materialized}', model_type='{model_type}', n_clusters=3, key='id', "
        f"seed=5, exclude=['tag']{engine_keys}{extra}) }}}}\n"
        f"select * from {{{{ ref('points') }}}}"
    )


NET = """
{{ config(materialized='ml_train', model_type='dnn_regressor', label='x4', key='id', exclude=['tag'],
          hidden_units=[8], epochs=3, seed=2) }}
select * from {{ ref('points') }}
"""
DASK = ", engine='dask', dask_scheduler='local[2]'"
SCORED = """
{{{{ config(materialized='ml_predict', model='{model}'{engine}) }}}}
-- depends_on: {{{{ ref('{model}') }}}}
select * from {{{{ ref('points') }}}} where id % 3 <> 1
"""


class TestDaskEqualsLocal:
    @pytest.fixture(scope="class")
    def models(self):
        return {
            "points.sql": "{{ config(materialized='table') }}" + points_sql(ROWS),
            "km_local.sql": node("cluster", "kmeans", False, ", tol=0"),
            "km_dask.sql": node("cluster", "kmeans", True, ", tol=0"),
            "em_local.sql": node("cluster", "em", False, ", scalable=true, max_iter=30, tol=0"),
            "em_dask.sql": node("cluster", "em", True, ", max_iter=30, tol=0"),
            "em_weights.sql": node("ml_train", "em", True, ", max_iter=30, tol=0"),
            "net.sql": NET,
            "net_scored_local.sql": SCORED.format(model="net", engine=""),
            "net_scored_dask.sql": SCORED.format(model="net", engine=DASK),
            "km_scored_dask.sql": SCORED.format(model="km_local", engine=DASK + ", in_database=false"),
            "km_scored_in_db.sql": SCORED.format(model="km_local", engine=DASK),
        }

    @pytest.fixture(scope="class", autouse=True)
    def built(self, project):
        results, output = run_dbt_and_capture(["run"])
        assert len(results) == 11
        return output

    def _centres(self, project, name):
        rows = (
            project.run_sql(
                f"select cluster_id, feature, value from {{{{ ml_centroids(ref('{name}')) }}}} "
                f"order by 1, 2",
                fetch="all",
            )
            if False
            else project.run_sql(
                f"select cluster_id, feature, value from {project.test_schema}.{name}__centroids "
                f"order by 1, 2",
                fetch="all",
            )
        )
        return np.array([r[2] for r in rows]).reshape(3, -1)

    def _labels(self, project, name):
        rows = project.run_sql(
            f"select id, cluster_id from {project.test_schema}.{name} order by id", fetch="all"
        )
        return np.array([r[1] for r in rows])

    def test_kmeans_centres_and_assignments_equal(self, project):
        np.testing.assert_allclose(
            self._centres(project, "km_dask"), self._centres(project, "km_local"), atol=1e-6
        )
        labels = self._labels(project, "km_dask")
        assert len(labels) == ROWS
        np.testing.assert_array_equal(labels, self._labels(project, "km_local"))

    def test_em_centres_and_assignments_equal(self, project):
        np.testing.assert_allclose(
            self._centres(project, "em_dask"), self._centres(project, "em_local"), atol=1e-6
        )
        np.testing.assert_array_equal(
            self._labels(project, "em_dask"), self._labels(project, "em_local")
        )

    def test_ml_predict_on_dask_equals_local_scoring(self, project, built):
        schema = project.test_schema
        local = project.run_sql(f"select id, predicted_x4, model_version from {schema}.net_scored_local order by id", fetch="all")
        spread = project.run_sql(f"select id, predicted_x4, model_version from {schema}.net_scored_dask order by id", fetch="all")
        assert len(spread) == len(local) == ROWS - ROWS // 3
        assert [r[0] for r in spread] == [r[0] for r in local]
        np.testing.assert_allclose([r[1] for r in spread], [r[1] for r in local], atol=1e-6)
        assert "scored" in built and "on 2 dask worker(s)" in built
        columns = project.run_sql(
            f"select column_name from information_schema.columns where table_schema = '{schema}' "
            f"and table_name = 'net_scored_dask' order by ordinal_position", fetch="all")
        assert [c[0] for c in columns] == ["id", "x1", "x2", "x3", "x4", "tag", "predicted_x4", "model_version"]

    def test_ml_predict_of_kmeans_on_dask_and_in_postgresql(self, project, built):
        schema = project.test_schema
        trained = dict(project.run_sql(f"select id, cluster_id from {schema}.km_local", fetch="all"))
        for name in ("km_scored_dask", "km_scored_in_db"):
            scored = project.run_sql(f"select id, cluster_id from {schema}.{name}", fetch="all")
            assert len(scored) == ROWS - ROWS // 3
            assert all(trained[i] == c for i, c in scored), name
        assert "engine dask is not needed" in built

    def test_no_work_tables_are_left(self, project):
        left = project.run_sql(
            f"select count(*) from pg_class c join pg_namespace n on n.oid = c.relnamespace "
            f"where n.nspname = '{project.test_schema}' and c.relname like '__sqlflow_%'", fetch="one")[0]
        assert left == 0
