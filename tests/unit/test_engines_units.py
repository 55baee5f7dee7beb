"""The engines' dbt-free parts: statistics merged from shards equal one pass over all rows, the
map-reduce k-means and EM equal scikit-learn's KMeans and the streamed EM, cluster specs and engine
choice, and relation names split for the staging table's rename."""
import json

import numpy as np
import pytest

from dbt.adapters.sqlflow import engines
from dbt.adapters.sqlflow.data.shards import split_relation
from dbt.adapters.sqlflow.engines.tf_cluster import cluster_spec
from dbt.adapters.sqlflow.errors import OptionError
from dbt.adapters.sqlflow.ml import clustering
from dbt.adapters.sqlflow.ml.preprocess import (
    FeatureEncoder,
    RawColumn,
    _ColumnStats,
    column_statistics,
    merge_statistics,
)


def _columns(rng, n):
    x = rng.normal(3.0, 2.0, n)
    nulls = rng.random(n) < 0.1
    tag = rng.choice(np.array(["a", "b", "c", "d"], dtype=object), n, p=[0.4, 0.3, 0.2, 0.1])
    return {"x": RawColumn("x", x, nulls, False), "tag": RawColumn("tag", tag, None, True)}


def _part(columns, rows):
    return {n: RawColumn(c.name, c.values[rows], None if c.nulls is None else c.nulls[rows], c.categorical)
            for n, c in columns.items()}


@pytest.mark.parametrize("normalize", ["zscore", "minmax"])
def test_statistics_merged_from_shards_fit_the_same_encoder(normalize):
    columns = _columns(np.random.default_rng(0), 9000)
    whole = FeatureEncoder(normalize).fit_batches([columns])
    shards = [column_statistics([_part(columns, slice(a, b))], seed=i)
              for i, (a, b) in enumerate([(0, 1000), (1000, 6000), (6000, 9000)])]
    merged = FeatureEncoder(normalize).fit_statistics(merge_statistics(shards))
    assert merged.feature_names == whole.feature_names
    for w, m in zip(whole.features_, merged.features_):
        for key in ("impute", "center", "scale", "states", "frequency"):
            if key in w and isinstance(w[key], float):
                assert m[key] == pytest.approx(w[key], rel=1e-12), key
            elif key in w:
                assert m[key] == w[key], key
        assert m["profile"]["nulls"] == pytest.approx(w["profile"]["nulls"])
    X = np.random.default_rng(1).normal(size=(5, 1))
    raw = {"x": RawColumn("x", X[:, 0], None, False),
           "tag": RawColumn("tag", np.array(["a", "d", "z", "b", "c"], dtype=object), None, True)}
    np.testing.assert_allclose(merged.transform(raw), whole.transform(raw), rtol=1e-12)


def test_statistics_survive_json_between_processes():
    columns = _columns(np.random.default_rng(2), 4000)
    stats = column_statistics([_part(columns, slice(0, 2000))], seed=0)
    other = column_statistics([_part(columns, slice(2000, 4000))], seed=1)
    through = {n: _ColumnStats.from_dict(json.loads(json.dumps(s.to_dict()))) for n, s in stats.items()}
    direct = FeatureEncoder().fit_statistics(merge_statistics([stats, other]))
    via_json = FeatureEncoder().fit_statistics(merge_statistics([through, other]))
    assert via_json.to_dict() == direct.to_dict()


def _blobs(seed=0, n=3000):
    rng = np.random.default_rng(seed)
    centres = np.array([[0, 0, 0], [5, 5, 0], [0, 6, 6], [7, 0, 3]], float)
    return centres[rng.integers(0, 4, n)] + rng.normal(0, 1.2, (n, 3))


def test_kmeans_map_reduce_equals_scikit_learn_kmeans():
    from sklearn.cluster import KMeans

    X = _blobs()
    shards = np.array_split(X, 3)
    previous = [np.full(len(s), -1) for s in shards]

    def statistics(centers):
        parts = []
        for i, shard in enumerate(shards):
            labels, part = clustering.kmeans_batch_statistics(shard, centers)
            part["changed"] = int((labels != previous[i]).sum())
            previous[i] = labels
            parts.append(part)
        return clustering.add_statistics(parts)

    tolerance = float(np.mean(X.var(axis=0)) * 1e-4)
    model = clustering.kmeans_map_reduce(statistics, clustering.initial_centers(X, 4, 7), tolerance)
    reference = KMeans(4, init="k-means++", n_init=1, random_state=7).fit(X)
    np.testing.assert_allclose(model.centers, reference.cluster_centers_, atol=1e-9)
    np.testing.assert_array_equal(model.assign(X)[0], reference.labels_)


def test_restarts_pick_the_run_kmeans_picks():
    from sklearn.cluster import KMeans

    from dbt.adapters.sqlflow.jobs.dask_cluster import DaskClusterJob

    X = _blobs(3)
    previous = [np.full(len(X), -1)]

    def lloyd(centers):
        labels, part = clustering.kmeans_batch_statistics(X, centers)
        part["changed"] = int((labels != previous[0]).sum())
        previous[0] = labels
        return part

    def same(a, b):
        counts = np.zeros((len(a), len(b)), int)
        np.add.at(counts, (clustering._nearest(X, a), clustering._nearest(X, b)), 1)
        return bool(((counts > 0).sum(axis=1) <= 1).all())

    tolerance = float(np.mean(X.var(axis=0)) * 1e-4)
    for n_init in (1, 3, 5):
        options = {"seed": 11, "n_init": n_init, "max_iter": 300}
        model = DaskClusterJob._restarts(lloyd, same, X, 4, options, tolerance)
        reference = KMeans(4, init="k-means++", n_init=n_init, random_state=11).fit(X)
        np.testing.assert_allclose(model.centers, reference.cluster_centers_, atol=1e-9)


def test_em_map_reduce_equals_the_streamed_em():
    X = _blobs(1)
    shards = np.array_split(X, 4)
    init = clustering.fit(X[:1000], "em", 4, 3, covariance_type="full")

    def statistics(model):
        return clustering.add_statistics(clustering.em_batch_statistics(model, s) for s in shards)

    model = clustering.em_map_reduce(statistics, init, passes=15, tol=0.0)
    streamed = clustering._streaming_em(lambda: iter([X[:1000], X[1000:]]), 4, 3, "full", 15, 0.0)
    np.testing.assert_allclose(model.centers, streamed.centers, atol=1e-8)
    np.testing.assert_allclose(model.covariances, streamed.covariances, atol=1e-8)
    assert model.info["iterations"] == 15


def test_initial_centers_need_enough_distinct_rows():
    with pytest.raises(clustering.ClusteringError, match="n_clusters=5 is larger than the distinct rows"):
        clustering.initial_centers(np.array([[0.0, 1.0]] * 10 + [[2.0, 2.0]]), 5, 0)


@pytest.mark.parametrize("relation, expected", [
    ('"db"."schema"."name__dbt_tmp"', ('"db"."schema"', "name__dbt_tmp")),
    ('"sch.ema"."a""b"', ('"sch.ema"', 'a"b')),
    ("plain", ("", "plain")),
])
def test_split_relation(relation, expected):
    assert split_relation(relation) == expected


def test_cluster_specs(monkeypatch):
    assert cluster_spec({"worker": ["h1:1", "h2:2"]}).workers == ["h1:1", "h2:2"]
    assert cluster_spec({"chief": ["c:1"], "worker": ["w:2"]}).workers == ["c:1", "w:2"]
    assert cluster_spec('{"worker": ["h:1"]}').workers == ["h:1"]
    local = cluster_spec("local[3]")
    assert len(local.workers) == 3 and all(w.startswith("127.0.0.1:") for w in local.workers)
    config = json.loads(local.tf_config(2))
    assert config["task"] == {"type": "worker", "index": 2} and config["cluster"]["worker"] == local.workers
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(OptionError, match="needs a cluster"):
        cluster_spec(None)
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["a:1", "b:2"]}, "task": {}}))
    assert cluster_spec(None).workers == ["a:1", "b:2"]
    with pytest.raises(OptionError, match="'host:port'"):
        cluster_spec({"worker": ["nohost"]})


def test_engine_choice():
    where = "model 'm' (materialized='ml_train')"
    dnn = {"model_type": "dnn_classifier"}
    assert engines.choose(where, "ml_train", dnn).name == "local"
    # a profile default runs where it can: a DNN under a dask default trains locally
    assert engines.choose(where, "ml_train", dnn, {"engine": "dask", "dask_scheduler": "x"}).name == "local"
    with pytest.raises(OptionError, match="engine 'dask' fits kmeans and em"):
        engines.choose(where, "ml_train", {**dnn, "engine": "dask"})
    with pytest.raises(OptionError, match="engine 'tf_multiworker' trains the TensorFlow model types"):
        engines.choose(where, "cluster", {"model_type": "kmeans", "engine": "tf_multiworker"})
    with pytest.raises(OptionError, match="needs dask_scheduler"):
        engines.choose(where, "cluster", {"model_type": "kmeans", "engine": "dask"})
    chosen = engines.choose(where, "ml_train", {"model_type": "logistic_regression"},
                            {"engine": "tf_multiworker", "tf_cluster": "local[2]"})
    assert chosen.name == "tf_multiworker" and chosen.tf_cluster == "local[2]"
    node = engines.choose(where, "cluster", {"model_type": "em", "engine": "dask",
                                              "dask_scheduler": "tcp://a:1"}, {"dask_scheduler": "tcp://b:2"})
    assert node.dask_scheduler == "tcp://a:1"
