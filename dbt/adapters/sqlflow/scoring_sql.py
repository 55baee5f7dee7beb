"""SQL that scores rows inside PostgreSQL: the encoder's features as expressions, then linear models
and k-means on top. Numbers are written as exact float8 literals (repr round-trips a double)."""

from typing import Dict, List, Sequence

import numpy as np

from dbt.adapters.sqlflow.data.pgtypes import quote_ident
from dbt.adapters.sqlflow.ml.preprocess import MISSING


def literal(value) -> str:
    if isinstance(value, (float, np.floating)):
        return f"{float(value)!r}::float8"
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    return "'" + str(value).replace("'", "''") + "'"


def continuous_value(column: str, kind: str) -> str:
    """The column as the encoder reads it: numbers as float8, dates as days, timestamps as seconds."""
    if kind == "date":
        return f"(({column} - date '1970-01-01')::float8)"
    if kind == "timestamp":
        return f"extract(epoch from {column})::float8"
    return f"({column})::float8"


def feature_expressions(encoder_state: Dict, kinds: Dict[str, str], alias: str) -> List[str]:
    """One SQL expression per encoded feature, before normalization (the raw value or a 0/1 flag)."""
    exprs = []
    for f in encoder_state["features"]:
        column = f"{alias}.{quote_ident(f['name'])}"
        if f["kind"] == "continuous":
            if not f.get("dropped"):
                exprs.append(
                    f"coalesce({continuous_value(column, kinds.get(f['name'], 'float'))}, {literal(f['impute'])})"
                )
            if f["indicator"]:
                exprs.append(f"({column} is null)::int")
            continue
        fill = MISSING if f["indicator"] else f["impute"]
        state = f"coalesce({column}::text, {literal(fill)})"
        exprs += [f"({state} = {literal(s)})::int" for s in f["states"]]
        if f["other"]:
            known = ", ".join(literal(s) for s in f["states"]) or "''"
            exprs.append(f"({state} not in ({known}))::int")
    return exprs


def non_finite(encoder_state: Dict, kinds: Dict[str, str], alias: str) -> str:
    """True where a continuous feature is NaN or +-Infinity: such rows get NULL predictions, as in
    Python (PostgreSQL sorts NaN above every number, so it would otherwise pick a class or cluster)."""
    checks = []
    for f in encoder_state["features"]:
        if f["kind"] == "continuous" and not f.get("dropped"):
            value = continuous_value(
                f"{alias}.{quote_ident(f['name'])}", kinds.get(f["name"], "float")
            )
            checks.append(f"{value} in ('NaN'::float8, 'Infinity'::float8, '-Infinity'::float8)")
    return f"coalesce({' or '.join(checks)}, false)" if checks else "false"


def linear_combination(weights: Sequence[float], exprs: Sequence[str], intercept: float) -> str:
    terms = [f"{literal(w)} * {e}" for w, e in zip(weights, exprs)]
    return " + ".join([literal(intercept)] + terms)


def fenced(select_list: Sequence[str], sql: str, alias: str) -> str:
    """A sub-select PostgreSQL will not flatten into its parent (OFFSET 0): each expression is
    computed once per row instead of once per use."""
    return f"(select {', '.join(select_list)} from (\n{sql.strip().rstrip(';')}\n) as {alias} offset 0)"
