"""Incremental scoring (`ml_predict`, incremental=true): the SELECT narrowed to the rows the table
lacks or holds from another model version, and the checks that make the delete+insert merge safe.
The materialization merges the scored rows into the table with dbt's own delete+insert."""

from typing import List

from dbt.adapters.sqlflow.data import describe
from dbt.adapters.sqlflow.data.pgtypes import quote_ident
from dbt.adapters.sqlflow.errors import InputError

MERGED_SCHEMA_CHANGES = ("append_new_columns", "sync_all_columns")


def _names(conn, relation: str) -> List[str]:
    return [c.name for c in describe(conn, f"select * from {relation}")]


def _check_key_columns(model_name: str, keys: List[str], names: List[str], what: str) -> None:
    absent = [k for k in keys if k not in names]
    if absent:
        raise InputError(
            f"unique_key {', '.join(repr(k) for k in absent)} is not a column of {what} "
            f"(its columns: {', '.join(names)}); set unique_key to the column(s) that identify a "
            f"row, or rebuild with dbt run -s {model_name} --full-refresh."
        )


def new_or_stale(conn, sql: str, table: str, keys: List[str], version: int, model_name: str):
    """The rows of `sql` whose key is not in `table`, or is there with a model_version other than
    `version` (a rollback or a new live version rescores them)."""
    _check_key_columns(model_name, keys, [c.name for c in describe(conn, sql)], "the SELECT")
    existing = _names(conn, table)
    _check_key_columns(model_name, keys + ["model_version"], existing, f"the table {table}")
    match = " and ".join(
        f"__sqlflow_old.{quote_ident(k)} = __sqlflow_new.{quote_ident(k)}" for k in keys
    )
    return (
        f"select __sqlflow_new.* from (\n{sql.strip().rstrip(';')}\n) as __sqlflow_new "
        f"where not exists (select 1 from {table} as __sqlflow_old where {match} "
        f"and __sqlflow_old.model_version = {int(version)})"
    )


def check_keys(conn, scored: str, keys: List[str], model_name: str) -> None:
    """NULL or repeated keys would be rescored on every run and pile up: refuse them."""
    _check_key_columns(model_name, keys, _names(conn, scored), "the SELECT's scored rows")
    columns = ", ".join(quote_ident(k) for k in keys)
    shown = f"{columns}::text" if len(keys) == 1 else f"row({columns})::text"
    with conn.cursor() as cur:
        cur.execute(
            f"select count(*) from {scored} where "
            + " or ".join(f"{quote_ident(k)} is null" for k in keys)
        )
        nulls = cur.fetchone()[0]
        cur.execute(
            f"select {shown}, count(*) from {scored} group by {columns} "
            f"having count(*) > 1 order by count(*) desc limit 3"
        )
        repeated = cur.fetchall()
    if nulls:
        raise InputError(
            f"unique_key ({', '.join(keys)}) is NULL in {nulls} rows of the SELECT; filter them "
            f"out or choose a key column without NULLs."
        )
    if repeated:
        examples = ", ".join(f"{key} ({n} rows)" for key, n in repeated)
        raise InputError(
            f"unique_key ({', '.join(keys)}) is not unique in the SELECT, e.g. {examples}; choose "
            f"the column(s) that identify one row, or deduplicate in model '{model_name}'."
        )


def check_columns(conn, scored: str, table: str, model_name: str, on_schema_change: str) -> None:
    """The scored rows must fit the table, unless on_schema_change lets dbt change its columns."""
    if on_schema_change in MERGED_SCHEMA_CHANGES:
        return
    new, old = _names(conn, scored), _names(conn, table)
    if set(new) == set(old):
        return
    added = [n for n in new if n not in old]
    gone = [n for n in old if n not in new]
    change = "; ".join(
        part
        for part in (
            f"new: {', '.join(added)}" if added else "",
            f"no longer scored: {', '.join(gone)}" if gone else "",
        )
        if part
    )
    raise InputError(
        f"the scored columns differ from the table's ({change}), e.g. because the live model "
        f"version has other outputs; rebuild it with dbt run -s {model_name} --full-refresh, or "
        f"set on_schema_change='sync_all_columns'."
    )
