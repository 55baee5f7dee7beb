"""`cluster`, `ml_train` and `ml_predict` for k-means and EM on a real PostgreSQL."""
import numpy as np
import pytest
from dbt.tests.util import run_dbt, run_dbt_and_capture
from sklearn.cluster import KMeans
from sklearn.datasets import load_iris
from sklearn.metrics import adjusted_rand_score
from sklearn.mixture import GaussianMixture
from sklearn.preprocessing import StandardScaler

IRIS = load_iris()
COLUMNS = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


def iris_csv() -> str:
    lines = ["id," + ",".join(COLUMNS) + ",species"]
    for i, (row, target) in enumerate(zip(IRIS.data, IRIS.target)):
        lines.append(f"{i}," + ",".join(repr(float(v)) for v in row) + f",{IRIS.target_names[target]}")
    return "\n".join(lines) + "\n"


KMEANS = """
{{ config(materialized='cluster', model_type='kmeans', n_clusters=3, key='id', seed=7, n_init=4,
          predict_only=['species']) }}
select * from {{ ref('iris') }}
"""
EM = """
{{ config(materialized='cluster', model_type='em', n_clusters=3, key='id', seed=3, covariance_type='full',
          exclude=['species'], output_probabilities=true) }}
select * from {{ ref('iris') }}
"""
TRAIN = """
{{ config(materialized='ml_train', model_type='kmeans', n_clusters=3, key='id', seed=7, n_init=4,
          exclude=['species']) }}
select * from {{ ref('iris') }}
"""
PREDICT = """
{{ config(materialized='ml_predict', model='iris_kmeans') }}
-- depends_on: {{ ref('iris_kmeans') }}
select id, sepal_length, sepal_width, petal_length, petal_width from {{ ref('iris') }} where id % 10 = 0
"""
PREDICT_NO_REF = """
{{ config(materialized='ml_predict', model='iris_kmeans') }}
select * from {{ ref('iris') }}
"""
PROFILE_CHECK = """
select p.cluster_id, p.size, p.petal_length as profile_mean, g.n, g.mean
from {{ ml_profile(ref('iris_kmeans')) }} p
join (select cluster_id, count(*) as n, avg(petal_length) as mean from {{ ref('iris_kmeans') }} group by 1) g
  using (cluster_id)
"""


def query(project, sql):
    return project.run_sql(sql, fetch="all")


class TestKMeansAndEM:
    @pytest.fixture(scope="class")
    def seeds(self):
        return {"iris.csv": iris_csv()}

    @pytest.fixture(scope="class")
    def models(self):
        return {"iris_kmeans.sql": KMEANS, "iris_em.sql": EM, "iris_weights.sql": TRAIN,
                "iris_scored.sql": PREDICT, "profile_check.sql": PROFILE_CHECK,
                "em_metrics.sql": "select * from {{ ml_evaluate(ref('iris_em')) }}",
                "em_features.sql": "select * from {{ ml_feature_info(ref('iris_em')) }}",
                "kmeans_versions.sql": "select * from {{ ml_versions(ref('iris_kmeans')) }}"}

    @pytest.fixture(scope="class", autouse=True)
    def built(self, project):
        run_dbt(["seed"])
        results, output = run_dbt_and_capture(["run", "--threads", "3"])
        assert len(results) == 8
        return output

    def _matrix(self):
        return StandardScaler().fit_transform(IRIS.data)

    def test_status_line(self, built):
        assert "CLUSTER 150 rows, k=3, v1" in built

    def test_kmeans_matches_scikit_learn(self, project):
        rows = query(project, f"select id, cluster_id, cluster_distance from {project.test_schema}.iris_kmeans order by id")
        ours = np.array([r[1] for r in rows])
        reference = KMeans(n_clusters=3, n_init=4, random_state=7).fit(self._matrix())
        assert adjusted_rand_score(reference.labels_, ours) >= 0.99
        centers = reference.cluster_centers_[reference.labels_]
        np.testing.assert_allclose([r[2] for r in rows], np.linalg.norm(self._matrix() - centers, axis=1), atol=1e-6)
        stored = query(project, f"select cluster_id, feature, normalized_value from {project.test_schema}.iris_kmeans__centroids")
        ours_centers = np.zeros((3, 4))
        for cluster_id, feature, value in stored:
            ours_centers[cluster_id, COLUMNS.index(feature)] = value
        for j in range(3):  # the same centres, matched through the rows they label
            reference_id = reference.labels_[ours == j][0]
            np.testing.assert_allclose(ours_centers[j], reference.cluster_centers_[reference_id], atol=1e-6)

    def test_output_columns(self, project):
        rows = query(project, "select column_name, data_type from information_schema.columns "
                              f"where table_schema = '{project.test_schema}' and table_name = 'iris_kmeans' "
                              "order by ordinal_position")
        assert [r[0] for r in rows] == ["id"] + COLUMNS + ["species", "cluster_id", "cluster_distance"]
        assert dict(rows)["cluster_id"] == "integer"

    def test_centroids_in_original_and_normalized_units(self, project):
        rows = query(project, f"select cluster_id, feature, value, normalized_value from "
                              f"{project.test_schema}.iris_kmeans__centroids order by cluster_id, feature")
        assert len(rows) == 12
        scaler = StandardScaler().fit(IRIS.data)
        for cluster_id, feature, value, normalized in rows:
            j = COLUMNS.index(feature)
            assert value == pytest.approx(normalized * scaler.scale_[j] + scaler.mean_[j], abs=1e-9)

    def test_profile_means_equal_group_by(self, project):
        rows = query(project, f"select * from {project.test_schema}.profile_check")
        assert len(rows) == 3 and sum(r[1] for r in rows) == 150
        for _, size, profile_mean, n, mean in rows:
            assert size == n and profile_mean == pytest.approx(float(mean), abs=1e-9)
        states = query(project, f'select sum("species=setosa" * size) from {project.test_schema}.iris_kmeans__profile')
        assert states[0][0] == pytest.approx(50)

    def test_em_matches_scikit_learn_and_probabilities_sum_to_one(self, project):
        rows = query(project, f"select cluster_id, cluster_probability, probability_0 + probability_1 + probability_2 "
                              f"from {project.test_schema}.iris_em order by id")
        reference = GaussianMixture(3, covariance_type="full", random_state=3, reg_covar=1e-6).fit(self._matrix())
        assert adjusted_rand_score(reference.predict(self._matrix()), [r[0] for r in rows]) >= 0.99
        np.testing.assert_allclose([r[2] for r in rows], 1.0, atol=1e-9)
        np.testing.assert_allclose([r[1] for r in rows],
                                   reference.predict_proba(self._matrix()).max(axis=1), atol=1e-6)

    def test_registry_and_introspection_macros(self, project):
        rows = query(project, f"select model_name, version, model_type, row_count from "
                              f"{project.test_schema}.sqlflow_models order by model_name")
        assert [(r[0], r[1], r[2], r[3]) for r in rows] == [
            ("iris_em", 1, "em", 150), ("iris_kmeans", 1, "kmeans", 150), ("iris_weights", 1, "kmeans", 150)]
        metrics = dict(query(project, f"select metric, value from {project.test_schema}.em_metrics"))
        assert {"inertia", "silhouette", "davies_bouldin", "calinski_harabasz", "bic", "aic"} <= set(metrics)
        assert metrics["k"] == 3
        features = query(project, f"select column_name, kind, scale from {project.test_schema}.em_features "
                                  "order by position")
        assert [f[0] for f in features] == COLUMNS and {f[1] for f in features} == {"continuous"}
        assert features[0][2] == pytest.approx(IRIS.data[:, 0].std())
        versions = query(project, f"select model_name, version from {project.test_schema}.kmeans_versions")
        assert versions[0] == ("iris_kmeans", 1)

    def test_weights_table(self, project):
        rows = query(project, f"select model_version, tensor, i, feature, value from {project.test_schema}.iris_weights "
                              "order by i, feature")
        assert len(rows) == 12 and {r[0] for r in rows} == {1} and {r[1] for r in rows} == {"centers"}

    def test_predict_assigns_like_the_cluster_node(self, project):
        rows = query(project, f"select s.id, s.cluster_id, k.cluster_id, s.model_version, s.cluster_distance, "
                              f"k.cluster_distance from {project.test_schema}.iris_scored s "
                              f"join {project.test_schema}.iris_kmeans k using (id)")
        assert len(rows) == 15
        for _, predicted, assigned, version, d1, d2 in rows:
            assert predicted == assigned and version == 1 and d1 == pytest.approx(d2, abs=1e-9)

    def test_rerun_adds_a_version_with_identical_results(self, project):
        before = query(project, f"select id, cluster_id, cluster_distance from {project.test_schema}.iris_kmeans order by id")
        run_dbt(["run", "-s", "iris_kmeans"])
        after = query(project, f"select id, cluster_id, cluster_distance from {project.test_schema}.iris_kmeans order by id")
        assert before == after
        versions = query(project, f"select max(version) from {project.test_schema}.sqlflow_models "
                                  "where model_name = 'iris_kmeans'")
        assert versions[0][0] == 2


class TestPredictNeedsRef:
    @pytest.fixture(scope="class")
    def seeds(self):
        return {"iris.csv": iris_csv()}

    @pytest.fixture(scope="class")
    def models(self):
        return {"iris_kmeans.sql": KMEANS, "iris_scored.sql": PREDICT_NO_REF}

    def test_missing_ref_names_the_line_to_add(self, project):
        run_dbt(["seed"])
        results, output = run_dbt_and_capture(["run"], expect_pass=False)
        assert "-- depends_on: {{ ref('iris_kmeans') }}" in output


BLOBS_SQL = """
-- four planted groups in three dimensions; the noise is a sum of sines (near-Gaussian, deterministic)
select g as id,
       (g % 4) * 6 + {noise1} as a,
       (g % 4) * -4 + {noise2} as b,
       ((g % 4) / 2) * 5 + {noise3} as c,
       case g % 4 when 0 then 'north' when 1 then 'south' when 2 then 'east' else 'west' end as region
from generate_series(1, 4000) g
""".format(**{f"noise{d}": " + ".join(f"sin(g * {m * d + 0.123:.3f}) * 0.5" for m in (12.9898, 78.233, 3.17, 45.1))
              for d in (1, 2, 3)})


def _cluster(options, source="blobs"):
    return "{{ config(materialized='cluster', key='id', seed=11, predict_only=['region'], " + options + \
           ") }}\nselect * from {{ ref('" + source + "') }}"


class TestScalableAutomaticKAndSupport:
    @pytest.fixture(scope="class")
    def models(self):
        return {
            "blobs.sql": "{{ config(materialized='table') }}" + BLOBS_SQL,
            "whole_km.sql": _cluster("n_clusters=4, n_init=3"),
            "stream_km.sql": _cluster("n_clusters=4, n_init=3, scalable=true, sample_size=500"),
            "stream_em.sql": _cluster("model_type='em', n_clusters=4, scalable=true, sample_size=700, "
                                      "output_probabilities=true"),
            "auto_km.sql": _cluster("n_clusters=0, k_range=[2, 7]"),
            "auto_em.sql": _cluster("model_type='em', n_clusters=0, k_range=[2, 6]"),
            "supported.sql": _cluster("n_clusters=6, minimum_support=900, pass_through=false"),
            "auto_km_sweep.sql": "select * from {{ ml_k_sweep(ref('auto_km')) }}",
        }

    @pytest.fixture(scope="class", autouse=True)
    def built(self, project):
        results = run_dbt(["run"])
        assert len(results) == 8

    def labels(self, project, model):
        return [r[0] for r in query(project, f"select cluster_id from {project.test_schema}.{model} order by id")]

    def test_streamed_kmeans_agrees_with_in_memory(self, project):
        truth = [i % 4 for i in range(1, 4001)]
        assert adjusted_rand_score(truth, self.labels(project, "whole_km")) == 1.0
        assert adjusted_rand_score(truth, self.labels(project, "stream_km")) >= 0.99
        assert adjusted_rand_score(truth, self.labels(project, "stream_em")) >= 0.99
        sums = query(project, f"select min(probability_0 + probability_1 + probability_2 + probability_3), "
                              f"max(probability_0 + probability_1 + probability_2 + probability_3), count(*) "
                              f"from {project.test_schema}.stream_em")
        assert sums[0][0] == pytest.approx(1.0) and sums[0][1] == pytest.approx(1.0) and sums[0][2] == 4000

    def test_streamed_runs_are_deterministic(self, project):
        before = self.labels(project, "stream_km")
        run_dbt(["run", "-s", "stream_km"])
        assert self.labels(project, "stream_km") == before

    def test_automatic_k_is_recorded(self, project):
        sweep = query(project, f"select k, inertia, silhouette, chosen from {project.test_schema}.auto_km_sweep order by k")
        assert [r[0] for r in sweep] == [2, 3, 4, 5, 6, 7]
        assert [r[0] for r in sweep if r[3]] == [4]
        assert all(a[1] > b[1] for a, b in zip(sweep, sweep[1:]))  # inertia falls as k grows
        assert len(set(self.labels(project, "auto_km"))) == 4
        assert len(set(self.labels(project, "auto_em"))) == 4

    def test_minimum_support_drops_clusters_and_keeps_ids_dense(self, project):
        sizes = query(project, f"select cluster_id, count(*) from {project.test_schema}.supported group by 1 order by 1")
        ids = [r[0] for r in sizes]
        assert ids == list(range(len(ids))) and len(ids) < 6
        assert min(r[1] for r in sizes) >= 900 and sum(r[1] for r in sizes) == 4000
        columns = [r[0] for r in query(project, "select column_name from information_schema.columns where "
                   f"table_schema = '{project.test_schema}' and table_name = 'supported' order by ordinal_position")]
        assert columns == ["id", "a", "b", "c", "region", "cluster_id", "cluster_distance"]
        profile = query(project, f'select cluster_id, size, "region=north" from {project.test_schema}.supported__profile')
        assert sum(r[1] for r in profile) == 4000


class TestRetrainOnChangeAndVersions:
    @pytest.fixture(scope="class")
    def seeds(self):
        return {"iris.csv": iris_csv()}

    @pytest.fixture(scope="class")
    def models(self):
        return {
            "flowers.sql": "{{ config(materialized='table') }} select * from {{ ref('iris') }} "
                           "where id < {{ var('upto', 150) }}",
            "seg.sql": "{{ config(materialized='cluster', n_clusters=3, key='id', exclude=['species'], "
                       "retrain='on_change') }} select * from {{ ref('flowers') }}",
            "pinned.sql": "{{ config(materialized='ml_predict', model='seg', version=1, pass_through=false) }}\n"
                          "-- depends_on: {{ ref('seg') }}\nselect * from {{ ref('flowers') }}",
        }

    def versions(self, project):
        return project.run_sql(f"select max(version) from {project.test_schema}.sqlflow_models "
                               "where model_name = 'seg'", fetch="one")[0]

    def test_unchanged_input_keeps_the_version_and_changed_input_retrains(self, project):
        run_dbt(["seed"])
        run_dbt(["run", "-s", "flowers", "seg"])
        assert self.versions(project) == 1
        before = project.run_sql(f"select id, cluster_id from {project.test_schema}.seg order by id", fetch="all")
        _, output = run_dbt_and_capture(["run", "-s", "seg"])
        assert "CLUSTER unchanged, v1 kept" in output
        assert self.versions(project) == 1
        assert project.run_sql(f"select id, cluster_id from {project.test_schema}.seg order by id", fetch="all") == before

        run_dbt(["run", "-s", "flowers", "--vars", '{"upto": 120}'])
        _, output = run_dbt_and_capture(["run", "-s", "seg", "--vars", '{"upto": 120}'])
        assert "CLUSTER 120 rows, k=3, v2" in output
        assert self.versions(project) == 2

        run_dbt(["run", "-s", "pinned", "--vars", '{"upto": 120}'])
        rows = project.run_sql(f"select distinct model_version from {project.test_schema}.pinned", fetch="all")
        assert rows == [(1,)]
        columns = project.run_sql("select column_name from information_schema.columns where table_schema = "
                                  f"'{project.test_schema}' and table_name = 'pinned' order by ordinal_position",
                                  fetch="all")
        assert [c[0] for c in columns] == ["id", "cluster_id", "cluster_distance", "model_version"]


EM_TYPES = ["diag", "full", "spherical", "tied"]


def _em_models():
    models = {}
    for ct in EM_TYPES:
        models[f"em_{ct}.sql"] = ("{{ config(materialized='ml_train', model_type='em', n_clusters=3, key='id', "
                                  f"exclude=['species'], covariance_type='{ct}', seed=5) }}}}"
                                  " select * from {{ ref('iris') }}")
        for suffix, flag in (("db", "'auto'"), ("py", "false")):
            models[f"em_{ct}_{suffix}.sql"] = (
                f"{{{{ config(materialized='ml_predict', model='em_{ct}', output_probabilities=true, "
                f"in_database={flag}) }}}}\n-- depends_on: {{{{ ref('em_{ct}') }}}}\n"
                "select * from {{ ref('iris') }}")
    return models


class TestEMScoredInDatabase:
    @pytest.fixture(scope="class")
    def seeds(self):
        return {"iris.csv": iris_csv()}

    @pytest.fixture(scope="class")
    def models(self):
        return _em_models()

    @pytest.fixture(scope="class", autouse=True)
    def built(self, project):
        run_dbt(["seed"])
        results, output = run_dbt_and_capture(["run"])
        assert len(results) == 12
        return output

    @pytest.mark.parametrize("covariance_type", EM_TYPES)
    def test_in_database_equals_python(self, project, built, covariance_type):
        assert f"PREDICT 150 rows, em_{covariance_type} v1 in PostgreSQL" in built
        columns = "id, cluster_id, cluster_distance, cluster_probability, probability_0, probability_1, probability_2"
        in_db = query(project, f"select {columns} from {project.test_schema}.em_{covariance_type}_db order by id")
        in_py = query(project, f"select {columns} from {project.test_schema}.em_{covariance_type}_py order by id")
        assert len(in_db) == 150
        for a, b in zip(in_db, in_py):
            assert a[:2] == b[:2]
            np.testing.assert_allclose(a[2:], b[2:], atol=1e-9)
