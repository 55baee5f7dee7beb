"""Models trained by gradient descent, in Keras (TensorFlow): build, train, save and load.

TensorFlow keeps global state (the random seed, op determinism, the default graph), so every use
of it here runs under one process-wide lock: several ML nodes under `dbt run --threads N` take
turns in TensorFlow and stay deterministic. Models are saved as `.keras` bytes and loaded back
with safe_mode=True; nothing is pickled.
"""

import gc
import logging
import os
import tempfile
import threading
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import List, Optional

import numpy as np

from dbt.adapters.sqlflow import interrupt
from dbt.adapters.sqlflow.errors import ArtifactError
from dbt.adapters.sqlflow.ml.params import Fitting
from dbt.adapters.sqlflow.progress import Progress

log = logging.getLogger("dbt_sqlflow.ml")
_tf_lock = threading.RLock()
_depth = [0]  # nesting of tensorflow_session in this process (the lock is re-entrant)


@contextmanager
def tensorflow_session(seed: int):
    """The lock, a quiet TensorFlow, and every random generator seeded. The objects alive on entry
    are frozen out of garbage collection meanwhile: in a dbt process they include the manifest, and
    every collection during a training loop would walk it (measured: 15% of a DEC iteration)."""
    with _tf_lock:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # its C++ notices are not ours to show
        import keras
        import tensorflow as tf

        keras.utils.set_random_seed(seed)
        tf.config.experimental.enable_op_determinism()
        outermost = _depth[0] == 0
        if outermost:
            gc.freeze()
        _depth[0] += 1
        try:
            yield keras
        finally:
            _depth[0] -= 1
            if outermost:
                gc.unfreeze()


def _optimizer(keras, name: str, learning_rate: float):
    return {
        "sgd": keras.optimizers.SGD,
        "adam": keras.optimizers.Adam,
        "adagrad": keras.optimizers.Adagrad,
        "rmsprop": keras.optimizers.RMSprop,
        "ftrl": keras.optimizers.Ftrl,
    }[name](learning_rate=learning_rate)


def build_linear(
    keras, n_inputs: int, n_outputs: int, activation: Optional[str], l1: float, l2: float
):
    """One dense layer: linear regression (no activation), logistic (sigmoid) or softmax regression."""
    regularizer = keras.regularizers.L1L2(l1=l1, l2=l2) if (l1 or l2) else None
    inputs = keras.Input(shape=(n_inputs,), name="features")
    outputs = keras.layers.Dense(
        n_outputs, activation=activation, kernel_regularizer=regularizer, name="linear"
    )(inputs)
    return keras.Model(inputs, outputs)


@dataclass
class History:
    loss: List[float] = field(default_factory=list)
    val_loss: List[float] = field(default_factory=list)
    epochs_run: int = 0
    epoch_seconds: List[float] = field(default_factory=list)


class _ProgressLog:
    """A Keras callback: each epoch's losses and duration to the log (a tenth of the epochs shown)."""

    def __new__(cls, keras, total: int, seconds: List[float], what: str = "epoch"):
        progress = Progress(log, what, total)

        class Callback(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                self.started = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                # Ctrl-C: stop between epochs (a per-batch hook would make Keras sync every batch)
                interrupt.check()
                seconds.append(time.perf_counter() - self.started)
                logs = logs or {}
                held_out = f", val loss {logs['val_loss']:.6g}" if "val_loss" in logs else ""
                loss = logs.get("loss", float("nan"))
                progress.step(epoch + 1, f"loss {loss:.6g}{held_out}")

        return Callback()


def _run(
    keras,
    model,
    loss: str,
    fitting: Fitting,
    has_validation: bool,
    what: str = "epoch",
    **fit_arguments,
) -> History:
    """Compile, fit with progress logging (and early stopping when asked), and collect the history."""
    model.compile(optimizer=_optimizer(keras, fitting.optimizer, fitting.learning_rate), loss=loss)
    seconds: List[float] = []
    callbacks = [_ProgressLog(keras, fitting.epochs, seconds, what)]
    if fitting.early_stopping and has_validation:
        # gains below 1e-4 do not count: a convex loss otherwise creeps down for ever
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor="val_loss",
                patience=fitting.early_stopping,
                min_delta=1e-4,
                restore_best_weights=True,
            )
        )
    # Keras notes that a generator is not shuffled: ours shuffles itself
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        history = model.fit(
            epochs=fitting.epochs, callbacks=callbacks, verbose=0, **fit_arguments
        ).history
    return History(
        [float(v) for v in history.get("loss", [])],
        [float(v) for v in history.get("val_loss", [])],
        len(history.get("loss", [])),
        seconds,
    )


def fit(
    keras,
    model,
    X: np.ndarray,
    y: np.ndarray,
    loss: str,
    fitting: Fitting,
    validation: Optional[tuple] = None,
    sample_weight: Optional[np.ndarray] = None,
    what: str = "epoch",
) -> History:
    return _run(
        keras,
        model,
        loss,
        fitting,
        validation is not None,
        what,
        x=X,
        y=y,
        batch_size=fitting.batch_size,
        shuffle=True,
        validation_data=validation,
        sample_weight=sample_weight,
    )


def fit_stream(
    keras,
    model,
    batches,
    steps: int,
    loss: str,
    fitting: Fitting,
    validation=None,
    validation_steps: int = 0,
    what: str = "epoch",
) -> History:
    """As fit, from an endless generator of (X, y[, sample_weight]) batches, `steps` per epoch."""
    return _run(
        keras,
        model,
        loss,
        fitting,
        validation is not None,
        what,
        x=batches,
        steps_per_epoch=steps,
        validation_data=validation,
        validation_steps=validation_steps or None,
    )


def predict(model, X: np.ndarray) -> np.ndarray:
    return np.asarray(model(X.astype(np.float32), training=False), dtype=np.float64)


def to_bytes(model) -> bytes:
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "model.keras")
        model.save(path)
        with open(path, "rb") as f:
            return f.read()


def from_bytes(keras, data: bytes):
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "model.keras")
        with open(path, "wb") as f:
            f.write(data)
        try:
            return keras.models.load_model(path, safe_mode=True, compile=False)
        except Exception as exc:  # truncated, corrupt, or code that safe mode refuses to run
            log.debug(f"the .keras artifact did not load: {type(exc).__name__}: {exc}")
            raise ArtifactError() from None


def dense_weights(model, layer: str = "linear"):
    """(kernel, bias) of a dense layer as float64 arrays."""
    kernel, bias = model.get_layer(layer).get_weights()
    return np.asarray(kernel, np.float64), np.asarray(bias, np.float64)
