"""Tensors with named axes, over a backend (numpy, or TensorFlow for training): elementwise operations
align axes by name and broadcast; reductions are einsum over the axes that are summed out."""

import string
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

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

    def integers(self, value):
        return self.np.asarray(value, dtype=self.np.int64)

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

    # sparse data (Coo): inputs may be TensorFlow tensors (frozen row counts are computed in numpy)
    def todense(self, coo: "Coo"):
        out = self.np.zeros(coo.shape)
        out[tuple(self.np.asarray(coo.coords).T)] = self.np.asarray(coo.values)
        return out

    def gather(self, x, coords):
        """x[coords[i]] per row of coords (the leading axes of x), as tf.gather_nd."""
        return self.np.asarray(x)[tuple(self.np.asarray(coords).T)]

    def take(self, x, positions):
        return self.np.asarray(x)[positions]

    def sparse_matmul(self, rows, columns, values, n_rows: int, matrix):
        """A sparse [n_rows, len(matrix)] matrix, given by its entries, times a dense matrix."""
        matrix = self.np.asarray(matrix)
        out = self.np.zeros((n_rows, matrix.shape[1]))
        self.np.add.at(out, rows, self.np.asarray(values)[:, None] * matrix[columns])
        return out

    def segment_sum(self, x, ids, n: int):
        out = self.np.zeros((n,) + tuple(x.shape[1:]))
        self.np.add.at(out, self.np.asarray(ids), self.np.asarray(x))
        return out

    def reshape(self, x, shape):
        return self.np.reshape(x, [int(d) for d in shape])

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

    def integers(self, value):
        return self.tf.constant(value, dtype=self.tf.int64)

    def einsum(self, spec: str, *operands):
        return self.tf.einsum(spec, *operands)

    def todense(self, coo: "Coo"):
        return self.tf.scatter_nd(coo.coords, coo.values, coo.shape)

    def gather(self, x, coords):
        return self.tf.gather_nd(x, coords)

    def take(self, x, positions):
        return self.tf.gather(x, positions)

    def sparse_matmul(self, rows, columns, values, n_rows: int, matrix):
        indices = self.tf.constant(self.np.stack([rows, columns], axis=1), self.tf.int64)
        shape = [int(n_rows), int(matrix.shape[0])]
        return self.tf.sparse.sparse_dense_matmul(
            self.tf.SparseTensor(indices, values, shape), matrix
        )

    def segment_sum(self, x, ids, n: int):
        return self.tf.math.unsorted_segment_sum(x, ids, n)

    def reshape(self, x, shape):
        return self.tf.reshape(x, [int(d) for d in shape])

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
class Coo:
    """A data column kept sparse: its values at the rows that exist (`coords`: one row per value,
    one column per axis, in row-major order), zero elsewhere. Long-format data that fills few cells
    of its dense box (one-hot features) then costs its rows, not the box."""

    coords: Any  # int64 [nnz, rank], on the backend
    values: Any  # float64 [nnz]
    shape: Tuple[int, ...]
    host: Any  # the same coordinates in numpy: index arithmetic done once, when a step is traced


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


def _grouped(backend, factors: List[Named]) -> List[Named]:
    """Factors over the same axes multiplied elementwise first: einsum then sees few operands
    (TensorFlow runs two-operand contractions as matrix products; more operands it does not fuse).
    A sparse factor stays sparse: the others are read at its rows only."""
    groups: dict = {}
    for f in factors:
        if f.axes in groups:
            groups[f.axes] = Named(_times(backend, groups[f.axes].array, f.array), f.axes)
        else:
            groups[f.axes] = f
    return list(groups.values())


def _times(backend, a, b):
    if isinstance(b, Coo) and not isinstance(a, Coo):
        a, b = b, a
    if not isinstance(a, Coo):
        return a * b
    if isinstance(b, Coo):
        if b.coords is not a.coords:  # two relations' rows: one of them dense
            b = backend.todense(b)
        else:
            return Coo(a.coords, a.values * b.values, a.shape, a.host)
    return Coo(a.coords, a.values * backend.gather(b, a.coords), a.shape, a.host)


def _densified(backend, x: Named) -> Named:
    return Named(backend.todense(x.array), x.axes, x.tag) if isinstance(x.array, Coo) else x


def dense(backend, x: Tensor) -> Named:
    """The tensor itself: a Product multiplied out (over the union of its factors' axes)."""
    return _densified(backend, x) if isinstance(x, Named) else reduce_to(backend, x, x.axes)


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
    arrays = _grouped(backend, [f for f in factors if f.axes])
    sparse = [f for f in arrays if isinstance(f.array, Coo)]
    if sparse:
        others = [_densified(backend, f) for f in arrays if f is not sparse[0]]
        out = _sparse_sum(backend, sparse[0], others, tuple(keep))
    elif len(arrays) == 1 and arrays[0].axes == tuple(keep):
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


def _sparse_sum(backend, sparse: Named, others: List[Named], keep: Tuple[int, ...]):
    """A sum of products with one sparse factor, over its rows only."""
    if len(others) == 1:
        product = _matmul(backend, sparse, others[0], keep)
        if product is not None:
            return product
    return _gathered(backend, sparse, others, keep)


def _matmul(backend, sparse: Named, other: Named, keep: Tuple[int, ...]):
    """sum over the sparse axes that are not kept, of sparse x dense: a sparse-dense matrix product
    (TensorFlow's own kernel, and its gradient), the sparse tensor seen as a matrix of its kept
    axes by the axes it contracts with the other factor. None when the product is not that shape."""
    coo, own = sparse.array, sparse.axes
    carried = [a for a in own if a in keep]
    contracted = [a for a in own if a not in keep]
    rest = [a for a in other.axes if a not in own]
    if (
        not contracted
        or any(a in other.axes for a in carried)
        or any(a not in other.axes for a in contracted)
        or any(a not in carried + rest for a in keep)
    ):
        return None
    sizes = {a: int(coo.shape[own.index(a)]) for a in own}
    sizes.update({a: size(other.array, other.axes.index(a)) for a in rest})
    rows, n_rows = _ravel(coo.host, [own.index(a) for a in carried], [sizes[a] for a in carried])
    cols, n_cols = _ravel(
        coo.host, [own.index(a) for a in contracted], [sizes[a] for a in contracted]
    )
    values = coo.values
    order = np.argsort(rows * n_cols + cols, kind="stable")  # the product wants row-major entries
    if (order != np.arange(len(order))).any():
        rows, cols, values = rows[order], cols[order], backend.take(values, order)
    matrix = other.array
    laid = [other.axes.index(a) for a in contracted + rest]
    if laid != list(range(len(laid))):
        matrix = backend.transpose(matrix, laid)
    n_rest = int(np.prod([sizes[a] for a in rest])) if rest else 1
    matrix = backend.reshape(matrix, [n_cols, n_rest])
    product = backend.sparse_matmul(rows, cols, values, n_rows, matrix)
    product = backend.reshape(product, [sizes[a] for a in carried + rest])
    return reduce_to(backend, Named(product, tuple(carried + rest)), keep).array


def _ravel(host, positions: List[int], sizes: List[int]):
    """Row-major positions of the sparse rows over some of its axes (0 for none), and how many."""
    flat = np.zeros(len(host), np.int64)
    for p, d in zip(positions, sizes):
        flat = flat * d + host[:, p]
    return flat, int(np.prod(sizes)) if sizes else 1


def _gathered(backend, sparse: Named, others: List[Named], keep: Tuple[int, ...]):
    """The general case: every other factor is read at the sparse rows along the axes it shares with
    them (gather), one einsum multiplies along the rows, and the rows are summed into the kept axes
    they carry (a segment sum)."""
    coo, own = sparse.array, sparse.axes
    axes = dict.fromkeys(a for f in [sparse, *others] for a in f.axes)
    letters = {a: string.ascii_letters[i] for i, a in enumerate(axes)}
    row = string.ascii_letters[len(axes)]  # the axis of the sparse rows
    specs, operands = [row], [coo.values]
    for f in others:
        shared = [a for a in f.axes if a in own]
        rest = [a for a in f.axes if a not in own]
        array = f.array
        if shared:
            order = [f.axes.index(a) for a in shared + rest]
            if order != list(range(len(order))):
                array = backend.transpose(array, order)
            at = coo.host[:, [own.index(a) for a in shared]]
            array = backend.gather(array, backend.integers(at))
        specs.append((row if shared else "") + "".join(letters[a] for a in rest))
        operands.append(array)
    carried = [a for a in keep if a in own]  # kept axes the rows carry
    free = [a for a in keep if a not in own]
    tail = "".join(letters[a] for a in free)
    if not carried:
        return backend.einsum(",".join(specs) + "->" + tail, *operands)
    per_row = backend.einsum(",".join(specs) + "->" + row + tail, *operands)
    sizes = [int(coo.shape[own.index(a)]) for a in carried]
    ids, n = _ravel(coo.host, [own.index(a) for a in carried], sizes)
    summed = backend.segment_sum(per_row, backend.integers(ids), n)
    summed = backend.reshape(summed, sizes + [size(per_row, 1 + i) for i in range(len(free))])
    order = carried + free
    if order != list(keep):
        summed = backend.transpose(summed, [order.index(a) for a in keep])
    return summed
