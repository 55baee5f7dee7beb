"""Clustering on arrays: agreement with scikit-learn, streamed fitting, choosing k, small clusters."""
import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.datasets import make_blobs
from sklearn.metrics import adjusted_rand_score
from sklearn.mixture import GaussianMixture

from dbt.adapters.sqlflow.ml import clustering

X, TRUTH = make_blobs(n_samples=3000, centers=4, n_features=5, cluster_std=1.0, random_state=3)


def batches(size=700):
    return lambda: (X[i:i + size] for i in range(0, len(X), size))


def test_kmeans_equals_scikit_learn():
    model = clustering.fit(X, "kmeans", 4, seed=5, n_init=3)
    reference = KMeans(4, n_init=3, random_state=5).fit(X)
    np.testing.assert_allclose(model.centers, reference.cluster_centers_, atol=1e-9)
    labels, distances, probabilities = model.assign(X)
    assert adjusted_rand_score(labels, reference.labels_) == 1.0 and probabilities is None
    np.testing.assert_allclose(distances, np.linalg.norm(X - reference.cluster_centers_[labels], axis=1))


@pytest.mark.parametrize("covariance_type", ["diag", "full", "spherical", "tied"])
def test_em_scores_like_scikit_learn(covariance_type):
    model = clustering.fit(X, "em", 4, seed=2, covariance_type=covariance_type)
    reference = GaussianMixture(4, covariance_type=covariance_type, random_state=2, reg_covar=1e-6).fit(X)
    _, _, probabilities = model.assign(X)
    np.testing.assert_allclose(probabilities, reference.predict_proba(X), atol=1e-8)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0)


def test_streamed_kmeans_finds_the_planted_groups_deterministically():
    first = clustering.fit_streaming(batches(), "kmeans", 4, seed=1)
    again = clustering.fit_streaming(batches(), "kmeans", 4, seed=1)
    np.testing.assert_array_equal(first.centers, again.centers)
    assert adjusted_rand_score(TRUTH, first.assign(X)[0]) > 0.99


@pytest.mark.parametrize("covariance_type", ["diag", "full", "spherical", "tied"])
def test_streamed_em_reaches_the_in_memory_optimum(covariance_type):
    streamed = clustering.fit_streaming(batches(), "em", 4, seed=1, covariance_type=covariance_type, tol=1e-8,
                                        max_iter=200)
    whole = GaussianMixture(4, covariance_type=covariance_type, random_state=1, reg_covar=1e-6, tol=1e-8,
                            max_iter=500).fit(X)
    assert adjusted_rand_score(whole.predict(X), streamed.assign(X)[0]) > 0.99
    assert streamed._mixture().score(X) == pytest.approx(whole.score(X), abs=1e-3)


def test_choose_k_finds_four_blobs():
    k, sweep = clustering.choose_k(X, "kmeans", (2, 8), seed=0)
    assert k == 4 and [r["k"] for r in sweep] == list(range(2, 9))
    assert sum(r["chosen"] for r in sweep) == 1
    k_em, sweep_em = clustering.choose_k(X, "em", (2, 6), seed=0)
    assert k_em == 4 and min(sweep_em, key=lambda r: r["bic"])["k"] == 4


def test_minimum_support_drops_small_clusters_and_reassigns():
    data = np.vstack([X, [[50.0] * 5, [51.0] * 5]])  # a tiny far-away cluster of two rows
    model = clustering.fit(data, "kmeans", 5, seed=0)
    assert np.bincount(model.assign(data)[0]).min() == 2
    pruned = clustering.drop_small_clusters(model, clustering.cluster_sizes(model, [data]), minimum_support=10)
    labels = pruned.assign(data)[0]
    assert pruned.k == 4 and set(labels) == {0, 1, 2, 3} and pruned.info["dropped_clusters"] == 1


def test_k_larger_than_distinct_rows_is_refused():
    with pytest.raises(clustering.ClusteringError, match="larger than the 3 distinct input rows"):
        clustering.fit(np.array([[0.0], [1.0], [2.0], [2.0]]), "kmeans", 4)


def _separated_blobs(k, dims, seed, per_cluster=150):
    """k Gaussian blobs (sd 1) whose centres are at least 12 apart: well separated by construction."""
    rng = np.random.default_rng([k, dims, seed])
    centers = []
    while len(centers) < k:
        c = rng.uniform(-8 * k ** (1 / dims) - 10, 8 * k ** (1 / dims) + 10, dims)
        if all(np.linalg.norm(c - o) >= 12 for o in centers):
            centers.append(c)
    return np.vstack([rng.normal(c, 1.0, (per_cluster, dims)) for c in centers])


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("dims", [2, 5, 10])
@pytest.mark.parametrize("planted", [2, 3, 4, 5, 6, 7, 8])
@pytest.mark.parametrize("model_type", ["kmeans", "em"])
def test_choose_k_finds_the_planted_k_of_separated_blobs(model_type, planted, dims, seed):
    X = _separated_blobs(planted, dims, seed)
    k, sweep = clustering.choose_k(X, model_type, (2, 10), seed, n_init=3 if model_type == "kmeans" else 1)
    assert k == planted, [(r["k"], round(r["inertia"], 1), round(r.get("bic", 0))) for r in sweep]
    assert [r["k"] for r in sweep if r["chosen"]] == [planted]


def test_knee_of_a_steep_sweep_is_the_drop_not_the_chord_gap():
    # the recorded sweep of the bug: the old chord rule chose 4 where inertia drops 5x at k=5
    sweep = [{"k": k, "inertia": i} for k, i in zip(range(2, 11), [100, 30, 10, 2, 1.9, 1.8, 1.7, 1.6, 1.5])]
    assert clustering.knee(sweep, 300.0)["k"] == 5


@pytest.mark.parametrize("model_type", ["kmeans", "em"])
def test_retrained_clusters_take_the_ids_of_their_counterparts(model_type):
    """stable_ids: a refit with another seed on a 95% resample, renamed after the first fit, gives
    (nearly) every row the id it had; the renamed model assigns exactly as the fit, ids mapped."""
    first = clustering.fit(X, model_type, 4, seed=1)
    keep = np.random.default_rng(0).random(len(X)) < 0.95
    second = clustering.fit(X[keep], model_type, 4, seed=9)
    by_centre = clustering.matched_ids(clustering.centre_distances(second.centers, first.centers))
    old_labels, new_labels = first.assign(X)[0], second.assign(X)[0]
    by_rows = clustering.matched_ids(clustering.overlap_cost(new_labels, old_labels, 4, 4))
    assert by_centre.tolist() == by_rows.tolist()
    renamed = clustering.relabeled(second, by_centre)
    np.testing.assert_array_equal(renamed.assign(X)[0], by_centre[new_labels])
    assert (renamed.assign(X)[0] == old_labels).mean() >= 0.98


def test_matched_ids_when_k_changes():
    # 3 new clusters, 4 old ones: new cluster 0 sits on old 3 (out of range), so it takes the free id
    cost = np.array([[9, 9, 9, 0], [0, 9, 9, 9], [9, 9, 0, 9.0]])
    assert clustering.matched_ids(cost).tolist() == [1, 0, 2]
    # 4 new, 3 old: the unmatched new cluster takes id 3
    cost = np.array([[9, 0, 9], [5, 5, 5], [0, 9, 9], [9, 9, 0.0]])
    assert clustering.matched_ids(cost).tolist() == [1, 3, 0, 2]
