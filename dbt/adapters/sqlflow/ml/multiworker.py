"""Synchronous data-parallel training with tf.distribute.MultiWorkerMirroredStrategy, on arrays.

Every worker process runs `train` on its own shard's rows; each step takes `global_batch / workers`
rows from every worker and all-reduces the gradients, so every worker holds the same weights. Keras 3's
`fit` does not accept a multi-worker strategy's datasets, so the loop is a custom one (the pattern of
TensorFlow's multi-worker custom-training tutorial): the loss is summed over the global batch and
divided by its size, as Keras' sum-over-batch-size does on one machine.
"""

import logging
import math
import time
from typing import Any, Callable, Dict, Optional

import numpy as np

from dbt.adapters.sqlflow.ml.keras_models import History, _optimizer
from dbt.adapters.sqlflow.ml.params import Fitting

log = logging.getLogger("dbt_sqlflow.ml")

STEPS_PER_CALL = 200


def _loss(keras, name: str):
    """The per-row loss (reduction none) of the name Keras' compile() would take."""
    return {
        "mse": keras.losses.MeanSquaredError,
        "binary_crossentropy": keras.losses.BinaryCrossentropy,
        "sparse_categorical_crossentropy": keras.losses.SparseCategoricalCrossentropy,
    }[name](reduction=None)


def train(
    keras,
    tf,
    strategy,
    build: Callable[[], Any],
    X: np.ndarray,
    y: np.ndarray,
    weights: Optional[np.ndarray],
    validation: Optional[tuple],
    loss: str,
    fitting: Fitting,
    total_train_rows: int,
    worker: int,
    on_epoch: Callable[[int, Dict], None],
):
    """The trained model (built by `build` under the strategy's scope) and its History. `y` is 2-D
    for outputs of one column; validation is this worker's held-out (X, y) or None everywhere."""
    n_workers = strategy.num_replicas_in_sync
    per_worker = max(1, fitting.batch_size // n_workers)
    global_batch = per_worker * n_workers
    steps = max(1, math.ceil(total_train_rows / global_batch))
    if weights is None:
        weights = np.ones(len(X), np.float32)
    with strategy.scope():
        model = build()
        optimizer = _optimizer(keras, fitting.optimizer, fitting.learning_rate)
        per_row = _loss(keras, loss)
    weights = weights.astype(np.float32)
    options = tf.data.Options()  # each worker already holds its own shard: no re-sharding
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF

    def epoch_batches(epoch: int):
        """This worker's rows in a new seeded order each epoch. A permutation in numpy, as Keras'
        fit shuffles: a tf.data shuffle buffer as large as the shard would cost far more."""
        order = np.random.default_rng([fitting.seed, worker, epoch]).permutation(len(X))
        data = tf.data.Dataset.from_tensor_slices((X[order], y[order], weights[order]))
        data = data.batch(per_worker).repeat().with_options(options)
        return iter(strategy.distribute_datasets_from_function(lambda _: data))

    def replica(x, target, w):
        with tf.GradientTape() as tape:
            value = tf.reduce_sum(per_row(target, model(x, training=True)) * w) / global_batch
            if model.losses:  # regularization: added once per step across the workers
                value += tf.add_n(model.losses) / n_workers
        gradients = tape.gradient(value, model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables))
        return value

    @tf.function
    def run_steps(iterator, count):
        """`count` steps in one call: the per-call cost of Python and tf.function is paid once per
        chunk, not once per step (Keras' steps_per_execution); each step still all-reduces."""
        total = tf.constant(0.0, tf.float32)
        for _ in tf.range(count):  # each step's loss stays local; gradients are all-reduced
            losses = strategy.run(replica, args=next(iterator))
            total += tf.add_n(strategy.experimental_local_results(losses))
        return strategy.reduce("SUM", strategy.run(lambda: total), axis=None)

    def held_out_loss() -> Optional[float]:
        if validation is None:
            return None
        Xv, yv = validation
        local = float(np.sum(per_row(yv, model(Xv, training=False)))) if len(Xv) else 0.0
        totals = strategy.reduce(
            "SUM",
            strategy.run(lambda: tf.constant([local, float(len(Xv))], tf.float64)),
            axis=None,
        ).numpy()
        return float(totals[0] / max(totals[1], 1.0))

    history = History()
    best, best_weights, waited = math.inf, None, 0
    for epoch in range(fitting.epochs):
        started = time.perf_counter()
        batches = epoch_batches(epoch)
        total, done = 0.0, 0
        while done < steps:
            count = min(STEPS_PER_CALL, steps - done)
            total += float(run_steps(batches, tf.constant(count)))
            done += count
        history.loss.append(total / steps)
        val = held_out_loss()
        if val is not None:
            history.val_loss.append(val)
        history.epoch_seconds.append(time.perf_counter() - started)
        history.epochs_run = epoch + 1
        on_epoch(epoch + 1, {"loss": history.loss[-1], "val_loss": val})
        if fitting.early_stopping and val is not None:
            if val < best - 1e-4:
                best, best_weights, waited = val, model.get_weights(), 0
            else:
                waited += 1
                if waited >= fitting.early_stopping:
                    model.set_weights(best_weights)
                    break
    return model, history
