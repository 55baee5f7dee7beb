"""Deep embedded clustering (Xie, Girshick and Farhadi, 2016) in Keras.

An autoencoder maps the features to an embedding; k-means on the embeddings gives the initial
centres; then encoder and centres are trained together to minimise KL(P || Q), where Q is the
Student's t similarity of each embedding to each centre (alpha = 1) and P = Q^2 / cluster frequency,
renormalised, is recomputed every `update_interval` batches. Training stops when fewer than `tol` of
the labels change between two updates, or after `max_iter` batches.
"""
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np

from dbt.adapters.sqlflow.ml import keras_models, networks

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
                self.centers = self.add_weight(name="centers", shape=(self.n_clusters, input_shape[-1]),
                                               initializer="glorot_uniform")

            def call(self, z):
                ops = keras.ops
                distance = ops.sum(ops.square(ops.expand_dims(z, 1) - self.centers), axis=2)
                q = 1.0 / (1.0 + distance)
                return q / ops.sum(q, axis=1, keepdims=True)

            def get_config(self):
                return {**super().get_config(), "n_clusters": self.n_clusters}

        _CLUSTERING_LAYER = ClusteringLayer
    return _CLUSTERING_LAYER


def target_distribution(q: np.ndarray) -> np.ndarray:
    weight = q ** 2 / q.sum(axis=0)
    return weight / weight.sum(axis=1, keepdims=True)


@dataclass
class DecModel:
    artifact: bytes  # the clustering model (encoder + clustering layer) as .keras
    centers: np.ndarray  # (k, embedding size)
    weights: List[tuple]
    info: Dict = field(default_factory=dict)

    model_type: str = "dec"

    @property
    def k(self) -> int:
        return len(self.centers)

    def _predict(self, X: np.ndarray):
        with keras_models.tensorflow_session(0) as keras:
            clustering_layer(keras)
            networks.factorization_machine_layer(keras)
            model = keras_models.from_bytes(keras, self.artifact)
            encoder = keras.Model(model.inputs, model.get_layer("embedding").output)
            return (np.asarray(encoder(X.astype(np.float32), training=False), np.float64),
                    np.asarray(model(X.astype(np.float32), training=False), np.float64))

    def embedding(self, X: np.ndarray) -> np.ndarray:
        return self._predict(X)[0]

    def assign(self, X: np.ndarray):
        """(cluster per row, embedding-space distance to its centre, q)."""
        z, q = self._predict(X)
        labels = q.argmax(axis=1)
        return labels, np.linalg.norm(z - self.centers[labels], axis=1), q


def _encoder_layers(model) -> List[str]:
    names = [layer.name for layer in model.layers]
    return [n for n in names if n.startswith("encoder_")] + ["embedding"]


def fit(X: np.ndarray, k: int, options: Dict, pretrained: Optional[bytes] = None) -> DecModel:
    """The four SQLFlow cases: pretrain or not, from a pretrained autoencoder/DEC model's encoder or not."""
    from sklearn.cluster import KMeans

    seed = options.get("seed", 0)
    info: Dict = {"pretrain_loss": [], "loss": [], "label_change": []}
    with keras_models.tensorflow_session(seed) as keras:
        clustering_layer(keras)
        source = keras_models.from_bytes(keras, pretrained) if pretrained else None
        units = [source.get_layer(n).units for n in _encoder_layers(source)] if source else options["encode_units"]
        autoencoder = networks.build_autoencoder(keras, X.shape[1], {**options, "encode_units": units})
        if source is not None:
            for name in _encoder_layers(source):
                autoencoder.get_layer(name).set_weights(source.get_layer(name).get_weights())
        # a fingerprint of the encoder it starts from: equal to the pretrained model's when one is reused
        info["start_encoder_abs_sum"] = float(sum(np.abs(w).sum() for name in _encoder_layers(autoencoder)
                                                  for w in autoencoder.get_layer(name).get_weights()))
        if options.get("run_pretrain", True):
            pretrain = {"optimizer": "adam", **options, "epochs": options["pretrain_epochs"], "early_stopping": 0}
            history = keras_models.fit(keras, autoencoder, X.astype(np.float32), X.astype(np.float32), "mse",
                                       pretrain)
            info["pretrain_loss"] = history.loss
            info["pretrain_epoch_seconds"] = history.epoch_seconds
        encoder = keras.Model(autoencoder.inputs, autoencoder.get_layer("embedding").output)
        z = np.asarray(encoder(X.astype(np.float32), training=False), np.float64)
        init = KMeans(k, n_init=options.get("n_init", 20), random_state=seed).fit(z)
        q_layer = clustering_layer(keras)(k, name="clustering")
        model = keras.Model(encoder.inputs, q_layer(encoder.outputs[0]))
        model.get_layer("clustering").set_weights([init.cluster_centers_.astype(np.float32)])
        model.compile(optimizer=keras.optimizers.Adam(options["learning_rate"]), loss="kld")
        _train_clusters(model, X.astype(np.float32), options, info, init.labels_)
        centers = np.asarray(model.get_layer("clustering").get_weights()[0], np.float64)
        return DecModel(keras_models.to_bytes(model), centers, networks.layer_weights(model), info)


def _train_clusters(model, X: np.ndarray, options: Dict, info: Dict, labels: np.ndarray) -> None:
    size, interval = options["batch_size"], options["update_interval"]
    tol = 0.001 if options.get("tol") is None else options["tol"]
    max_iter = options.get("max_iter") or options["epochs"] * int(np.ceil(len(X) / size))
    rng = np.random.default_rng(options.get("seed", 0))
    order, position, p = rng.permutation(len(X)), 0, None
    started = time.perf_counter()
    for iteration in range(max_iter):
        if iteration % interval == 0:
            q = np.asarray(model(X, training=False), np.float64)
            p = target_distribution(q)
            new = q.argmax(axis=1)
            change = float((new != labels).mean())
            labels = new
            info["label_change"].append(change)
            keras_models.log.info(f"DEC iteration {iteration}: {change:.4f} of labels changed")
            if iteration > 0 and change < tol:
                break
        if position + size > len(X) and position > 0:  # whole batches only: a short one would retrace
            order, position = rng.permutation(len(X)), 0
        pick = order[position:position + size]
        position += size
        info["loss"].append(float(model.train_on_batch(X[pick], p[pick])))
    info["iterations"] = len(info["loss"])
    info["clustering_seconds"] = time.perf_counter() - started
