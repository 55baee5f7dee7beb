"""The node's SELECT as a job reads it: SQLFlow's feature columns computed around it, and for
training the held-out rows of validation_select appended with a split flag. Scoring wraps its SELECT
with the trained version's own feature columns, so training and scoring read the same features."""

from typing import Dict, Tuple

from dbt.adapters.sqlflow.data import describe
from dbt.adapters.sqlflow.data.pgtypes import quote_ident
from dbt.adapters.sqlflow.errors import InputError
from dbt.adapters.sqlflow.statements import columns as feature_columns

HELD_OUT = "__sqlflow_held_out"


def training_sql(conn, sql: str, options: Dict) -> Tuple[str, Dict]:
    """(the SELECT to train on, the options that read it)."""
    validation = options.get("validation_select")
    if validation:
        sql, options = _with_validation_rows(conn, sql, validation, options)
    specs = options.get("feature_columns")
    if specs:
        sql = feature_columns.wrap(sql, [c.name for c in describe(conn, sql)], specs)
        _check_category_ids(conn, sql, specs)
    return sql, options


def scoring_sql(conn, sql: str, trained_options: Dict) -> str:
    specs = trained_options.get("feature_columns")
    if not specs:
        return sql
    return feature_columns.wrap(sql, [c.name for c in describe(conn, sql)], specs)


def _with_validation_rows(conn, sql: str, validation: str, options: Dict) -> Tuple[str, Dict]:
    train = [c.name for c in describe(conn, sql)]
    held = [c.name for c in describe(conn, validation)]
    if sorted(train) != sorted(held):
        missing = [c for c in train if c not in held]
        extra = [c for c in held if c not in train]
        raise InputError(
            "validation_select must return the training SELECT's columns"
            + (f"; it lacks {', '.join(missing)}" if missing else "")
            + (f"; it adds {', '.join(extra)}" if extra else "")
            + "."
        )
    listed = ", ".join(quote_ident(c) for c in train)
    strip = lambda s: s.strip().rstrip(";")  # noqa: E731
    combined = (
        f"select {listed}, false as {HELD_OUT} from (\n{strip(sql)}\n) as __sqlflow_train\n"
        f"union all\nselect {listed}, true from (\n{strip(validation)}\n) as __sqlflow_valid"
    )
    return combined, {**options, "data_split": HELD_OUT}


def _check_category_ids(conn, sql: str, specs) -> None:
    for spec, query in feature_columns.out_of_range_sql(sql, specs):
        with conn.cursor() as cur:
            cur.execute(query)
            bad = cur.fetchone()[0]
        if bad:
            raise InputError(
                f"{spec}: {bad} value(s) are not category ids 0..n-1; raise n, or map the values "
                f"to ids in the SELECT."
            )
