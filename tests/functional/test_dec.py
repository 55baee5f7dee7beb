"""Deep embedded clustering (`model_type='dec'`): SQLFlow's four pretraining cases, outputs, reuse."""
import numpy as np
import pytest
from dbt.tests.util import run_dbt, run_dbt_and_capture


def behaviour_csv(n=1200, k=5, seed=1):
    """Five behaviour groups along a curve, warped non-linearly into ten features m1..m10."""
    rng = np.random.default_rng(seed)
    group = rng.integers(0, k, n)
    t = group + rng.normal(scale=0.12, size=n)
    latent = np.column_stack([np.cos(2.2 * t) * (1 + t), np.sin(2.2 * t) * (1 + t), rng.normal(scale=1.5, size=n)])
    X = np.tanh(latent @ rng.normal(size=(3, 10)) / 3) + 0.5 * np.sin(latent @ rng.normal(size=(3, 10)))
    lines = ["user_id," + ",".join(f"m{i}" for i in range(1, 11)) + ",planted_group"]
    lines += [f"{i}," + ",".join(f"{v:.6f}" for v in row) + f",{g}" for i, (row, g) in enumerate(zip(X, group))]
    return "\n".join(lines) + "\n"


def helix_csv(n=2000, seed=101):
    """Five groups: consecutive segments of a two-turn helix, warped into ten features (tanh of a fixed
    random lift) with noise. The turns lie close, so k-means' convex cells cut across them."""
    rng = np.random.default_rng(seed)
    group = rng.integers(0, 5, n)
    t = (group + rng.uniform(0, 0.7, n)) / 5
    helix = np.column_stack([np.cos(4 * np.pi * t), np.sin(4 * np.pi * t), 3 * t])
    X = np.tanh(0.5 * helix @ np.random.default_rng(0).standard_normal((10, 3)).T)
    X += 0.08 * rng.standard_normal(X.shape)
    lines = ["row_id," + ",".join(f"x{i}" for i in range(10)) + ",planted_group"]
    lines += [f"{i}," + ",".join(f"{v:.6f}" for v in row) + f",{g}" for i, (row, g) in enumerate(zip(X, group))]
    return "\n".join(lines) + "\n"


BASE = ("materialized='cluster', model_type='dec', n_clusters=5, key='user_id', predict_only=['planted_group'], "
        "encode_units=[32, 3], pretrain_epochs=8, epochs=3, batch_size=128, update_interval=20, seed=3")
MODELS = {
    "autoencoder.sql": "{{ config(materialized='ml_train', model_type='autoencoder', key='user_id', "
                       "exclude=['user_id', 'planted_group'], encode_units=[32, 3], epochs=8, batch_size=128, "
                       "learning_rate=0.005, seed=3) }} select * from {{ ref('users') }}",
    "case1.sql": "{{ config(" + BASE + ", output_probabilities=true, output_embedding=true) }}"
                 " select * from {{ ref('users') }}",
    "case2.sql": "{{ config(" + BASE + ", pretrained_model='autoencoder') }}\n-- depends_on: {{ ref('autoencoder') }}\n"
                 "select * from {{ ref('users') }}",
    "case3.sql": "{{ config(" + BASE + ", run_pretrain=false) }} select * from {{ ref('users') }}",
    "case4.sql": "{{ config(" + BASE + ", run_pretrain=false, pretrained_model='autoencoder') }}\n"
                 "-- depends_on: {{ ref('autoencoder') }}\nselect * from {{ ref('users') }}",
    "dec_model.sql": "{{ config(" + BASE.replace("materialized='cluster'", "materialized='ml_train'") + ") }}"
                     " select * from {{ ref('users') }}",
    "dec_scored.sql": "{{ config(materialized='ml_predict', model='dec_model', output_probabilities=true) }}\n"
                      "-- depends_on: {{ ref('dec_model') }}\nselect * from {{ ref('users') }}",
    "dec_scored_batched.sql": "{{ config(materialized='ml_predict', model='dec_model', output_probabilities=true, "
                              "memory_budget_mb=0, sample_size=500) }}\n-- depends_on: {{ ref('dec_model') }}\n"
                              "select * from {{ ref('users') }}",
    # over the memory budget: read in batches of 400 rows for pretraining, initialisation and clustering
    "streamed.sql": "{{ config(" + BASE + ", memory_budget_mb=0, sample_size=400) }} select * from {{ ref('users') }}",
    "auto_k.sql": "{{ config(" + BASE.replace("n_clusters=5", "n_clusters=0, k_range=[2, 7]") + ") }}"
                  " select * from {{ ref('users') }}",
    "group_means.sql": "select cluster_id, avg(m1) as m1, avg(m10) as m10, count(*) as n from {{ ref('case1') }} group by 1",
}


class TestDeepEmbeddedClustering:
    @pytest.fixture(scope="class")
    def seeds(self):
        return {"users.csv": behaviour_csv()}

    @pytest.fixture(scope="class")
    def models(self):
        return MODELS

    @pytest.fixture(scope="class", autouse=True)
    def built(self, project):
        run_dbt(["seed"])
        results, output = run_dbt_and_capture(["run", "--threads", "3"])
        assert len(results) == len(MODELS)
        return output

    def rows(self, project, sql):
        return project.run_sql(sql.replace("{s}", project.test_schema), fetch="all")

    @pytest.mark.parametrize("case", ["case1", "case2", "case3", "case4"])
    def test_every_case_assigns_every_row(self, project, case):
        rows = self.rows(project, f"select count(*), count(distinct cluster_id), min(cluster_probability), "
                                  f"max(cluster_probability) from {{s}}.{case}")
        count, clusters, low, high = rows[0]
        assert count == 1200 and 1 < clusters <= 5 and 0 < low <= high <= 1

    def test_outputs_of_case1(self, project):
        rows = self.rows(project, "select cluster_probability, probability_0 + probability_1 + probability_2 "
                                  "+ probability_3 + probability_4, greatest(probability_0, probability_1, "
                                  "probability_2, probability_3, probability_4), embedding_0, embedding_2 "
                                  "from {s}.case1")
        for p, total, top, e0, e2 in rows:
            assert total == pytest.approx(1.0, abs=1e-5) and p == pytest.approx(top, abs=1e-9)
        centroids = self.rows(project, "select count(*), count(distinct feature) from {s}.case1__centroids")
        assert centroids == [(15, 3)]
        profile = self.rows(project, "select sum(size), count(*) from {s}.case1__profile")
        assert profile[0][0] == 1200
        means = dict((r[0], r[1]) for r in self.rows(project, "select cluster_id, m1 from {s}.group_means"))
        profile_means = dict(self.rows(project, "select cluster_id, m1 from {s}.case1__profile"))
        for cluster_id, value in means.items():
            assert profile_means[cluster_id] == pytest.approx(float(value), abs=1e-9)

    def test_pretrained_encoder_is_reused_exactly(self, project):
        info = dict(self.rows(project, "select model_name, training_info from {s}.sqlflow_models "
                                       "where model_name in ('case1', 'case2', 'case3', 'case4')"))
        ae = self.rows(project, "select sum(abs(value)) from {s}.autoencoder "
                                "where tensor like 'encoder_%' or tensor like 'embedding/%'")[0][0]
        assert info["case2"]["start_encoder_abs_sum"] == pytest.approx(ae, rel=1e-6)
        assert info["case4"]["start_encoder_abs_sum"] == pytest.approx(ae, rel=1e-6)
        assert info["case3"]["start_encoder_abs_sum"] != pytest.approx(ae, rel=1e-3)
        assert info["case2"]["pretrain_loss"] and not info["case4"]["pretrain_loss"]
        assert info["case4"]["label_change"] and info["case1"]["pretrain_loss"]

    def test_input_over_the_memory_budget_is_read_in_batches(self, project, built):
        from sklearn.metrics import adjusted_rand_score

        assert "DEC reads it in batches of 400 rows" in built
        info = self.rows(project, "select training_info from {s}.sqlflow_models where model_name = 'streamed'")[0][0]
        assert info["streamed"] and info["pretrain_loss"] and info["iterations"] > 0
        streamed = self.rows(project, "select planted_group, cluster_id from {s}.streamed order by user_id")
        in_memory = self.rows(project, "select planted_group, cluster_id from {s}.case1 order by user_id")
        assert len(streamed) == 1200
        scores = [adjusted_rand_score([r[0] for r in rows], [r[1] for r in rows]) for rows in (streamed, in_memory)]
        # the short training of BASE: what matters is that batches cost no quality
        assert scores[0] > 0.5 and scores[0] >= scores[1] - 0.1, scores

    def test_ml_predict_in_batches_equals_in_memory(self, project, built):
        import re

        progress = [int(n) for n in re.findall(r"scored rows (\d+)/1200", built)]
        assert progress[-1] == 1200 and len(progress) >= 2  # batches of about 500 rows
        sql = ("select user_id, cluster_id, cluster_distance, probability_0, probability_4, model_version "
               "from {s}.%s order by user_id")
        batched, whole = self.rows(project, sql % "dec_scored_batched"), self.rows(project, sql % "dec_scored")
        assert len(batched) == 1200 and [r[:2] for r in batched] == [r[:2] for r in whole]
        for a, b in zip(batched, whole):
            assert a[2:5] == pytest.approx(b[2:5], abs=1e-6) and a[5] == b[5]

    def test_n_clusters_0_chooses_k_on_the_embeddings(self, project):
        info = self.rows(project, "select training_info from {s}.sqlflow_models where model_name = 'auto_k'")[0][0]
        sweep = info["k_sweep"]
        assert [r["k"] for r in sweep] == [2, 3, 4, 5, 6, 7] and sum(r["chosen"] for r in sweep) == 1
        chosen = next(r["k"] for r in sweep if r["chosen"])
        centroids, clusters = self.rows(project, "select (select count(distinct cluster_id) from {s}.auto_k__centroids), "
                                                 "(select count(distinct cluster_id) from {s}.auto_k)")[0]
        assert centroids == chosen and 1 < clusters <= chosen
        assert all(r["inertia"] > 0 and -1 <= r["silhouette"] <= 1 for r in sweep)

    def test_ml_train_weights_and_prediction(self, project):
        tensors = {r[0] for r in self.rows(project, "select distinct tensor from {s}.dec_model")}
        assert {"encoder_0/kernel", "embedding/kernel", "clustering/centers"} <= tensors
        scored = self.rows(project, "select s.cluster_id, c.cluster_id, s.model_version from {s}.dec_scored s "
                                    "join {s}.case1 c using (user_id)")
        # the same options and seed: ml_train and the cluster node learn the same model
        assert len(scored) == 1200 and all(a == b for a, b, _ in scored) and {v for _, _, v in scored} == {1}


class TestDecErrors:
    @pytest.fixture(scope="class")
    def seeds(self):
        return {"users.csv": behaviour_csv(n=200)}

    @pytest.fixture(scope="class")
    def models(self):
        return {
            "km.sql": "{{ config(materialized='ml_train', model_type='kmeans', n_clusters=3, exclude=['planted_group']) }}"
                      " select * from {{ ref('users') }}",
            "bad.sql": "{{ config(" + BASE + ", pretrained_model='km') }}\n-- depends_on: {{ ref('km') }}\n"
                       "select * from {{ ref('users') }}",
            "ae.sql": MODELS["autoencoder.sql"],
            "fewer_columns.sql": "{{ config(" + BASE + ", pretrained_model='ae') }}\n-- depends_on: {{ ref('ae') }}\n"
                                 "select user_id, planted_group, m1, m2, m3 from {{ ref('users') }}",
            "missing.sql": "{{ config(" + BASE + ", pretrained_model='never_trained') }} select * from {{ ref('users') }}",
        }

    def test_pretrained_model_of_the_wrong_type(self, project):
        run_dbt(["seed"])
        _, output = run_dbt_and_capture(["run"], expect_pass=False)
        assert "pretrained_model 'km' is a kmeans model; it must be an ml_train model of type autoencoder or dec" in output
        assert "pretrained_model 'ae' was trained on 'm4', 'm5'" in output
        assert "which the SELECT does not return: its encoder needs the same columns" in output
        # no registry yet, or a registry without it (the models run in parallel): either says how to fix it
        assert "train 'never_trained' first (dbt run -s never_trained)" in output or \
            "model 'never_trained' is not in the registry" in output
        results = {r.node.name: r.status for r in run_dbt(["run", "-s", "fewer_columns", "missing"], expect_pass=False)}
        assert set(results.values()) == {"error"}
        tables = {r[0] for r in project.run_sql(
            f"select table_name from information_schema.tables where table_schema = '{project.test_schema}'",
            fetch="all")}
        assert not tables & {"fewer_columns", "missing", "bad"}  # nothing half-written


HELIX = ("n_clusters=5, key='row_id', predict_only=['planted_group'], encode_units=[64, 64, 2], "
         "pretrain_epochs=100, restarts=4")


class TestDecQuality:
    """Issue #5's criterion on a non-linear warp: DEC recovers the planted groups (ARI >= 0.8), beats
    k-means on the same rows, and is deterministic under seed. One DEC start in two ties with k-means
    here (bench/dec_quality.py); restarts=4 keeps the best separated of four."""

    @pytest.fixture(scope="class")
    def seeds(self):
        return {"helix.csv": helix_csv()}

    @pytest.fixture(scope="class")
    def models(self):
        dec = "{{ config(materialized='cluster', model_type='dec', " + HELIX + ") }} select * from {{ ref('helix') }}"
        return {"helix_dec.sql": dec, "helix_dec_again.sql": dec,
                "helix_kmeans.sql": "{{ config(materialized='cluster', model_type='kmeans', n_clusters=5, n_init=20, "
                                    "key='row_id', predict_only=['planted_group']) }} select * from {{ ref('helix') }}"}

    def test_dec_recovers_the_groups_k_means_cuts_and_is_deterministic(self, project):
        from sklearn.metrics import adjusted_rand_score

        run_dbt(["seed"])
        run_dbt(["run"])
        labels = {}
        for model in ("helix_dec", "helix_dec_again", "helix_kmeans"):
            rows = project.run_sql(f"select planted_group, cluster_id from {project.test_schema}.{model} "
                                   f"order by row_id", fetch="all")
            labels[model] = ([r[0] for r in rows], [r[1] for r in rows])
        dec = adjusted_rand_score(*labels["helix_dec"])
        kmeans = adjusted_rand_score(*labels["helix_kmeans"])
        assert dec >= 0.8 and dec >= kmeans + 0.05, (dec, kmeans)
        assert labels["helix_dec"][1] == labels["helix_dec_again"][1]
        info = project.run_sql(f"select training_info from {project.test_schema}.sqlflow_models "
                               f"where model_name = 'helix_dec'", fetch="one")[0]
        assert [r["seed"] for r in info["restarts"]] == [0, 1, 2, 3]
