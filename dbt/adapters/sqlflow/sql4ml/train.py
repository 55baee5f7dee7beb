"""Minimizing a translated sql4ml objective: full-batch gradient descent in TensorFlow (float64), as in
the paper, and the weights as rows again (for the weights table and for the self-check SQL)."""

import logging
import time
from dataclasses import dataclass, field
from typing import Collection, Dict, List, Optional

import numpy as np

from dbt.adapters.sqlflow import interrupt
from dbt.adapters.sqlflow.ml.params import Fitting
from dbt.adapters.sqlflow.progress import Progress
from dbt.adapters.sqlflow.sql4ml.program import WeightSpec
from dbt.adapters.sqlflow.sql4ml.translate import NotNumeric, Relation, Translation

log = logging.getLogger("dbt_sqlflow.ml")


@dataclass
class Trained:
    weights: Dict[str, np.ndarray]
    objective: List[float] = field(default_factory=list)  # per epoch: full batch, or batches' mean
    final: float = float("nan")  # on all the data, after the last step
    epochs_run: int = 0
    epoch_seconds: List[float] = field(default_factory=list)  # the first includes tracing


MIN_DELTA = 1e-4  # early stopping: an epoch improves when the objective falls by this share of it


def initial(spec: WeightSpec, shape, rng: np.random.Generator) -> np.ndarray:
    if spec.init == "zeros":
        return np.zeros(shape)
    return rng.normal(0.0, spec.scale, shape)


def batches(rng: np.random.Generator, n: int, batch_size: int) -> List[np.ndarray]:
    """Positions along the key axis per mini-batch, shuffled per epoch; one batch of all when 0."""
    if batch_size <= 0 or batch_size >= n:
        return [np.arange(n)]
    order = rng.permutation(n)
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]


def restrict(tf, relations: Dict[str, Relation], axes: Dict[str, int], positions) -> Dict:
    """The data relations with the key axis cut to a batch's positions (tf.gather)."""
    out = dict(relations)
    for name, axis in axes.items():
        rel = relations[name]
        values = {c: tf.gather(v, positions, axis=axis) for c, v in rel.values.items()}
        out[name] = Relation(rel.keys, values, tf.gather(rel.mask, positions, axis=axis))
    return out


def stopped(history: List[float], patience: int) -> bool:
    """No epoch of the last `patience` improved on the best before them by MIN_DELTA (relative)."""
    if not patience or len(history) <= patience:
        return False
    best = min(history[:-patience])
    return min(history[-patience:]) > best - MIN_DELTA * abs(best)


def fit(
    translation: Translation,
    fitting: Fitting,
    key: Optional[str] = None,
    stream=None,
    sparse: Collection[str] = (),
) -> Trained:
    """Gradient descent on the objective: full batch (batch_size 0, the paper's setting) or
    mini-batches along the `key` axis. The data tensors are built once (the relations in `sparse`
    as Coo, on a full batch), or, with a `stream` (jobs.sql4ml.Stream), each mini-batch is read
    from the database when it is due."""
    from dbt.adapters.sqlflow.ml.keras_models import tensorflow_session
    from dbt.adapters.sqlflow.sql4ml.tensors import TensorflowBackend

    rng = np.random.default_rng(fitting.seed)
    axes, n = translation.batch_axes(key) if fitting.batch_size else ({}, 0)
    with tensorflow_session(fitting.seed) as keras:
        import tensorflow as tf  # under the session's lock: two threads importing it deadlock

        backend = TensorflowBackend(tf)
        held = () if axes else sparse  # mini-batches cut dense tensors (tf.gather)
        data = stream.static(backend) if stream else translation.data_relations(backend, held)
        specs = translation.program.weights
        variables = {
            n: tf.Variable(initial(s, translation.weight_shape(n), rng), dtype=tf.float64, name=n)
            for n, s in specs.items()
        }
        translation.frozen = None if axes else {}  # a full batch: row counts once, then constants
        try:
            first = {**data, **stream.batch(backend, stream.sample)} if stream else data
            translation.evaluate(backend, variables, first)  # eagerly: errors surface as they are
            trained = _descend(
                translation, fitting, backend, variables, data, axes, n, rng, keras, stream
            )
            trained.final = float(translation.evaluate(backend, variables, first))
        finally:
            translation.frozen = None
    return trained


def _flat(relations: Dict[str, Relation]) -> Dict[str, object]:
    """Relations as a flat dict of tensors: what a tf.function takes without retracing per batch."""
    out: Dict[str, object] = {}
    for name, rel in relations.items():
        out[f"{name}/__mask__"] = rel.mask
        out.update(
            {f"{name}/{c}": v for c, v in rel.values.items() if not isinstance(v, NotNumeric)}
        )
    return out


def _unflat(flat: Dict, like: Dict[str, Relation]) -> Dict[str, Relation]:
    return {
        name: Relation(
            rel.keys,
            {c: flat.get(f"{name}/{c}", v) for c, v in rel.values.items()},
            flat[f"{name}/__mask__"],
            rel.kind,
        )
        for name, rel in like.items()
    }


def _descend(
    translation, fitting, backend, variables, data, axes, n, rng, keras, stream
) -> Trained:
    """The epochs: one tf.function step per batch, the objective per epoch, early stopping."""
    import tensorflow as tf

    from dbt.adapters.sqlflow.ml.keras_models import _optimizer

    optimizer = _optimizer(keras, fitting.optimizer, fitting.learning_rate)
    trained = Trained({})
    shape_of: Dict[str, Dict[str, Relation]] = {}

    def minimize(batch):
        with tf.GradientTape() as tape:
            loss = translation.evaluate(backend, variables, batch)
        grads = tape.gradient(loss, list(variables.values()))
        optimizer.apply_gradients(zip(grads, list(variables.values())))
        return loss

    @tf.function
    def step(positions):
        return minimize(restrict(tf, data, axes, positions) if axes else data)

    @tf.function
    def streamed_step(flat):
        return minimize(_unflat(flat, shape_of["batch"]))

    def run(positions):
        if stream is None:
            return step(tf.constant(positions))
        batch = {**data, **stream.batch(backend, stream.domain[positions])}
        shape_of.setdefault("batch", batch)
        return streamed_step(_flat(batch))

    progress = Progress(log, "epoch", fitting.epochs)
    for epoch in range(fitting.epochs):
        interrupt.check()
        started = time.perf_counter()
        losses = [float(run(p)) for p in batches(rng, n, fitting.batch_size)]
        trained.epoch_seconds.append(time.perf_counter() - started)
        trained.objective.append(float(np.mean(losses)))
        trained.epochs_run = epoch + 1
        progress.step(epoch + 1, f"objective {trained.objective[-1]:.6g}")
        if stopped(trained.objective, fitting.early_stopping or 0):
            log.debug(f"early stopping after epoch {epoch + 1}")
            break
    trained.weights = {n: v.numpy().astype(np.float64) for n, v in variables.items()}
    return trained


def weight_rows(translation: Translation, name: str, array: np.ndarray) -> List[tuple]:
    """(index values..., value) per element, the index values taken from the axes' domains."""
    spec = translation.program.weights[name]
    domains = [translation.domain(name, c) for c in spec.index]
    rows = []
    for position in np.ndindex(*array.shape) if array.ndim else [()]:
        index = tuple(
            d[i].item() if hasattr(d[i], "item") else d[i] for d, i in zip(domains, position)
        )
        rows.append(index + (float(array[position]),))
    return rows


def _literal(value) -> str:
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    if isinstance(value, float):
        return f"{value!r}::float8"
    return str(value)


def with_weights(
    translation: Translation,
    weights: Dict[str, np.ndarray],
    replaced: Optional[Dict[str, str]] = None,
) -> str:
    """The user's own program, with every weight a VALUES relation in front: PostgreSQL evaluates the
    objective with the learned weights (the self-check). `replaced` swaps CTE bodies (a sample)."""
    program = translation.program
    ctes = []
    for name, spec in program.weights.items():
        rows = weight_rows(translation, name, weights[name])
        values = ", ".join("(" + ", ".join(_literal(v) for v in row) + ")" for row in rows)
        columns = ", ".join(list(spec.index) + ["value"])
        ctes.append(f"{name}({columns}) as (values {values})")
    replaced = replaced or {}
    ctes += [
        f"{name} as ({replaced.get(name) or select.sql(dialect='postgres')})"
        for name, select in program.ctes.items()
    ]
    return "with " + ",\n".join(ctes) + "\n" + program.final.sql(dialect="postgres")
