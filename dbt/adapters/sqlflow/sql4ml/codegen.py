"""The translated part of a sql4ml program as TensorFlow source code: `target/sqlflow/<model>.py`.

The evaluator (translate.py) runs once over symbols instead of tensors; every operation it makes is
written down as one line of TensorFlow, so the file computes exactly what training computed. The
file reads the data relations with psycopg2 (`SQLFLOW_DSN`), scatters them into tensors as the adapter
does, trains with the same seed, initialisation, optimizer and batches, and prints the weights.
"""

import textwrap
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from dbt.adapters.sqlflow.sql4ml.tensors import TINY, NumpyBackend
from dbt.adapters.sqlflow.sql4ml.translate import NotNumeric, Relation, Translation


class Dim(int):
    """The length of the batch axis: an int for shape arithmetic, a name in the generated code."""

    symbol = "batch"

    def __new__(cls, value: int):
        return super().__new__(cls, value)

    def __repr__(self) -> str:
        return self.symbol


def _broadcast(a: Tuple, b: Tuple) -> Tuple:
    if len(a) != len(b):  # only scalars meet arrays of another rank
        return a if len(a) > len(b) else b
    return tuple(y if x == 1 else x for x, y in zip(a, b))


def _shape(dims) -> str:
    return "[" + ", ".join(repr(d) if isinstance(d, Dim) else str(int(d)) for d in dims) + "]"


class Sym:
    """A tensor of the generated code: its Python expression and its shape."""

    def __init__(self, gen: "Tracer", code: str, shape: Tuple):
        self.gen, self.code, self.shape = gen, code, tuple(shape)

    def _binary(self, other, template: str, reverse: bool = False):
        other = other if isinstance(other, Sym) else self.gen.literal(other)
        left, right = (other, self) if reverse else (self, other)
        return self.gen.emit(
            template.format(left.code, right.code), _broadcast(left.shape, right.shape)
        )

    def __add__(self, o):
        return self._binary(o, "{} + {}")

    def __radd__(self, o):
        return self._binary(o, "{} + {}", True)

    def __sub__(self, o):
        return self._binary(o, "{} - {}")

    def __rsub__(self, o):
        return self._binary(o, "{} - {}", True)

    def __mul__(self, o):
        return self._binary(o, "{} * {}")

    def __rmul__(self, o):
        return self._binary(o, "{} * {}", True)

    def __truediv__(self, o):
        return self._binary(o, "{} / {}")

    def __rtruediv__(self, o):
        return self._binary(o, "{} / {}", True)

    def __neg__(self):
        return self.gen.emit(f"-{self.code}", self.shape)

    def __and__(self, o):
        return self._binary(o, "tf.logical_and({}, {})")

    def __or__(self, o):
        return self._binary(o, "tf.logical_or({}, {})")

    def __invert__(self):
        return self.gen.emit(f"tf.logical_not({self.code})", self.shape)

    def __eq__(self, o):  # type: ignore[override]
        return self._binary(o, "tf.equal({}, {})")

    def __ne__(self, o):  # type: ignore[override]
        return self._binary(o, "tf.not_equal({}, {})")

    def __gt__(self, o):
        return self._binary(o, "{} > {}")

    def __ge__(self, o):
        return self._binary(o, "{} >= {}")

    def __lt__(self, o):
        return self._binary(o, "{} < {}")

    def __le__(self, o):
        return self._binary(o, "{} <= {}")

    __hash__ = object.__hash__


class Tracer(NumpyBackend):
    """A backend whose operations write code: one `tN = ...` line each, in evaluation order."""

    FUNCTIONS = {
        "exp": "tf.math.exp",
        "ln": "log",
        "sqrt": "tf.math.sqrt",
        "abs": "tf.math.abs",
        "power": "tf.math.pow",
        "greatest": "tf.math.maximum",
        "least": "tf.math.minimum",
    }

    def __init__(self):
        super().__init__()
        self.lines: List[str] = []

    def emit(self, code: str, shape) -> Sym:
        name = f"t{len(self.lines)}"
        self.lines.append(f"{name} = {code}")
        return Sym(self, name, shape)

    def section(self, title: str) -> None:
        self.lines.append(f"# {title}")

    def literal(self, value) -> Sym:
        return Sym(self, f"tf.constant({float(value)!r}, tf.float64)", ())

    def constant(self, value):
        array = np.asarray(value, dtype=np.float64)
        if array.ndim:
            raise ValueError("the generated program takes data tensors as inputs, not constants")
        return self.literal(array)

    def ones(self, shape):
        return self.emit(f"tf.ones({_shape(shape)}, tf.float64)", shape)

    def einsum(self, spec: str, *operands):
        inputs, output = spec.split("->")
        sizes: Dict[str, Any] = {}
        for letters, op in zip(inputs.split(","), operands):
            sizes.update(zip(letters, op.shape))
        codes = ", ".join(o.code for o in operands)
        return self.emit(f"tf.einsum({spec!r}, {codes})", tuple(sizes[c] for c in output))

    def expand(self, x, present):
        if all(present):
            return x
        it = iter(x.shape)
        shape = tuple(next(it) if p else 1 for p in present)
        index = ", ".join(":" if p else "None" for p in present)
        return self.emit(f"{x.code}[{index}]", shape)

    def transpose(self, x, order):
        return self.emit(
            f"tf.transpose({x.code}, {list(order)})", tuple(x.shape[i] for i in order)
        )

    def where(self, condition, a, b):
        shape = _broadcast(_broadcast(condition.shape, a.shape), b.shape)
        return self.emit(f"tf.where({condition.code}, {a.code}, {b.code})", shape)

    def apply(self, name: str, *args):
        args = tuple(a if isinstance(a, Sym) else self.literal(a) for a in args)
        shape: Tuple = ()
        for a in args:
            shape = _broadcast(shape, a.shape)
        return self.emit(f"{self.FUNCTIONS[name]}({', '.join(a.code for a in args)})", shape)


def trace(translation: Translation, key_axes: Dict[str, int]) -> Tuple[List[str], str]:
    """The objective as lines of TensorFlow over `weights[...]`, `data[...][...]`, `masks[...]`."""
    tracer = Tracer()
    relations = {}
    for name, keys in translation.data_keys().items():
        shape = [len(translation.domain(name, k)) for k in keys]
        if name in key_axes:
            shape[key_axes[name]] = Dim(shape[key_axes[name]])
        numeric = translation.value_columns(name)
        values: Dict[str, Any] = {
            c: Sym(tracer, f"data[{name!r}][{c!r}]", tuple(shape))
            if c in numeric
            else NotNumeric(name, c)
            for c in translation.data.get(name, {})
            if c not in keys
        }
        mask = Sym(tracer, f"masks[{name!r}]", tuple(shape))
        relations[name] = Relation(keys, values, mask, "data")
    weights = {
        n: Sym(tracer, f"weights[{n!r}]", translation.weight_shape(n))
        for n in translation.program.weights
    }
    result = translation.evaluate(tracer, weights, relations)
    return _live(tracer.lines, result.code), result.code


def _live(lines: List[str], result: str) -> List[str]:
    """The lines the result depends on (the evaluator also computes row masks nothing reads), and
    the section comments above them."""
    import re

    needed, kept = set(re.findall(r"\bt\d+\b", result)), []  # type: ignore[var-annotated]
    for line in reversed(lines):
        if line.startswith("#"):
            if kept and not kept[-1].startswith("#"):
                kept.append(line)
            continue
        name, expression = line.split(" = ", 1)
        if name in needed:
            kept.append(line)
            needed |= set(re.findall(r"\bt\d+\b", expression))
    return list(reversed(kept))


TEMPLATE = '''\
"""Generated by dbt-sqlflow from the sql4ml model {model}: its weights come from this program.

The model's SQL program, as compiled by dbt:

{program}

Data relations (CTEs that read no weight) run in PostgreSQL; the objective below is the translation
of the rest, over tensors with one axis per key column. Run it alone to reproduce the weights:

    SQLFLOW_DSN=postgresql://user@host/db python {model}.py > weights.csv
"""

import csv
import os
import sys

import numpy as np
import psycopg2
import tensorflow as tf

SEED = {seed}
EPOCHS = {epochs}
BATCH_SIZE = {batch_size}  # 0: full-batch gradient descent
EARLY_STOPPING = {early_stopping}  # patience in epochs; 0: off
MIN_DELTA = {min_delta}

DATA_SQL = {data_sql}
KEYS = {keys}  # key columns of each data relation: its tensors' axes, in order
VALUES = {values}  # its numeric columns the objective reads
DOMAINS = {domains}  # the values an axis runs over: columns equated in the program share one
BATCH_AXIS = {batch_axes}  # data relation -> axis of the key cut into mini-batches
WEIGHTS = {weights}  # name -> (index columns, domain of each, init, scale)


def read(conn):
    """Each data relation's columns, as the adapter reads them (NULLs are refused there)."""
    columns = {{}}
    with conn.cursor() as cur:
        for name, sql in DATA_SQL.items():
            cur.execute(sql)
            names = [d[0] for d in cur.description]
            rows = cur.fetchall()
            columns[name] = {{n: np.array([r[i] for r in rows]) for i, n in enumerate(names)}}
    return columns


def domains(columns):
    out = {{}}
    for domain, (members, size) in DOMAINS.items():
        values = [columns[r][c] for r, c in members if r in columns]
        out[domain] = np.unique(np.concatenate(values)) if values else np.arange(size)
    return out


def scatter(columns, domain_of):
    """Dense tensors over each relation's keys, and a mask of the rows that exist."""
    data, masks = {{}}, {{}}
    for name, keys in KEYS.items():
        index = tuple(np.searchsorted(domain_of[(name, k)], columns[name][k]) for k in keys)
        shape = tuple(len(domain_of[(name, k)]) for k in keys)
        masks[name] = np.zeros(shape)
        masks[name][index] = 1.0
        data[name] = {{}}
        for column in VALUES[name]:
            dense = np.zeros(shape)
            dense[index] = np.asarray(columns[name][column], np.float64)
            data[name][column] = tf.constant(dense, tf.float64)
        masks[name] = tf.constant(masks[name], tf.float64)
    return data, masks


def objective(weights, data, masks):
{batch_line}{body}
    return {result}


def log(x):
    """ln with its argument floored at the smallest normal float64, as the adapter trains."""
    return tf.math.log(tf.math.maximum(x, {tiny!r}))


def restrict(data, masks, positions):
    data, masks = dict(data), dict(masks)
    for name, axis in BATCH_AXIS.items():
        data[name] = {{c: tf.gather(v, positions, axis=axis) for c, v in data[name].items()}}
        masks[name] = tf.gather(masks[name], positions, axis=axis)
    return data, masks


def batches(rng, n):
    if BATCH_SIZE <= 0 or BATCH_SIZE >= n:
        return [np.arange(n)]
    order = rng.permutation(n)
    return [order[i : i + BATCH_SIZE] for i in range(0, n, BATCH_SIZE)]


def train(data, masks, domain_of):
    tf.keras.utils.set_random_seed(SEED)
    tf.config.experimental.enable_op_determinism()
    rng = np.random.default_rng(SEED)
    weights = {{}}
    for name, (index, domain, init, scale) in WEIGHTS.items():
        shape = tuple(len(domain_of[(name, c)]) for c in index)
        start = np.zeros(shape) if init == "zeros" else rng.normal(0.0, scale, shape)
        weights[name] = tf.Variable(start, dtype=tf.float64, name=name)
    optimizer = {optimizer}
    n = {batch_count}

    @tf.function
    def step(positions):
        batch_data, batch_masks = restrict(data, masks, positions) if BATCH_AXIS else (data, masks)
        with tf.GradientTape() as tape:
            loss = objective(weights, batch_data, batch_masks)
        grads = tape.gradient(loss, list(weights.values()))
        optimizer.apply_gradients(zip(grads, list(weights.values())))
        return loss

    history = []
    for epoch in range(EPOCHS):
        history.append(float(np.mean([float(step(tf.constant(p))) for p in batches(rng, n)])))
        if EARLY_STOPPING and len(history) > EARLY_STOPPING:
            best = min(history[:-EARLY_STOPPING])
            if min(history[-EARLY_STOPPING:]) > best - MIN_DELTA * abs(best):
                break
    return weights, float(objective(weights, data, masks))


def main():
    with psycopg2.connect(os.environ["SQLFLOW_DSN"]) as conn:
        columns = read(conn)
    by_domain = domains(columns)
    domain_of = {{member: by_domain[d] for d, (members, _) in DOMAINS.items() for member in members}}
    data, masks = scatter(columns, domain_of)
    weights, final = train(data, masks, domain_of)
    print(f"objective {{final!r}}", file=sys.stderr)
    out = csv.writer(sys.stdout)
    out.writerow(["tensor"] + {index_columns} + ["value"])
    for name, (index, _, _, _) in WEIGHTS.items():
        array = weights[name].numpy()
        for position in np.ndindex(*array.shape):
            labels = {{c: domain_of[(name, c)][i] for c, i in zip(index, position)}}
            out.writerow([name] + [labels.get(c, "") for c in {index_columns}] + [repr(float(array[position]))])


if __name__ == "__main__":
    main()
'''

OPTIMIZERS = {
    "sgd": "SGD",
    "adam": "Adam",
    "adagrad": "Adagrad",
    "rmsprop": "RMSprop",
    "ftrl": "Ftrl",
}


def render(
    translation: Translation,
    model: str,
    fitting,
    key: Optional[str],
    index_columns: List[str],
) -> str:
    """The generated program's source."""
    from dbt.adapters.sqlflow.sql4ml.train import MIN_DELTA

    key_axes, _ = translation.batch_axes(key) if fitting.batch_size else ({}, 0)
    lines, result = trace(translation, key_axes)
    program = translation.program
    data_keys = translation.data_keys()
    members: Dict[Any, List] = {}
    for relation, keys in list(data_keys.items()) + [
        (w, list(s.index)) for w, s in program.weights.items()
    ]:
        for k in keys:
            members.setdefault(translation.classes.find((relation, k)), []).append((relation, k))
    domains = {
        f"d{i}": (sorted(set(m)), len(translation.domain(*m[0])))
        for i, m in enumerate(members.values())
    }
    first = next(iter(key_axes.items()), None)
    return TEMPLATE.format(
        model=model,
        program=textwrap.indent(program.text.strip(), "    "),
        seed=fitting.seed,
        epochs=fitting.epochs,
        batch_size=fitting.batch_size,
        early_stopping=fitting.early_stopping or 0,
        min_delta=MIN_DELTA,
        data_sql=_pretty({n: program.data_sql(n) for n in data_keys}),
        keys=_pretty(data_keys),
        values=_pretty({n: translation.value_columns(n) for n in data_keys}),
        domains=_pretty(domains),
        batch_axes=_pretty(key_axes),
        weights=_pretty(
            {
                n: (
                    list(s.index),
                    [_domain_name(domains, (n, c)) for c in s.index],
                    s.init,
                    s.scale,
                )
                for n, s in program.weights.items()
            }
        ),
        batch_line=f"    batch = masks[{first[0]!r}].shape[{first[1]}]  # rows of this mini-batch\n"
        if first
        else "",
        body=textwrap.indent("\n".join(lines), "    "),
        result=result,
        optimizer=f"tf.keras.optimizers.{OPTIMIZERS[fitting.optimizer]}"
        f"(learning_rate={fitting.learning_rate!r})",
        batch_count=(f"masks[{first[0]!r}].shape[{first[1]}]" if first else "0"),
        index_columns=repr(index_columns),
        tiny=TINY,
    )


def _domain_name(domains: Dict, member) -> str:
    return next(name for name, (members, _) in domains.items() if member in members)


def _pretty(value) -> str:
    import pprint

    return pprint.pformat(value, width=100, sort_dicts=False)
