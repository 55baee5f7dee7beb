"""Deep embedded clustering on arrays: the target distribution, and fitting from batches read per pass."""
from dataclasses import replace

import numpy as np
import pytest
from sklearn.datasets import make_blobs
from sklearn.metrics import adjusted_rand_score

from dbt.adapters.sqlflow.ml import dec
from dbt.adapters.sqlflow.ml.params import Dec

X, TRUTH = make_blobs(n_samples=3000, centers=5, n_features=10, cluster_std=1.0, random_state=4)
X = (X - X.mean(axis=0)) / X.std(axis=0)
OPTIONS = Dec(seed=2, encode_units=[32, 3], pretrain_epochs=5, epochs=3, batch_size=128, learning_rate=0.005,
              update_interval=40, n_init=5, tol=0.001, activation="relu", run_pretrain=True, k_range=[2, 10],
              restarts=1)


def in_batches(size=700):
    return dec.Batches(lambda: (X[i:i + size] for i in range(0, len(X), size)), len(X))


def test_target_distribution_of_a_batch_is_the_rows_of_the_whole():
    q = np.random.default_rng(0).random((500, 4))
    q /= q.sum(axis=1, keepdims=True)
    whole = dec.target_distribution(q)
    np.testing.assert_allclose(dec.target_distribution(q[100:228], q.sum(axis=0)), whole[100:228], rtol=1e-12)
    np.testing.assert_allclose(whole.sum(axis=1), 1.0)
    # sharper than q: the confident assignment gains weight
    assert (whole.max(axis=1) >= q.max(axis=1) - 1e-12).all()


def test_minibatches_are_whole_and_each_pass_uses_every_row_once():
    rows = dec.Batches(lambda: (np.arange(i, min(i + 700, 3000))[:, None].astype(float) for i in range(0, 3000, 700)),
                       3000)
    stream = rows.minibatches(256, np.random.default_rng(0))
    first_pass = [next(stream) for _ in range(3000 // 256)]
    assert {b.shape for b in first_pass} == {(256, 1)}
    seen = np.concatenate(first_pass).ravel()
    assert len(np.unique(seen)) == len(seen) == 11 * 256 and seen.min() >= 0 and seen.max() < 3000


def test_streamed_fit_finds_the_groups_as_the_in_memory_fit_does():
    in_memory = dec.fit(X, 5, OPTIONS)
    streamed = dec.fit(in_batches(), 5, OPTIONS)
    again = dec.fit(in_batches(), 5, OPTIONS)
    assert streamed.info["streamed"] and not in_memory.info["streamed"]
    assert adjusted_rand_score(TRUTH, in_memory.assign(X)[0]) > 0.95
    assert adjusted_rand_score(TRUTH, streamed.assign(X)[0]) > 0.95
    np.testing.assert_array_equal(streamed.centers, again.centers)  # deterministic under seed
    assert len(streamed.info["pretrain_loss"]) == 5 and streamed.info["iterations"] > 0


def test_streamed_fit_with_fewer_rows_than_a_batch():
    small = dec.Batches(lambda: iter([X[:60, :]]), 60)
    model = dec.fit(small, 3, replace(OPTIONS, batch_size=256))
    labels = model.assign(X[:60])[0]
    assert len(labels) == 60 and model.k == 3


@pytest.mark.parametrize("run_pretrain", [True, False])
def test_info_records_what_ran(run_pretrain):
    model = dec.fit(X[:600], 5, replace(OPTIONS, run_pretrain=run_pretrain))
    assert bool(model.info["pretrain_loss"]) == run_pretrain
    assert model.info["label_change"] and model.info["iterations"] == len(model.info["loss"])


def test_restarts_keep_the_best_separated_model():
    options = replace(OPTIONS, pretrain_epochs=3, restarts=3)
    best = dec.fit(X[:900], 5, options)
    tried = best.info["restarts"]
    assert [t["seed"] for t in tried] == [2, 3, 4]
    winner = max(tried, key=lambda t: t["silhouette"])
    assert dec.separation(best, X[:900], 2) == pytest.approx(winner["silhouette"], abs=1e-12)
    alone = dec.fit(X[:900], 5, replace(options, restarts=1, seed=winner["seed"]))
    np.testing.assert_array_equal(alone.centers, best.centers)  # the same model as trained on its own


def test_an_artifact_with_code_in_it_is_refused_and_names_no_unsafe_switch():
    from dbt.adapters.sqlflow.errors import ArtifactError
    from dbt.adapters.sqlflow.ml import keras_models

    with keras_models.tensorflow_session(0) as keras:
        inputs = keras.Input(shape=(2,))
        outputs = keras.layers.Lambda(lambda x: x * 2)(inputs)
        crafted = keras_models.to_bytes(keras.Model(inputs, outputs))
        for data in (crafted, crafted[: len(crafted) // 2], b"not a keras file"):
            with pytest.raises(ArtifactError, match="unreadable or unsafe; retrain it") as raised:
                keras_models.from_bytes(keras, data)
            assert "safe_mode" not in str(raised.value)
