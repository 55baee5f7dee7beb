"""SQLFlow statements as dbt model bodies (materialized='sqlflow'): `parse` splits the SELECT from
its TO TRAIN / PREDICT / EVALUATE / EXPLAIN clause, `translate` turns the clause into one of our
materializations and its config, `columns` computes SQLFlow's feature columns in SQL."""

from typing import Any, Dict, Mapping, Tuple

from dbt.adapters.sqlflow.statements.parse import StatementError, split
from dbt.adapters.sqlflow.statements.translate import Node, Plan, merged_config, plan

__all__ = ["StatementError", "compile_statement"]


def compile_statement(
    sql: str, name: str, alias: str, config: Mapping[str, Any], refs: Mapping[str, Mapping]
) -> Tuple[Plan, Dict[str, Any]]:
    """(what the node runs, its config with the clause's settings)."""
    node = Node(name, alias or name, config, refs)
    found = plan(split(sql), sql, node)
    return found, merged_config(found, node)
