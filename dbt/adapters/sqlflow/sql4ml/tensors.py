"""Tensors with named axes, over a backend (numpy, or TensorFlow for training): elementwise operations
align axes by name and broadcast; reductions are einsum over the axes that are summed out."""

import string
from dataclasses import dataclass
from typing import Any, Sequence, Tuple


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
        functions = {
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
    """An array whose axes carry names (axis variables of a scope); `()` is a scalar."""

    array: Any
    axes: Tuple[int, ...]


def align(backend, *tensors: Named):
    """The arrays laid out over the union of their axes (missing ones of size 1), and that union."""
    union: Tuple[int, ...] = ()
    for t in tensors:
        union += tuple(a for a in t.axes if a not in union)
    laid = []
    for t in tensors:
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


def reduce_to(backend, tensor: Named, keep: Sequence[int]) -> Named:
    """Sum over every axis not in `keep` (einsum); the result's axes are `keep`, in that order."""
    letters = {
        a: string.ascii_letters[i]
        for i, a in enumerate(dict.fromkeys(tuple(tensor.axes) + tuple(keep)))
    }
    missing = [a for a in keep if a not in tensor.axes]
    if missing:
        raise ValueError(f"cannot keep axes {missing} that the tensor does not have")
    spec = "".join(letters[a] for a in tensor.axes) + "->" + "".join(letters[a] for a in keep)
    return Named(backend.einsum(spec, tensor.array), tuple(keep))
