"""Minimizing a translated sql4ml objective: full-batch gradient descent in TensorFlow (float64), as in
the paper, and the weights as rows again (for the weights table and for the self-check SQL)."""

import logging
from dataclasses import dataclass, field
from typing import Dict, List

import numpy as np

from dbt.adapters.sqlflow import interrupt
from dbt.adapters.sqlflow.ml.params import Fitting
from dbt.adapters.sqlflow.sql4ml.program import WeightSpec
from dbt.adapters.sqlflow.sql4ml.translate import Translation

log = logging.getLogger("dbt_sqlflow.ml")


@dataclass
class Trained:
    weights: Dict[str, np.ndarray]
    objective: List[float] = field(default_factory=list)  # per epoch, before the step
    final: float = float("nan")  # after the last step


def initial(spec: WeightSpec, shape, rng: np.random.Generator) -> np.ndarray:
    if spec.init == "zeros":
        return np.zeros(shape)
    return rng.normal(0.0, spec.scale, shape)


def fit(translation: Translation, fitting: Fitting) -> Trained:
    """Full-batch descent on the objective; the data tensors are built once."""
    import tensorflow as tf

    from dbt.adapters.sqlflow.ml.keras_models import _optimizer, tensorflow_session
    from dbt.adapters.sqlflow.sql4ml.tensors import TensorflowBackend

    rng = np.random.default_rng(fitting.seed)
    with tensorflow_session(fitting.seed) as keras:
        backend = TensorflowBackend(tf)
        data = translation.data_relations(backend)
        specs = translation.program.weights
        variables = {
            n: tf.Variable(initial(s, translation.weight_shape(n), rng), dtype=tf.float64, name=n)
            for n, s in specs.items()
        }
        optimizer = _optimizer(keras, fitting.optimizer, fitting.learning_rate)
        trained = Trained({})

        @tf.function
        def step():
            with tf.GradientTape() as tape:
                loss = translation.evaluate(backend, variables, data)
            grads = tape.gradient(loss, list(variables.values()))
            optimizer.apply_gradients(zip(grads, list(variables.values())))
            return loss

        for epoch in range(fitting.epochs):
            interrupt.check()
            trained.objective.append(float(step()))
            if epoch == 0 or (epoch + 1) % max(1, fitting.epochs // 5) == 0:
                log.info(
                    f"epoch {epoch + 1}/{fitting.epochs}: objective {trained.objective[-1]:.6g}"
                )
        trained.weights = {n: v.numpy().astype(np.float64) for n, v in variables.items()}
        trained.final = float(translation.evaluate(backend, variables, data))
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


def with_weights(translation: Translation, weights: Dict[str, np.ndarray]) -> str:
    """The user's own program, with every weight a VALUES relation in front: PostgreSQL evaluates the
    objective with the learned weights (the self-check)."""
    import sqlglot

    program = translation.program
    ctes = []
    for name, spec in program.weights.items():
        rows = weight_rows(translation, name, weights[name])
        values = ", ".join("(" + ", ".join(_literal(v) for v in row) + ")" for row in rows)
        columns = ", ".join(list(spec.index) + ["value"])
        ctes.append(f"{name}({columns}) as (values {values})")
    tree = sqlglot.parse_one(program.text, read="postgres")
    body = tree.sql(dialect="postgres")
    head = "with " + ", ".join(ctes)
    if body.lower().startswith("with "):
        return head + ", " + body[len("with ") :]
    return head + " " + body
