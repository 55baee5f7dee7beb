"""SQLFlow's feature columns (`NUMERIC(field, n[, delimiter])`, `CATEGORY_ID(field, n[, delimiter])`)
as a SELECT around the node's rows. Training stores the specs with the version (option
`feature_columns`), and every scoring path wraps its SELECT the same way, so a model trained on
`NUMERIC(v, 4, ',')` scores rows that carry the same text column.

- `NUMERIC(f, 1)`: the column itself (a number).
- `NUMERIC(f, n[, d])`, n > 1: a text column of n numbers split on d (default ','): f_0 .. f_{n-1}.
- `CATEGORY_ID(f, n)`: the column as categories (ids 0..n-1, text), whatever its type.
- `CATEGORY_ID(f, n, d)`: a text list of ids: n 0/1 columns f_0 .. f_{n-1} (multi-hot).
- `EMBEDDING(CATEGORY_ID(...), dim[, combiner])`: the CATEGORY_ID's columns, which a DNN's first
  layer then maps to `dim` learned numbers (an embedding: one row per id, summed over a row's ids).
"""

from typing import List, Sequence, Tuple

from dbt.adapters.sqlflow.data.pgtypes import quote_ident
from dbt.adapters.sqlflow.errors import OptionError
from dbt.adapters.sqlflow.statements.parse import ColumnSpec, StatementError

SUPPORTED = (
    "plain column names, NUMERIC(field, n[, delimiter]), CATEGORY_ID(field, n[, delimiter]) and "
    "EMBEDDING(CATEGORY_ID(...), dim[, combiner])"
)
COMBINERS = ("sum", "mean", "sqrtn")


def parse_spec(text: str) -> ColumnSpec:
    """One feature column written as in SQLFlow's COLUMN clause."""
    from sqlglot.dialects.dialect import Dialect

    from dbt.adapters.sqlflow.statements.parse import _Parser

    tokens = Dialect.get_or_raise("postgres").tokenize(text)
    parser = _Parser(tokens, 0, "train")
    try:
        spec = parser.column()
    except StatementError:
        raise OptionError(f"feature_columns: cannot read {text!r}; write {SUPPORTED}.") from None
    if parser.peek() is not None:
        raise OptionError(f"feature_columns: {text!r} is more than one column; list each apart.")
    return spec


def _args(spec: ColumnSpec) -> Tuple[str, int, str]:
    """(field, n, delimiter) of NUMERIC / CATEGORY_ID, checked."""
    if spec.function not in ("NUMERIC", "CATEGORY_ID"):
        raise OptionError(_unsupported(spec))
    args = spec.args
    if not 2 <= len(args) <= 3 or not isinstance(args[0], str):
        raise OptionError(f"{spec} takes (field, n[, delimiter]).")
    n = args[1]
    if isinstance(n, list) and len(n) == 1:  # SQLFlow allows a shape: NUMERIC(f, [4])
        n = n[0]
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise OptionError(f"{spec}: n must be a whole number >= 1, got {args[1]!r}.")
    delimiter = args[2] if len(args) == 3 else ""
    if not isinstance(delimiter, str):
        raise OptionError(f"{spec}: the delimiter is a string such as ','.")
    return args[0], n, delimiter


def embedding(spec: ColumnSpec) -> Tuple[ColumnSpec, int, str]:
    """(the CATEGORY_ID inside, dim, combiner) of an EMBEDDING column, checked."""
    args = spec.args
    if not 2 <= len(args) <= 3 or not isinstance(args[0], ColumnSpec):
        raise OptionError(f"{spec} takes (CATEGORY_ID(field, n[, delimiter]), dim[, combiner]).")
    inner, dim = args[0], args[1]
    if inner.function != "CATEGORY_ID":
        raise OptionError(f"{spec}: EMBEDDING embeds a CATEGORY_ID(...) column, not {inner}.")
    _args(inner)
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise OptionError(f"{spec}: the dimension must be a whole number >= 1, got {dim!r}.")
    combiner = str(args[2]).lower() if len(args) == 3 else "sum"
    if combiner not in COMBINERS:
        raise OptionError(f"{spec}: the combiner is sum, mean or sqrtn, got {args[2]!r}.")
    if combiner != "sum" and len(inner.args) == 3:
        raise OptionError(
            f"{spec}: a multi-valued CATEGORY_ID is embedded with combiner sum (its ids' vectors "
            f"added); mean and sqrtn are not supported."
        )
    return inner, dim, combiner


def _inner(spec: ColumnSpec) -> ColumnSpec:
    return embedding(spec)[0] if spec.function == "EMBEDDING" else spec


def embedding_blocks(specs: Sequence[str]) -> List[Tuple[List[str], int]]:
    """(the encoder features an EMBEDDING reads, dim) per EMBEDDING column."""
    out = []
    for text in specs or []:
        spec = parse_spec(text)
        if spec.function == "EMBEDDING":
            inner, dim, _ = embedding(spec)
            out.append((feature_names([str(inner)]), dim))
    return out


def _unsupported(spec: ColumnSpec) -> str:
    return (
        f"feature column {spec} is not supported; write {SUPPORTED} "
        f"(BUCKET, CROSS, SPARSE, INDICATOR and SEQ_CATEGORY_ID columns are not)."
    )


def feature_names(specs: Sequence[str]) -> List[str]:
    """The encoder's input columns the specs produce."""
    names: List[str] = []
    for text in specs:
        spec = _inner(parse_spec(text))
        if spec.function is None:
            names.append(spec.args[0])
            continue
        field, n, delimiter = _args(spec)
        expands = n > 1 if spec.function == "NUMERIC" else bool(delimiter)
        names += [f"{field}_{i}" for i in range(n)] if expands else [field]
    return names


def wrap(sql: str, columns: Sequence[str], specs: Sequence[str]) -> str:
    """The SELECT with the specs' columns computed from `columns` (the SELECT's own column names)."""
    replaced, added = {}, []
    for text in specs:
        spec = _inner(parse_spec(text))
        if spec.function is None:
            continue
        field, n, delimiter = _args(spec)
        if field not in columns:
            raise OptionError(
                f"{spec} reads column '{field}', which the SELECT does not return; its columns "
                f"are: {', '.join(columns)}."
            )
        src = f"__sqlflow_fc.{quote_ident(field)}"
        lit = "'" + (delimiter or ",").replace("'", "''") + "'"
        if spec.function == "NUMERIC" and n > 1:
            items = f"string_to_array(trim({src}::text), {lit})"
            added += [
                f"nullif(trim(({items})[{i + 1}]), '')::float8 as {quote_ident(f'{field}_{i}')}"
                for i in range(n)
            ]
        elif spec.function == "CATEGORY_ID" and delimiter:
            ids = f"string_to_array(trim({src}::text), {lit})"
            added += [
                f"coalesce(({i}::text = any(array(select trim(x) from unnest({ids}) as x)))::int, 0) "
                f"as {quote_ident(f'{field}_{i}')}"
                for i in range(n)
            ]
        elif spec.function == "CATEGORY_ID":
            replaced[field] = f"({src})::text as {quote_ident(field)}"
    if not replaced and not added:
        return sql
    kept = [replaced.get(c, f"__sqlflow_fc.{quote_ident(c)}") for c in columns]
    return f"select {', '.join(kept + added)} from (\n{sql.strip().rstrip(';')}\n) as __sqlflow_fc"


def out_of_range_sql(sql: str, specs: Sequence[str]) -> List[Tuple[str, str]]:
    """(spec, query counting its ids outside 0..n-1) for every CATEGORY_ID: SQLFlow's identity
    columns have n buckets, and an id past them is an error there too."""
    checks = []
    for text in specs:
        spec = _inner(parse_spec(text))
        if spec.function != "CATEGORY_ID":
            continue
        field, n, delimiter = _args(spec)
        column = f"__s.{quote_ident(field)}::text"
        ids = (
            f"(select trim(x) as id from unnest(string_to_array({column}, "
            f"'{delimiter.replace(chr(39), chr(39) * 2)}')) as x)"
            if delimiter
            else f"(select {column} as id)"
        )
        query = (
            f"select count(*) from (\n{sql.strip().rstrip(';')}\n) as __s, lateral {ids} as i "
            f"where i.id is not null and i.id <> '' and (i.id !~ '^[0-9]+$' or i.id::numeric >= {n})"
        )
        checks.append((str(spec), query))
    return checks
