"""The tensor view of a sql4ml program's translated part (design section 8).

A relation is a set of tensors over its key columns (the columns it is joined or grouped on) plus a
mask of the rows that exist. In a SELECT, every alias's key columns become axis variables; equality
joins make two variables one; an expression without aggregate is elementwise over the variables it
reads; an aggregate sums (einsum) over the variables not grouped by, weighted by the rows that
exist. Domains (the values an axis runs over) are shared by columns that are ever equated.
"""

from dataclasses import dataclass
from typing import Any, Collection, Dict, List, Mapping, Optional, Tuple

import numpy as np

from dbt.adapters.sqlflow.sql4ml.program import (
    Program,
    ProgramError,
    _arg,
    position,
    referenced_tables,
)
from dbt.adapters.sqlflow.sql4ml.tensors import (
    Coo,
    Named,
    NumpyBackend,
    Tensor,
    align,
    dense,
    multiply,
    reduce_to,
    size,
)

SUPPORTED = (
    "+ - * /, unary minus, numeric constants, exp, ln/log, power/pow, sqrt, abs, greatest, least, "
    "sum, avg, count, CASE WHEN over data columns, casts, scalar subqueries, equality joins, "
    "GROUP BY"
)

# a data relation is kept sparse on a full batch when its rows fill at most this share of its dense
# box and the box has at least this many cells (below that, dense einsum is as fast and simpler);
# measured in bench/sql4ml.py
SPARSE_DENSITY = 0.1
SPARSE_MIN_CELLS = 100_000


class _Sets:
    """Union-find over hashable items."""

    def __init__(self):
        self.parent: Dict[Any, Any] = {}

    def find(self, x):
        self.parent.setdefault(x, x)
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a, b):
        self.parent[self.find(a)] = self.find(b)


@dataclass(frozen=True)
class NotNumeric:
    """A data column that is not a number (text, dates): it may be a key, never a value."""

    relation: str
    column: str


@dataclass
class Relation:
    keys: List[str]  # key column names, the order of the tensors' axes
    values: Dict[str, Any]  # value column -> array over keys
    mask: Any  # 1.0 where a row exists, over keys
    kind: str = (
        "derived"  # 'data' (values are 0 where no row), 'weight' (every row exists), 'derived'
    )


def _equalities(on, scope: str = "", text: str = "") -> List[Tuple[Any, Any]]:
    from sqlglot import exp

    if on is None:
        return []
    if isinstance(on, exp.And):
        return _equalities(on.left, scope, text) + _equalities(on.right, scope, text)
    if (
        isinstance(on, exp.EQ)
        and isinstance(on.left, exp.Column)
        and isinstance(on.right, exp.Column)
    ):
        return [(on.left, on.right)]
    raise ProgramError(
        f"join condition {on.sql()} in {scope} ({position(text, on)}) is not supported in the part "
        f"that depends on a weight: joins there are equalities of columns combined with AND; "
        f"filter or compute in a data CTE."
    )


def _aggregates(node) -> bool:
    """Whether an expression aggregates, not counting the scalar subqueries inside it."""
    from sqlglot import exp

    if isinstance(node, exp.Subquery):
        return False
    if isinstance(node, exp.AggFunc):
        return True
    return any(_aggregates(child) for child in node.iter_expressions())


# Clauses the translated part does not evaluate: refused rather than ignored.
_UNSUPPORTED_CLAUSES = {
    "where": "WHERE",
    "having": "HAVING",
    "order": "ORDER BY",
    "limit": "LIMIT",
    "offset": "OFFSET",
    "distinct": "DISTINCT",
    "qualify": "QUALIFY",
}


def _check_clauses(select, scope: str, text: str) -> None:
    for arg, clause in _UNSUPPORTED_CLAUSES.items():
        node = select.args.get(arg)
        if node:
            raise ProgramError(
                f"{clause} in {scope} ({position(text, node)}) is not supported in the part of the "
                f"program that depends on a weight: filter or order in a data CTE (one that reads no "
                f"weight), or write the condition as CASE WHEN."
            )
    for join in select.args.get("joins") or []:
        if join.side or join.kind not in ("", "INNER", "CROSS"):
            raise ProgramError(
                f"{' '.join(p for p in (join.side, join.kind) if p)} JOIN in {scope} "
                f"({position(text, join)}) is not supported in the part of the program that depends "
                f"on a weight: only inner equality joins and cross joins align tensors."
            )


def _sources(select, scope: str = "", text: str = "") -> List[Tuple[str, str]]:
    """(alias, relation) of the FROM and every join."""
    from sqlglot import exp

    _check_clauses(select, scope, text)

    tables = []
    from_ = _arg(select, "from")
    for node in ([from_.this] if from_ is not None else []) + [
        j.this for j in select.args.get("joins") or []
    ]:
        if not isinstance(node, exp.Table):
            raise ProgramError(
                f"{node.sql()[:60]} in the FROM of {scope} ({position(text, node)}) is not supported: "
                f"read CTEs or weights by name (put a derived table in a CTE of its own)."
            )
        tables.append(((node.alias or node.name).lower(), node.name.lower()))
    return tables


def _distinct(values: np.ndarray) -> np.ndarray:
    """Sorted distinct values; text through a Python set (several times faster than np.unique on
    objects, so that the translation hardly grows with the number of one-hot features)."""
    if values.dtype == object:
        return np.array(sorted(set(values.tolist())), dtype=object)
    return np.unique(values)


def _clip(select, width: int = 90) -> str:
    text = " ".join(select.sql(dialect="postgres").split())
    return text if len(text) <= width else text[: width - 3] + "..."


def _construct(node) -> str:
    """What a user would call an unsupported node."""
    from sqlglot import exp

    if isinstance(node, exp.Window):
        return "a window function"
    if isinstance(node, exp.Anonymous):
        return f"the function {node.name}()"
    if isinstance(node, exp.WithinGroup):
        return f"the ordered-set aggregate {node.this.sql_name().lower()}()"
    if isinstance(node, exp.Func):
        return f"the function {node.sql_name().lower()}()"
    return type(node).__name__.upper()


class Translation:
    """Keys and domains of every relation, found once; `evaluate` then runs the program on weights."""

    def __init__(self, program: Program, data: Mapping[str, Mapping[str, np.ndarray]]):
        self.program = program
        self.data = {
            k.lower(): {c.lower(): v for c, v in cols.items()} for k, cols in data.items()
        }
        self.keys: Dict[str, List[str]] = {w.name: list(w.index) for w in program.weights.values()}
        self.classes = _Sets()
        for name, select in program.scopes():
            self._scan(name, select)
            for table in referenced_tables(select):  # a data relation read whole: no axes
                if table in program.data:
                    self.keys.setdefault(table, [])
        self.domains = self._domains()
        # data-only row counts, computed once while training on a full batch (see _Scope._rows)
        self.frozen: Optional[Dict[Any, np.ndarray]] = None
        self.numpy = NumpyBackend()

    # ---- the first pass: which columns are keys, which columns share a domain

    def _scan(self, scope: str, select, top: bool = True) -> None:
        from sqlglot import exp

        text = self.program.text
        aliases = dict(_sources(select, scope, text))
        # grouped keys first: they become the leading axes (the observations, typically), so a
        # product summed over the features is a plain matrix-vector product in memory order
        group = _arg(select, "group")
        grouped = [self._column(scope, aliases, c) for c in (group.expressions if group else [])]
        for relation, column in grouped:
            self._key(relation, column)
        for join in select.args.get("joins") or []:
            for left, right in _equalities(join.args.get("on"), scope, text):
                a, b = self._column(scope, aliases, left), self._column(scope, aliases, right)
                self._key(*a)
                self._key(*b)
                self.classes.union(a, b)
        out_keys = []
        for e in select.expressions:
            inner = e.this if isinstance(e, exp.Alias) else e
            if isinstance(inner, exp.Column):
                source = self._column(scope, aliases, inner)
                if source in grouped or (not group and source[1] in self.keys.get(source[0], [])):
                    out_keys.append((e.alias_or_name.lower(), source))
        if top and scope in self.program.ctes:
            self.keys[scope] = [name for name, _ in out_keys]
            for name, source in out_keys:
                self.classes.union((scope, name), source)
        for sub in select.find_all(exp.Subquery):
            if sub.this is not select and isinstance(sub.this, exp.Select):
                self._scan(scope, sub.this, top=False)

    def _key(self, relation: str, column: str) -> None:
        keys = self.keys.setdefault(relation, [])
        if column not in keys:
            keys.append(column)

    def _column(self, scope: str, aliases: Mapping[str, str], column) -> Tuple[str, str]:
        table = column.table.lower() if column.table else None
        if table is None:
            if len(aliases) != 1:
                raise ProgramError(
                    f"column {column.name} in {scope} ({position(self.program.text, column)}) "
                    f"needs its table alias: the FROM has {len(aliases)} relations."
                )
            table = next(iter(aliases))
        if table not in aliases:
            raise ProgramError(f"{column.sql()} in {scope} names no relation of its FROM.")
        return aliases[table], column.name.lower()

    def _domains(self) -> Dict[Any, np.ndarray]:
        """Sorted distinct values per class of equated columns (from the data), or 0..n-1 from `size`."""
        members: Dict[Any, List[Tuple[str, str]]] = {}
        for relation, keys in self.keys.items():
            for key in keys:
                members.setdefault(self.classes.find((relation, key)), []).append((relation, key))
        domains = {}
        for root, columns in members.items():
            values = [self.data[r][c] for r, c in columns if r in self.data and c in self.data[r]]
            sizes = {
                self.program.weights[r].size[c]
                for r, c in columns
                if r in self.program.weights and c in self.program.weights[r].size
            }
            if values and sizes:
                raise ProgramError(
                    f"index {columns[0][1]} has a size in config and values in the data; give one."
                )
            if len(sizes) > 1:
                raise ProgramError(f"index {columns[0][1]} is given two sizes: {sorted(sizes)}.")
            if not values and not sizes:
                names = ", ".join(f"{r}.{c}" for r, c in columns)
                raise ProgramError(
                    f"index {names} has no domain: equate it with a data column, or give its "
                    f"size in weights (e.g. {{'index': [...], 'size': {{'{columns[0][1]}': 8}}}})."
                )
            if values:
                self._one_domain(columns, values)
            domains[root] = _distinct(np.concatenate(values)) if values else np.arange(sizes.pop())
        return domains

    def _one_domain(self, columns, values) -> None:
        """A weight's index equated with data columns that share no value (or not even a type) is two
        domains joined by mistake: `w.feature = f.feature and w.feature = s.store`."""
        weights = [f"{r}.{c}" for r, c in columns if r in self.program.weights]
        data = [
            (f"{r}.{c}", self.data[r][c])
            for r, c in columns
            if r in self.data and c in self.data[r]
        ]
        if not weights or len(data) < 2:
            return
        sets = [(name, set(np.asarray(v).tolist())) for name, v in data]
        for name, seen in sets[1:]:
            first, first_seen = sets[0]
            if seen and first_seen and not (seen & first_seen):
                raise ProgramError(
                    f"weight index {weights[0]} is joined to {first} and to {name}, which share no "
                    f"value: they are two different domains. Give each its own weight index."
                )

    def domain(self, relation: str, column: str) -> np.ndarray:
        return self.domains[self.classes.find((relation, column))]

    def batch_axes(self, key: Optional[str]) -> Tuple[Dict[str, int], int]:
        """For mini-batches: the axis of `key` in every data relation that has it, and its length."""
        if not key:
            raise ProgramError(
                "batch_size > 0 cuts mini-batches along the observations: name their key column "
                "with config(key='obs_id'), or use batch_size=0 (full batch)."
            )
        roots = {
            self.classes.find((r, key))
            for r in self.program.data
            if key in self.keys.get(r, []) and r in self.data
        }
        if len(roots) != 1:
            raise ProgramError(
                f"key '{key}' is not a key column of the data the objective reads (keys: "
                f"{', '.join(sorted({k for r in self.program.data for k in self.keys.get(r, [])}))}); "
                f"name the observations' id column."
            )
        root = roots.pop()
        for w, spec in self.program.weights.items():
            if any(self.classes.find((w, c)) == root for c in spec.index):
                raise ProgramError(
                    f"weight '{w}' is indexed by the key '{key}', so mini-batches cannot cut it; "
                    f"use batch_size=0."
                )
        axes = {}
        for r in self.program.data:
            found = [
                i for i, k in enumerate(self.keys.get(r, [])) if self.classes.find((r, k)) == root
            ]
            if len(found) > 1:
                raise ProgramError(
                    f"data relation {r} has '{key}' twice among its keys; use batch_size=0."
                )
            if found and r in self.data:
                axes[r] = found[0]
        return axes, len(self.domains[root])

    def zero_weights(self) -> Dict[str, np.ndarray]:
        return {n: np.zeros(self.weight_shape(n)) for n in self.program.weights}

    def weight_shape(self, name: str) -> Tuple[int, ...]:
        return tuple(len(self.domain(name, c)) for c in self.program.weights[name].index)

    # ---- evaluation

    def data_keys(self) -> Dict[str, List[str]]:
        """The data CTEs the translated part reads, with their key columns (the tensors' axes)."""
        return {n: self.keys[n] for n in self.program.data if n in self.keys}

    def dense_bytes(self, sparse: Collection[str] = ()) -> int:
        """What the data tensors take in memory: a value tensor per numeric column and a mask, over
        the product of the key domains (a long relation of n rows can be far larger dense), or per
        row with its coordinates for the relations in `sparse`."""
        total = 0
        for name, keys in self.data_keys().items():
            columns = 1 + len(self.value_columns(name))
            if name in sparse:
                total += 8 * self.rows(name) * (columns + len(keys))
            else:
                total += 8 * self.cells(name) * columns
        return total

    def cells(self, name: str) -> int:
        keys = self.keys[name]
        return int(np.prod([len(self.domain(name, k)) for k in keys])) if keys else 1

    def rows(self, name: str) -> int:
        columns = self.data.get(name) or {}
        return len(next(iter(columns.values()))) if columns else 0

    def sparse_names(self, mode: Any = "auto") -> List[str]:
        """The data relations kept sparse while training on a full batch: with 'auto' those whose
        rows fill at most SPARSE_DENSITY of their dense box when the box is large enough to matter
        (long-format one-hot features); every keyed relation with True; none with False."""
        if mode is False or mode == "false":
            return []
        keyed = [n for n, keys in self.data_keys().items() if keys and n in self.data]
        if mode is True or mode == "true":
            return keyed
        return [
            n
            for n in keyed
            if self.cells(n) >= SPARSE_MIN_CELLS and self.rows(n) <= SPARSE_DENSITY * self.cells(n)
        ]

    def value_columns(self, name: str) -> List[str]:
        keys = self.keys[name]
        return [
            c
            for c, v in self.data[name].items()
            if c not in keys and np.asarray(v).dtype.kind in "biuf"
        ]

    def data_relations(self, backend, sparse: Collection[str] = ()) -> Dict[str, Relation]:
        """The data CTEs the translated part reads, scattered into tensors over their keys: dense,
        or for the relations in `sparse` a Coo of their rows."""
        out = {}
        for name in self.data_keys():
            columns = self.data.get(name)
            if columns is None:
                raise ProgramError(f"no rows were read for data relation {name}.")
            out[name] = self.scatter(backend, name, columns, sparse=name in sparse)
        return out

    def scatter(
        self,
        backend,
        name: str,
        columns: Mapping[str, np.ndarray],
        batch=None,
        sparse: bool = False,
    ) -> Relation:
        """One data relation's rows as dense tensors over its keys' domains; `batch` = (key column,
        its values in batch order) replaces that key's domain by the batch's (a streamed mini-batch).
        With `sparse` the tensors are Coo over the rows (in row-major order), not dense boxes."""
        keys = self.keys[name]
        rows = len(next(iter(columns.values()))) if columns else 0
        if not keys:  # read whole, as a scalar subquery
            if rows != 1:
                raise ProgramError(
                    f"data relation {name} is read as one value but has {rows} rows; make it "
                    f"return one row, or join it on its key columns."
                )
            index: Tuple = ()
            shape: Tuple[int, ...] = ()
            mask = np.ones(())
        else:
            index = tuple(self._positions(name, k, columns[k], batch) for k in keys)
            shape = tuple(
                len(batch[1]) if batch and k == batch[0] else len(self.domain(name, k))
                for k in keys
            )
            flat = np.ravel_multi_index(index, shape) if rows else np.zeros(0, np.int64)
            if len(np.unique(flat)) < len(flat):
                raise ProgramError(
                    f"data relation {name} has more than one row for some ({', '.join(keys)}); "
                    f"its key columns must identify its rows (aggregate it, or group by more)."
                )
            if sparse:
                return self._sparse(backend, name, columns, index, shape, np.argsort(flat))
            mask = np.zeros(shape)
            mask[index] = 1.0
        values: Dict[str, Any] = {}
        for column, array in columns.items():
            if column in keys:
                continue
            if np.asarray(array).dtype.kind not in "biuf":
                values[column] = NotNumeric(name, column)  # an error only where it is read
                continue
            numbers = np.asarray(array, np.float64)
            dense = np.zeros(shape) if keys else numbers[0]
            if keys:
                dense[index] = numbers
            values[column] = backend.constant(dense)
        return Relation(keys, values, backend.constant(mask), "data")

    def _sparse(self, backend, name, columns, index, shape, order) -> Relation:
        keys = self.keys[name]
        host = np.stack([i[order] for i in index], axis=1).astype(np.int64)
        coords = backend.integers(host)

        def coo(values) -> Coo:
            return Coo(
                coords, backend.constant(np.asarray(values, np.float64)[order]), shape, host
            )

        values: Dict[str, Any] = {
            c: coo(a) if np.asarray(a).dtype.kind in "biuf" else NotNumeric(name, c)
            for c, a in columns.items()
            if c not in keys
        }
        return Relation(keys, values, coo(np.ones(len(order))), "data")

    def _positions(self, name: str, key: str, values: np.ndarray, batch) -> np.ndarray:
        if batch and key == batch[0]:  # the batch's own order, as tf.gather would lay it out
            order = np.argsort(batch[1], kind="stable")
            return order[np.searchsorted(batch[1], values, sorter=order)]
        return np.searchsorted(self.domain(name, key), values)

    def relations(
        self, backend, weights: Mapping[str, Any], data: Optional[Dict[str, Relation]] = None
    ) -> Dict[str, Relation]:
        """Every relation of the program for these weights: data, weights and translated CTEs."""
        relations = dict(data if data is not None else self.data_relations(backend))
        for name, spec in self.program.weights.items():
            relations[name] = Relation(
                list(spec.index),
                {"value": weights[name]},
                backend.ones(self.weight_shape(name)),
                "weight",
            )
        section = getattr(backend, "section", None)  # the code generator's comments
        for name in self.program.model:
            if section:
                section(f"{name}: {_clip(self.program.ctes[name])}")
            relations[name] = _Scope(self, backend, relations, name).relation(
                self.program.ctes[name]
            )
        if section:
            section(f"the objective: {_clip(self.program.final)}")
        return relations

    def evaluate(
        self, backend, weights: Mapping[str, Any], data: Optional[Dict[str, Relation]] = None
    ):
        """The objective (a 0-d tensor) for these weight arrays (shaped as `weight_shape`)."""
        relations = self.relations(backend, weights, data)
        result = _Scope(self, backend, relations, "the objective").relation(self.program.final)
        if result.keys or len(result.values) != 1:
            raise ProgramError(
                f"the objective ({position(self.program.text, self.program.final)}) must be one "
                f"scalar: the final SELECT returns one aggregate (e.g. avg(...)) with no GROUP BY; "
                f"it returns {len(result.values)} value(s) over {len(result.keys)} key(s)."
            )
        return next(iter(result.values.values()))

    def predictions(self, backend, weights, name: str) -> Dict[tuple, float]:
        """A translated CTE's value per existing key tuple (its rows), e.g. the prediction's."""
        relation = self.relations(backend, weights)[name]
        mask = np.asarray(relation.mask)
        (value,) = [np.asarray(v) for v in relation.values.values()]
        domains = [self.domain(name, k) for k in relation.keys]
        return {
            tuple(
                d[i].item() if hasattr(d[i], "item") else d[i] for d, i in zip(domains, at)
            ): float(value[at])
            for at in zip(*np.nonzero(mask))
        }


class _Scope:
    """One SELECT: its aliases' tensors over this scope's axis variables."""

    def __init__(
        self, translation: Translation, backend, relations: Mapping[str, Relation], name: str
    ):
        self.t, self.backend, self.relations, self.name = translation, backend, relations, name

    def relation(self, select) -> Relation:
        from sqlglot import exp

        text = self.t.program.text
        sources = _sources(select, self.name, text)
        variables = _Sets()
        for join in select.args.get("joins") or []:
            for left, right in _equalities(join.args.get("on"), self.name, text):
                variables.union(self._var(sources, left), self._var(sources, right))
        self.var = lambda column: variables.find(self._var(sources, column))  # noqa: E731
        self.aliases, self.sizes = {}, {}
        mask: Optional[Tensor] = None
        for alias, name in sources:
            rel = self.relations[name]
            axes = tuple(variables.find((alias, k)) for k in rel.keys)
            self.aliases[alias] = (rel, axes)
            self.sizes.update({a: size(rel.mask, i) for i, a in enumerate(axes)})
            tag = {"data": ("mask", alias, name), "weight": ("ones", name)}.get(rel.kind)
            rows = Named(rel.mask, axes, tag)
            mask = rows if mask is None else multiply(mask, rows)
        mask = mask if mask is not None else Named(self.backend.constant(1.0), ())
        self.mask = mask
        group = _arg(select, "group")
        self.grouped = [self.var(c) for c in group.expressions] if group else None
        if self.grouped is None and any(_aggregates(e) for e in select.expressions):
            self.grouped = []  # aggregates without GROUP BY: one group of all rows
        keys, values = [], {}
        for e in select.expressions:
            inner = e.this if isinstance(e, exp.Alias) else e
            name = e.alias_or_name.lower()
            if isinstance(inner, exp.Column) and name in self.t.keys.get(self.name, []):
                keys.append((name, self.var(inner)))
                continue
            values[name] = self.expr(inner)
        out_axes = tuple(v for _, v in keys)
        arrays = {n: self._lay(v, out_axes) for n, v in values.items()}
        if self.grouped is not None:  # a group exists where it has at least one row
            row_mask = self.backend.apply("least", self._rows(mask, out_axes).array, 1.0)
        else:
            row_mask = self._lay(mask, out_axes)
        return Relation([n for n, _ in keys], arrays, row_mask)

    def _var(self, sources, column):
        table = column.table.lower() if column.table else sources[0][0]
        return (table, column.name.lower())

    def _rows(self, mask, keep) -> Named:
        """How many rows each group of `keep` has: data only, so with frozen data (full batch) it is
        computed once and then a constant, not an einsum over the data at every step."""
        frozen = self.t.frozen
        if frozen is None:
            return reduce_to(self.backend, mask, keep)
        key = (
            self.name,
            tuple((f.tag, f.axes) for f in getattr(mask, "factors", (mask,))),
            tuple(keep),
        )
        if key not in frozen:
            frozen[key] = np.asarray(reduce_to(self.t.numpy, mask, keep).array)  # type: ignore[arg-type]
        return Named(self.backend.constant(frozen[key]), tuple(keep))

    def _lay(self, tensor, axes: Tuple) -> Any:
        """The tensor over exactly `axes`, in that order, broadcast where it lacks one of them."""
        tensor = dense(self.backend, tensor)
        if any(a not in axes for a in tensor.axes):
            raise ProgramError(
                f"in {self.name}, a selected value varies over a column that is neither "
                f"selected nor grouped by; aggregate it or select that column."
            )
        if not axes:
            return tensor.array
        if tuple(tensor.axes) == tuple(axes):
            return tensor.array
        shape = [self.sizes[a] for a in axes]
        (x, ones), union = align(
            self.backend, tensor, Named(self.backend.ones(shape), tuple(axes))
        )
        return self.backend.transpose(x * ones, [union.index(a) for a in axes])

    # ---- expressions

    def expr(self, node) -> Tensor:
        from sqlglot import exp

        b = self.backend
        if isinstance(node, exp.Mul):  # kept as factors: a sum over them is one einsum
            return multiply(self.expr(node.left), self.expr(node.right))
        binary = {
            exp.Add: lambda x, y: x + y,
            exp.Sub: lambda x, y: x - y,
            exp.Div: lambda x, y: x / y,
        }
        for kind, op in binary.items():
            if isinstance(node, kind):
                (x, y), axes = align(b, self.expr(node.left), self.expr(node.right))
                return Named(op(x, y), axes)
        if isinstance(node, (exp.Paren, exp.Cast)):
            return self.expr(node.this)
        if isinstance(node, exp.Neg):
            inner = dense(b, self.expr(node.this))
            return Named(-inner.array, inner.axes)
        if isinstance(node, exp.Literal) and not node.is_string:
            return Named(b.constant(float(node.this)), ())
        if isinstance(node, exp.Column):
            return self._column(node)
        if isinstance(node, exp.Subquery):
            return self._scalar(node.this)
        if isinstance(node, (exp.Sum, exp.Avg, exp.Count)):
            return self._aggregate(node)
        functions = {exp.Exp: "exp", exp.Ln: "ln", exp.Sqrt: "sqrt", exp.Abs: "abs"}
        for function, name in functions.items():
            if isinstance(node, function):
                inner = dense(b, self.expr(node.this))
                return Named(b.apply(name, inner.array), inner.axes)
        if isinstance(node, exp.Log):  # PostgreSQL: log(x) is base 10, log(b, x) base b
            base, value = (node.this, node.expression) if node.expression else (None, node.this)
            inner = dense(b, self.expr(value))
            ln_base = b.constant(np.log(10.0))
            if base is not None:
                (x, y), axes = align(b, inner, self.expr(base))
                return Named(b.apply("ln", x) / b.apply("ln", y), axes)
            return Named(b.apply("ln", inner.array) / ln_base, inner.axes)
        if isinstance(node, exp.Case):
            return self._case(node)
        if isinstance(node, exp.Pow):
            exponent = node.expression
            if (
                isinstance(exponent, exp.Literal)
                and not exponent.is_string
                and float(exponent.this) == 2
            ):
                base = self.expr(node.this)  # squares: a product (a cheaper gradient)
                base = base if isinstance(base, Named) else dense(b, base)
                return multiply(base, base)
            (x, y), axes = align(b, self.expr(node.this), self.expr(exponent))
            return Named(b.apply("power", x, y), axes)
        if isinstance(node, (exp.Greatest, exp.Least)):
            name = "greatest" if isinstance(node, exp.Greatest) else "least"
            result = self.expr(node.this)
            for other in node.expressions:
                (x, y), axes = align(b, result, self.expr(other))
                result = Named(b.apply(name, x, y), axes)
            return result
        raise ProgramError(
            f"{_construct(node)} ({node.sql(dialect='postgres')[:60]}) in {self.name}, "
            f"{position(self.t.program.text, node)}, is not supported in the part of the program "
            f"that depends on a weight. Compute it in a data CTE (one that reads no weight), or "
            f"write it with what is supported: {SUPPORTED}."
        )

    def _case(self, node) -> Tensor:
        """CASE WHEN over data: the first branch whose condition holds, else the default (or 0)."""
        b = self.backend
        result = (
            self.expr(node.args["default"])
            if node.args.get("default")
            else Named(b.constant(0.0), ())
        )
        for branch in reversed(node.args["ifs"]):
            condition, value = self._condition(branch.this), self.expr(branch.args["true"])
            (c, x, y), axes = align(b, condition, value, result)
            result = Named(b.where(c, x, y), axes)
        return result

    def _condition(self, node) -> Named:
        from sqlglot import exp

        b = self.backend
        comparisons = {
            exp.EQ: lambda x, y: x == y,
            exp.NEQ: lambda x, y: x != y,
            exp.GT: lambda x, y: x > y,
            exp.GTE: lambda x, y: x >= y,
            exp.LT: lambda x, y: x < y,
            exp.LTE: lambda x, y: x <= y,
        }
        for kind, op in comparisons.items():
            if isinstance(node, kind):
                (x, y), axes = align(b, self.expr(node.this), self.expr(node.expression))
                return Named(op(x, y), axes)
        if isinstance(node, (exp.And, exp.Or)):
            (x, y), axes = align(b, self._condition(node.this), self._condition(node.expression))
            both = (x & y) if isinstance(node, exp.And) else (x | y)
            return Named(both, axes)
        if isinstance(node, exp.Not):
            inner = dense(b, self._condition(node.this))
            return Named(~inner.array, inner.axes)
        if isinstance(node, exp.Paren):
            return self._condition(node.this)
        raise ProgramError(
            f"condition {node.sql(dialect='postgres')[:60]} in {self.name} is not supported: "
            f"compare numbers with = <> < <= > >=, combined with AND, OR, NOT."
        )

    def _column(self, node) -> Named:
        table = node.table.lower() if node.table else next(iter(self.aliases))
        if table not in self.aliases:
            raise ProgramError(f"{node.sql()} in {self.name} names no relation of its FROM.")
        relation, axes = self.aliases[table]
        tag = ("value", table) if relation.kind == "data" else None
        name = node.name.lower()
        if name in relation.keys:
            raise ProgramError(
                f"{node.sql()} in {self.name} is a key column; only value columns are numbers "
                f"in expressions."
            )
        if name not in relation.values:
            raise ProgramError(
                f"{node.sql()} in {self.name}: the relation has no value column {name} "
                f"(columns: {', '.join(relation.keys + list(relation.values))})."
            )
        if isinstance(relation.values[name], NotNumeric):
            raise ProgramError(
                f"{node.sql()} in {self.name} ({position(self.t.program.text, node)}) is text (or "
                f"another non-number) where a number is needed: cast it in the data CTE "
                f"({relation.values[name].relation}), or join or group on it to make it a key."
            )
        return Named(relation.values[name], axes, tag)

    def _scalar(self, select) -> Named:
        relation = _Scope(self.t, self.backend, self.relations, self.name).relation(select)
        if relation.keys or len(relation.values) != 1:
            raise ProgramError(f"a scalar subquery in {self.name} must return one value.")
        return Named(next(iter(relation.values.values())), ())

    def _aggregate(self, node) -> Named:
        from sqlglot import exp

        keep = tuple(self.grouped or ())
        counted = self._rows(self.mask, keep)
        if isinstance(node, exp.Count):
            return counted
        total = reduce_to(self.backend, multiply(self.expr(node.this), self.mask), keep)
        if isinstance(node, exp.Sum):
            return total
        return Named(total.array / counted.array, keep)
