"""Tensors with named axes, over a backend (numpy, or TensorFlow for training): elementwise operations
align axes by name and broadcast; reductions are einsum over the axes that are summed out."""

import string
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

# ln's argument is floored at the smallest normal float64: where PostgreSQL computes a value the
# result is the same, and a sigmoid that saturated to exactly 0 gives a large finite loss with a zero
# gradient instead of -inf and a NaN objective (PostgreSQL itself refuses ln(0): guard it in SQL).
TINY = 2.2250738585072014e-308


class NumpyBackend:
    def __init__(self):
        import numpy

        self.np = numpy

    def constant(self, value):
        return self.np.asarray(value, dtype=self.np.float64)

    def ones(self, shape):
        return self.np.ones([int(d) for d in shape])

    def einsum(self, spec: str, *operands):
        return self.np.einsum(spec, *operands)

    def expand(self, x, present):
        """Axes of length 1 inserted where `present` is False (the array's own axes keep order)."""
        if all(present):
            return x
        return x[tuple(slice(None) if p else None for p in present)]

    def transpose(self, x, order):
        return self.np.transpose(x, order)

    def where(self, condition, a, b):
        return self.np.where(condition, a, b)

    def apply(self, name: str, *args):
        functions: Dict[str, Callable] = {
            "exp": self.np.exp,
            "ln": lambda x: self.np.log(self.np.maximum(x, TINY)),
            "sqrt": self.np.sqrt,
            "abs": self.np.abs,
            "power": self.np.power,
            "greatest": self.np.maximum,
            "least": self.np.minimum,
        }
        return functions[name](*args)


class TensorflowBackend(NumpyBackend):
    """The same operations on tf.Tensors (float64), so gradients flow to the weights."""

    def __init__(self, tf):
        super().__init__()
        self.tf = tf

    def constant(self, value):
        return self.tf.constant(value, dtype=self.tf.float64)

    def ones(self, shape):
        return self.tf.ones([int(d) for d in shape], dtype=self.tf.float64)

    def einsum(self, spec: str, *operands):
        return self.tf.einsum(spec, *operands)

    def transpose(self, x, order):
        return self.tf.transpose(x, order)

    def where(self, condition, a, b):
        return self.tf.where(condition, a, b)

    def apply(self, name: str, *args):
        math = self.tf.math
        functions = {
            "exp": math.exp,
            "ln": lambda x: math.log(math.maximum(x, TINY)),
            "sqrt": math.sqrt,
            "abs": math.abs,
            "power": math.pow,
            "greatest": math.maximum,
            "least": math.minimum,
        }
        return functions[name](*args)


@dataclass(frozen=True)
class Named:
    """An array whose axes carry names (axis variables of a scope); `()` is a scalar. The tag says
    what it is when that allows a shortcut: ('value', alias) a data column (zero where its relation
    has no row), ('mask', alias, relation) that relation's rows, ('ones', weight) a weight's rows
    (all exist)."""

    array: Any
    axes: Tuple[int, ...]
    tag: Optional[Tuple[str, ...]] = None


@dataclass(frozen=True)
class Product:
    """Factors not multiplied yet: a sum over them is one einsum, no intermediate is materialized."""

    factors: Tuple[Named, ...]

    @property
    def axes(self) -> Tuple[int, ...]:
        union: Tuple[int, ...] = ()
        for f in self.factors:
            union += tuple(a for a in f.axes if a not in union)
        return union


Tensor = Union[Named, Product]


def multiply(a: Tensor, b: Tensor) -> Product:
    return Product(_factors(a) + _factors(b))


def _factors(x: Tensor) -> Tuple[Named, ...]:
    return x.factors if isinstance(x, Product) else (x,)


def _simplify(factors: Tuple[Named, ...]) -> List[Named]:
    """Drop factors that cannot change the product: a relation's mask beside one of its own data
    columns (already zero where it has no row), and a weight's ones where other factors span its axes."""
    valued = {f.tag[1] for f in factors if f.tag and f.tag[0] == "value"}
    kept = [f for f in factors if not (f.tag and f.tag[0] == "mask" and f.tag[1] in valued)]
    i = 0
    while i < len(kept):
        others = {a for j, g in enumerate(kept) if j != i for a in g.axes}
        tag = kept[i].tag
        if tag and tag[0] == "ones" and set(kept[i].axes) <= others:
            del kept[i]
        else:
            i += 1
    return kept


def _grouped(factors: List[Named]) -> List[Named]:
    """Factors over the same axes multiplied elementwise first: einsum then sees few operands
    (TensorFlow runs two-operand contractions as matrix products; more operands it does not fuse)."""
    groups: dict = {}
    for f in factors:
        if f.axes in groups:
            groups[f.axes] = Named(groups[f.axes].array * f.array, f.axes)
        else:
            groups[f.axes] = f
    return list(groups.values())


def dense(backend, x: Tensor) -> Named:
    """The tensor itself: a Product multiplied out (over the union of its factors' axes)."""
    return x if isinstance(x, Named) else reduce_to(backend, x, x.axes)


def align(backend, *tensors: Tensor):
    """The arrays laid out over the union of their axes (missing ones of size 1), and that union."""
    named = [dense(backend, t) for t in tensors]
    union: Tuple[int, ...] = ()
    for t in named:
        union += tuple(a for a in t.axes if a not in union)
    laid = []
    for t in named:
        present = [a for a in union if a in t.axes]
        array = t.array
        if tuple(present) != t.axes:
            array = backend.transpose(array, [t.axes.index(a) for a in present])
        laid.append(backend.expand(array, [a in present for a in union]))
    return laid, union


def size(array, axis: int):
    """An axis length: an int, or the generated program's symbolic batch length (codegen.Dim)."""
    n = array.shape[axis]
    return n if hasattr(n, "symbol") else int(n)


def reduce_to(backend, tensor: Tensor, keep: Sequence[int]) -> Named:
    """Sum over every axis not in `keep`: one einsum over all the factors; the result's axes are
    `keep`, in that order."""
    factors = _simplify(_factors(tensor))
    missing = [a for a in keep if not any(a in f.axes for f in factors)]
    if missing:
        raise ValueError(f"cannot keep axes {missing} that the tensor does not have")
    scalars = [f.array for f in factors if not f.axes]
    arrays = _grouped([f for f in factors if f.axes])
    if len(arrays) == 1 and arrays[0].axes == tuple(keep):
        out = arrays[0].array
    elif arrays:
        axes = dict.fromkeys(a for f in arrays for a in f.axes)
        letters = {a: string.ascii_letters[i] for i, a in enumerate(axes)}
        spec = ",".join("".join(letters[a] for a in f.axes) for f in arrays)
        out = backend.einsum(
            spec + "->" + "".join(letters[a] for a in keep), *[f.array for f in arrays]
        )
    else:
        out = scalars.pop(0) if scalars else backend.constant(1.0)
    for scalar in scalars:
        out = out * scalar
    return Named(out, tuple(keep))
