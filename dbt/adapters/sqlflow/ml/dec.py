"""Deep embedded clustering (Xie, Girshick and Farhadi, 2016) in Keras.

An autoencoder maps the features to an embedding; k-means on the embeddings gives the initial
centres; then encoder and centres are trained together to minimise KL(P || Q), where Q is the
Student's t similarity of each embedding to each centre (alpha = 1) and P = Q^2 / cluster frequency,
renormalised, is recomputed every `update_interval` batches. Training stops when fewer than `tol` of
the labels change between two updates, or after `max_iter` batches.
"""

import time
from dataclasses import dataclass, field, replace
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Union

import numpy as np

from dbt.adapters.sqlflow import interrupt
from dbt.adapters.sqlflow.ml import keras_models, networks
from dbt.adapters.sqlflow.ml.params import Dec, Fitting
from dbt.adapters.sqlflow.progress import Progress

_CLUSTERING_LAYER = None


def clustering_layer(keras):
    """The soft assignment q_ij = (1 + |z_i - mu_j|^2)^-1, normalised per row; registered for safe loading."""
    global _CLUSTERING_LAYER
    if _CLUSTERING_LAYER is None:

        @keras.saving.register_keras_serializable(package="dbt_sqlflow", name="ClusteringLayer")
        class ClusteringLayer(keras.layers.Layer):
            def __init__(self, n_clusters: int, **kwargs):
                super().__init__(**kwargs)
                self.n_clusters = n_clusters

            def build(self, input_shape):
                self.centers = self.add_weight(
                    name="centers",
                    shape=(self.n_clusters, input_shape[-1]),
                    initializer="glorot_uniform",
                )

            def call(self, z):
                ops = keras.ops
                distance = ops.sum(ops.square(ops.expand_dims(z, 1) - self.centers), axis=2)
                q = 1.0 / (1.0 + distance)
                return q / ops.sum(q, axis=1, keepdims=True)

            def get_config(self):
                return {**super().get_config(), "n_clusters": self.n_clusters}

        _CLUSTERING_LAYER = ClusteringLayer
    return _CLUSTERING_LAYER


def target_distribution(q: np.ndarray, frequency: Optional[np.ndarray] = None) -> np.ndarray:
    """P = q^2 / f, normalised per row; f, the soft cluster frequency, sums q over every row (passed
    in when q is one batch of many)."""
    weight = q**2 / (q.sum(axis=0) if frequency is None else frequency)
    return weight / weight.sum(axis=1, keepdims=True)


@dataclass
class Batches:
    """Rows over the memory budget: `read()` iterates the encoded rows a batch at a time, the same rows
    in the same order on every call (one call per pass)."""

    read: Callable[[], Iterable[np.ndarray]]
    n_rows: int
    first: Optional[np.ndarray] = None  # the first batch, when the caller holds it already

    def head(self) -> np.ndarray:
        """The first batch (read once): the input's width, and the sample for choosing k and restarts."""
        if self.first is None:
            self.first = next(iter(self.read()))
        return self.first

    def minibatches(self, size: int, rng) -> Iterator[np.ndarray]:
        """Endless minibatches of exactly `size` rows, shuffled within each batch read; a batch's
        remainder carries into the next, so every step has one shape (Keras does not retrace)."""
        carry = None
        while True:
            for X in self.read():
                X = X[rng.permutation(len(X))]
                if carry is not None and len(carry):
                    X = np.vstack([carry, X])
                whole = len(X) - len(X) % size
                for start in range(0, whole, size):
                    yield X[start : start + size].astype(np.float32)
                carry = X[whole:]


@dataclass
class DecModel:
    artifact: bytes  # the clustering model (encoder + clustering layer) as .keras
    centers: np.ndarray  # (k, embedding size)
    weights: List[tuple]
    info: Dict = field(default_factory=dict)
    order: Optional[np.ndarray] = None  # order[j]: the clustering layer's unit that is cluster j

    model_type: str = "dec"
    _loaded: Optional[tuple] = field(
        default=None, repr=False, compare=False
    )  # (encoder, model), once

    @property
    def k(self) -> int:
        return len(self.centers)

    def _predict(self, X: np.ndarray):
        with keras_models.tensorflow_session(0) as keras:
            if self._loaded is None:
                clustering_layer(keras)
                networks.register_layers(keras)
                model = keras_models.from_bytes(keras, self.artifact)
                self._loaded = (
                    keras.Model(model.input, model.get_layer("embedding").output),
                    model,
                )
            encoder, model = self._loaded
            return (
                np.asarray(encoder(X.astype(np.float32), training=False), np.float64),
                np.asarray(model(X.astype(np.float32), training=False), np.float64),
            )

    def embedding(self, X: np.ndarray) -> np.ndarray:
        return self._predict(X)[0]

    def assign(self, X: np.ndarray):
        """(cluster per row, embedding-space distance to its centre, q)."""
        z, q = self._predict(X)
        if self.order is not None:
            q = q[:, self.order]
        labels = q.argmax(axis=1)
        return labels, np.linalg.norm(z - self.centers[labels], axis=1), q


def relabeled(model: DecModel, ids: np.ndarray) -> DecModel:
    """The same model with cluster i renamed ids[i]; the network is untouched, its outputs reordered."""
    order = np.argsort(ids)
    units = model.order if model.order is not None else np.arange(model.k)
    return replace(model, centers=model.centers[order], order=units[order])


def _encoder_layers(model) -> List[str]:
    names = [layer.name for layer in model.layers]
    return [n for n in names if n.startswith("encoder_")] + ["embedding"]


def fit(
    data: Union[np.ndarray, Batches], k: int, p: Dec, pretrained: Optional[bytes] = None
) -> DecModel:
    """The four SQLFlow cases: pretrain or not, from a pretrained autoencoder/DEC model's encoder or not.
    `data` is the encoded rows, in memory or as Batches read once per pass. k=0 chooses k in
    p.k_range on the embeddings, as DEC's own initialisation sees the data.

    DEC's result depends on the encoder's random start; with restarts=n it is trained from seeds
    seed..seed+n-1 and the model whose clusters are best separated in its own embedding (highest
    silhouette, which does not depend on the embedding's scale) is kept, as k-means keeps the best
    of n_init starts."""
    restarts, seed = p.restarts, p.seed
    if restarts == 1:
        return _fit_once(data, k, p, pretrained)
    sample = data.head() if isinstance(data, Batches) else data
    tried, best, best_score = [], None, -np.inf
    for attempt in range(restarts):
        interrupt.check()
        model = _fit_once(data, k, replace(p, seed=seed + attempt), pretrained)
        score = separation(model, sample, seed)
        tried.append({"seed": seed + attempt, "silhouette": score, "k": model.k})
        keras_models.log.info(
            f"DEC restart {attempt + 1}/{restarts} (seed {seed + attempt}): silhouette {score:.4f}"
        )
        if score > best_score:
            best, best_score = model, score
    best.info["restarts"] = tried
    return best


def separation(model: DecModel, X: np.ndarray, seed: int = 0) -> float:
    """Silhouette of the model's clusters in its embedding, on up to 5000 rows; -1 if one cluster."""
    from sklearn.metrics import silhouette_score

    z, q = model._predict(X)
    labels = q.argmax(axis=1)
    if len(np.unique(labels)) < 2:
        return -1.0
    return float(silhouette_score(z, labels, sample_size=min(len(X), 5000), random_state=seed))


def _fit_once(
    data: Union[np.ndarray, Batches], k: int, p: Dec, pretrained: Optional[bytes]
) -> DecModel:
    seed = p.seed
    rows = data if isinstance(data, Batches) else None
    n_inputs = rows.head().shape[1] if rows is not None else np.asarray(data).shape[1]
    info: Dict = {
        "pretrain_loss": [],
        "loss": [],
        "label_change": [],
        "update_seconds": [],  # seconds since clustering began, at each target update
        "streamed": rows is not None,
    }
    with keras_models.tensorflow_session(seed) as keras:
        clustering_layer(keras)
        autoencoder = _starting_autoencoder(keras, n_inputs, p, pretrained, info)
        if p.run_pretrain:
            _pretrain(keras, autoencoder, data, p, info)
        encoder = keras.Model(autoencoder.input, autoencoder.get_layer("embedding").output)
        if k == 0:
            k = _choose_k(encoder, data, p, info)
        centers, labels = _initial_centres(encoder, data, k, p)
        model = keras.Model(
            encoder.input, clustering_layer(keras)(k, name="clustering")(encoder.output)
        )
        model.get_layer("clustering").set_weights([centers.astype(np.float32)])
        model.compile(optimizer=keras.optimizers.Adam(p.learning_rate), loss="kld")
        targets = (
            _StreamedTargets(keras, model, rows, p)
            if rows is not None
            else _InMemoryTargets(model, np.asarray(data), p)
        )
        _train_clusters(model, targets, p, info, labels)
        centers = np.asarray(model.get_layer("clustering").get_weights()[0], np.float64)
        return DecModel(keras_models.to_bytes(model), centers, networks.layer_weights(model), info)


def _starting_autoencoder(keras, n_inputs: int, p: Dec, pretrained: Optional[bytes], info: Dict):
    """A new autoencoder of encode_units, or one shaped as the pretrained model's encoder and holding its weights."""
    source = keras_models.from_bytes(keras, pretrained) if pretrained else None
    units = (
        [source.get_layer(n).units for n in _encoder_layers(source)] if source else p.encode_units
    )
    autoencoder = networks.build_autoencoder(keras, n_inputs, units, p.activation)
    if source is not None:
        for name in _encoder_layers(source):
            autoencoder.get_layer(name).set_weights(source.get_layer(name).get_weights())
    # a fingerprint of the encoder it starts from: equal to the pretrained model's when one is reused
    info["start_encoder_abs_sum"] = float(
        sum(
            np.abs(w).sum()
            for name in _encoder_layers(autoencoder)
            for w in autoencoder.get_layer(name).get_weights()
        )
    )
    return autoencoder


def _pretrain(keras, autoencoder, data, p: Dec, info: Dict) -> None:
    settings = Fitting(
        learning_rate=p.learning_rate,
        epochs=p.pretrain_epochs,
        batch_size=p.batch_size,
        seed=p.seed,
    )
    if isinstance(data, Batches):
        size = min(p.batch_size, data.n_rows)
        pairs = ((X, X) for X in data.minibatches(size, np.random.default_rng(p.seed)))
        history = keras_models.fit_stream(
            keras,
            autoencoder,
            pairs,
            max(data.n_rows // size, 1),
            "mse",
            settings,
            what="pretraining epoch",
        )
    else:
        X = data.astype(np.float32)
        history = keras_models.fit(
            keras, autoencoder, X, X, "mse", settings, what="pretraining epoch"
        )
    info["pretrain_loss"] = history.loss
    info["pretrain_epoch_seconds"] = history.epoch_seconds


def _choose_k(encoder, data, p: Dec, info: Dict) -> int:
    """The elbow of k-means inertia on the embeddings, silhouette breaking ties (over the memory
    budget: on the first batch, as scalable k-means chooses)."""
    from dbt.adapters.sqlflow.ml import clustering

    sample = data.head() if isinstance(data, Batches) else data
    k, info["k_sweep"] = clustering.choose_k(
        keras_models.predict(encoder, sample), "kmeans", p.k_range, p.seed, n_init=p.n_init
    )
    keras_models.log.info(f"chose k={k} in k_range {list(p.k_range)} on the embeddings")
    return k


def _initial_centres(encoder, data, k: int, p: Dec):
    """k-means on the embeddings (mini-batch k-means, one batch at a time, over the memory budget)."""
    from dbt.adapters.sqlflow.ml import clustering

    seed, n_init = p.seed, p.n_init
    if isinstance(data, Batches):
        model = clustering.fit_streaming(
            lambda: (keras_models.predict(encoder, X) for X in data.read()),
            "kmeans",
            k,
            seed,
            n_init=n_init,
        )
        return model.centers, None
    from sklearn.cluster import KMeans

    init = KMeans(k, n_init=n_init, random_state=seed).fit(keras_models.predict(encoder, data))
    return init.cluster_centers_, init.labels_


class _InMemoryTargets:
    """P for every row, recomputed at each update; minibatches drawn from one shuffled order."""

    def __init__(self, model, X: np.ndarray, p: Dec):
        self.model, self.X, self.n_rows = model, X.astype(np.float32), len(X)
        self.size = p.batch_size
        self.rng = np.random.default_rng(p.seed)
        self.order, self.position = self.rng.permutation(len(X)), 0
        self.p: Optional[np.ndarray] = None

    def update(self) -> np.ndarray:
        q = keras_models.predict(self.model, self.X)
        self.p = target_distribution(q)
        return q.argmax(axis=1)

    def next_batch(self):
        # whole batches only: no retracing
        if self.position + self.size > self.n_rows and self.position > 0:
            self.order, self.position = self.rng.permutation(self.n_rows), 0
        pick = self.order[self.position : self.position + self.size]
        self.position += self.size
        return self.X[pick], self.p[pick]


class _StreamedTargets:
    """Over the memory budget P is not stored: an update passes over the rows for the labels and the
    cluster frequency f and snapshots the model; each minibatch's P is then computed from the snapshot,
    which gives the rows of the P the in-memory loop holds."""

    def __init__(self, keras, model, rows: Batches, p: Dec):
        self.model, self.rows = model, rows
        self.frozen = keras.models.clone_model(model)
        self.size = min(p.batch_size, rows.n_rows)
        self.n_rows = rows.n_rows
        self.stream = rows.minibatches(self.size, np.random.default_rng(p.seed))
        self.frequency: Optional[np.ndarray] = None

    def update(self) -> np.ndarray:
        labels, frequency = [], 0.0
        for X in self.rows.read():
            q = keras_models.predict(self.model, X)
            frequency = frequency + q.sum(axis=0)
            labels.append(q.argmax(axis=1).astype(np.int32))
        self.frequency = np.asarray(frequency)
        self.frozen.set_weights(self.model.get_weights())
        return np.concatenate(labels)

    def next_batch(self):
        X = next(self.stream)
        q = np.asarray(
            self.frozen.predict_on_batch(X), np.float64
        )  # compiled once: an eager call costs more
        return X, target_distribution(q, self.frequency)


def _train_clusters(model, targets, p: Dec, info: Dict, labels: Optional[np.ndarray]) -> None:
    interval = p.update_interval
    tol = 0.001 if p.tol is None else p.tol
    max_iter = p.max_iter or p.epochs * int(np.ceil(targets.n_rows / targets.size))
    started = time.perf_counter()
    # logged at the target updates only: a line per iteration would cost more than the iteration
    progress = Progress(keras_models.log, "DEC iteration", max_iter)
    for iteration in range(max_iter):
        if iteration % interval == 0:
            new = targets.update()
            info["update_seconds"].append(time.perf_counter() - started)
            if labels is not None:
                change = float((new != labels).mean())
                info["label_change"].append(change)
                loss = f", loss {info['loss'][-1]:.6g}" if info["loss"] else ""
                if iteration:  # not the first update, against the initial k-means labels
                    progress.step(iteration, f"{change:.4f} of labels changed{loss}")
                if iteration > 0 and change < tol:
                    break
            labels = new
        if iteration % 10 == 0:
            interrupt.check()
        X, p = targets.next_batch()
        info["loss"].append(float(model.train_on_batch(X, p)))
    info["iterations"] = len(info["loss"])
    info["update_interval"] = interval
    info["clustering_seconds"] = time.perf_counter() - started
