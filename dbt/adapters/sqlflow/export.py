"""Portable copies of a registered version (`dbt run-operation sqlflow_export`).

ONNX: one graph from the raw feature columns to the predictions, so any ONNX runtime scores rows as
ml_predict does: NaN (NULL) imputed as in training, normalized, then the model. The graph is a
TensorFlow function converted by tf2onnx, for every model type alike (k-means, EM, linear and
logistic in float64, networks in their float32). Input `features`: a float64 matrix, one column per
feature in the order of the `features` metadata entry. SQL: the in-database scoring SELECT as a view.
"""

import json
from typing import Callable, Dict, List

import numpy as np

from dbt.adapters.sqlflow.errors import SqlflowError
from dbt.adapters.sqlflow.ml.preprocess import FeatureEncoder

OPSET = 17


class ExportError(SqlflowError, ValueError):
    """The version cannot be written in the asked format; the message says what can."""


def _continuous_features(trained) -> List[str]:
    features = trained.features["features"]
    other = [f["name"] for f in features if f["kind"] != "continuous" or f["indicator"]]
    if other:
        raise ExportError(
            f"ONNX export takes numeric features; {trained.model_name} v{trained.version} also "
            f"encodes {', '.join(other)} (categories or NULL indicators). Export it with "
            f"format: sql, or score it with ml_predict."
        )
    return [f["name"] for f in features if not f.get("dropped")]


def _clusters(tf, trained) -> Callable:
    from dbt.adapters.sqlflow.jobs.cluster import model_from
    from dbt.adapters.sqlflow.ml.clustering import _precision_cholesky

    model = model_from(trained)

    def assign(z):  # constants are made while tracing: captured eager tensors would become inputs
        centers = tf.constant(model.centers, tf.float64)
        distances = tf.sqrt(tf.reduce_sum(tf.square(z[:, None, :] - centers[None]), axis=2))
        if model.model_type == "kmeans":
            best = tf.argmin(distances, axis=1)
            return {"cluster_id": best, "cluster_distance": tf.reduce_min(distances, axis=1)}
        log_density = _em_log_density(
            tf, model, _precision_cholesky(model.covariances, model.covariance_type), z
        )
        probabilities = tf.nn.softmax(log_density, axis=1)
        best = tf.argmax(log_density, axis=1)
        return {
            "cluster_id": best,
            "cluster_distance": tf.gather(distances, best, axis=1, batch_dims=1),
            "cluster_probability": tf.reduce_max(probabilities, axis=1),
            "probabilities": probabilities,
        }

    return assign


def _em_log_density(tf, model, chol, z):
    """log(weight_k) + log N(z | mean_k, cov_k) from the precision Cholesky factors, as scikit-learn."""
    d = model.centers.shape[1]
    out = []
    for k, mu in enumerate(model.centers):
        diff = z - tf.constant(mu, tf.float64)
        if model.covariance_type in ("diag", "spherical"):
            p = chol[k] if model.covariance_type == "diag" else np.full(d, chol[k])
            y, log_det = diff * tf.constant(p, tf.float64), float(np.log(p).sum())
        else:
            P = chol if model.covariance_type == "tied" else chol[k]
            y, log_det = (
                tf.matmul(diff, tf.constant(P, tf.float64)),
                float(np.log(np.diag(P)).sum()),
            )
        constant = float(np.log(model.weights[k]) + log_det - 0.5 * d * np.log(2 * np.pi))
        out.append(constant - 0.5 * tf.reduce_sum(tf.square(y), axis=1))
    return tf.stack(out, axis=1)


def _supervised(tf, trained) -> Callable:
    from dbt.adapters.sqlflow.jobs.predict import LINEAR_TYPES, trained_model

    model = trained_model(trained)
    if trained.model_type in LINEAR_TYPES:
        decision = lambda z: (  # noqa: E731
            tf.matmul(z, tf.constant(model.kernel, tf.float64))
            + tf.constant(model.bias, tf.float64)
        )
        binary = lambda z: tf.sigmoid(decision(z)[:, 0])  # noqa: E731
        multiclass = lambda z: tf.nn.softmax(decision(z), axis=1)  # noqa: E731
    else:
        from dbt.adapters.sqlflow.ml import keras_models, networks

        with keras_models.tensorflow_session(0) as keras:
            networks.register_layers(keras)
            network = keras_models.from_bytes(keras, model.artifact)
        shift, spread = model.shift, model.spread
        raw = lambda z: tf.cast(network(tf.cast(z, tf.float32), training=False), tf.float64)  # noqa: E731
        decision = lambda z: raw(z) * spread + shift  # noqa: E731
        binary = lambda z: raw(z)[:, 0]  # noqa: E731
        multiclass = raw
    if model.task in ("regression", "autoencoder"):
        key = "predicted" if model.task == "regression" else "reconstruction"
        return lambda z: {key: decision(z)[:, 0] if model.task == "regression" else raw(z)}

    def classify(z):
        if model.task == "binary":
            p = binary(z)
            probabilities = tf.stack([1.0 - p, p], axis=1)
        else:
            probabilities = multiclass(z)
        return {"class_index": tf.argmax(probabilities, axis=1), "probabilities": probabilities}

    return classify


def onnx_bytes(trained) -> bytes:
    """The version as an ONNX model: raw features in, ml_predict's numbers out."""
    import tensorflow as tf
    import tf2onnx

    names = _continuous_features(trained)
    encoder = FeatureEncoder.from_dict(trained.features)
    center, scale = encoder.affine()
    impute = [f["impute"] for f in trained.features["features"] if not f.get("dropped")]
    if trained.model_type in ("kmeans", "em", "dec"):
        if trained.model_type == "dec":
            raise ExportError(
                f"{trained.model_name} is a dec model: ONNX export covers k-means, EM, linear, "
                f"logistic and TensorFlow networks; score DEC models with ml_predict."
            )
        body = _clusters(tf, trained)
    else:
        body = _supervised(tf, trained)
    spec = (tf.TensorSpec((None, len(names)), tf.float64, name="features"),)

    @tf.function(input_signature=spec)
    def score(x):
        x = tf.where(tf.math.is_nan(x), tf.constant([impute], tf.float64) + tf.zeros_like(x), x)
        return body((x - tf.constant(center, tf.float64)) / tf.constant(scale, tf.float64))

    proto, _ = tf2onnx.convert.from_function(score, input_signature=spec, opset=OPSET)
    meta = {
        "model_name": trained.model_name,
        "version": str(trained.version),
        "model_type": trained.model_type,
        "features": json.dumps(names),
        "classes": json.dumps(trained.parameters.get("classes")),
    }
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    return proto.SerializeToString()


def sql_view(
    trained, view: str, input_relation: str, input_columns: List[str], options: Dict
) -> str:
    """`create or replace view` scoring `input_relation` inside PostgreSQL, as ml_predict does."""
    from dbt.adapters.sqlflow.data.pgtypes import quote_ident
    from dbt.adapters.sqlflow.jobs.predict import IN_DATABASE, in_database_select

    if trained.model_type not in IN_DATABASE:
        raise ExportError(
            f"format: sql covers {', '.join(IN_DATABASE)} models; {trained.model_name} is "
            f"{trained.model_type}: export it with format: onnx."
        )
    kept = "".join(f"__sqlflow_s.{quote_ident(c)}, " for c in input_columns)
    select = in_database_select(
        trained, options, f"select * from {input_relation}", kept, str(trained.version)
    )
    return (
        f"-- {trained.model_name} v{trained.version} ({trained.model_type}), exported by dbt-sqlflow\n"
        f"create or replace view {view} as\n{select};\n"
    )
