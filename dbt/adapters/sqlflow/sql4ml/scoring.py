"""Scoring a sql4ml model inside PostgreSQL: the program's prediction CTE over the stored weights,
with the scoring node's SELECT in place of the data relation the prediction reads (`replaces`)."""

from typing import Dict, List, Optional, Union

from dbt.adapters.sqlflow.data.pgtypes import quote_ident
from dbt.adapters.sqlflow.sql4ml.program import (
    Program,
    ProgramError,
    referenced_tables,
    weight_specs,
)


def _needed(program: Program, name: str) -> List[str]:
    """The CTEs `name` reads, transitively, in program order (itself included)."""
    seen, stack = set(), [name]
    while stack:
        current = stack.pop()
        if current in seen or current not in program.ctes:
            continue
        seen.add(current)
        stack += list(referenced_tables(program.ctes[current]))
    return [n for n in program.ctes if n in seen]


def replaced_relation(program: Program, prediction: str, replaces: Optional[str]) -> str:
    """The data CTE the scoring SELECT stands for: `replaces`, or the only data relation the
    prediction's own CTEs read."""
    needed = _needed(program, prediction)
    model = [n for n in needed if n in program.model]
    read = set().union(*(referenced_tables(program.ctes[n]) for n in model))
    candidates = [n for n in needed if n in program.data and n in read]
    if replaces:
        if replaces not in program.data:
            raise ProgramError(
                f"replaces='{replaces}' is not a data CTE of the model's program; its data CTEs "
                f"are {', '.join(program.data)}."
            )
        return replaces
    if len(candidates) != 1:
        raise ProgramError(
            f"the prediction reads {len(candidates)} data relations ({', '.join(candidates)}); say "
            f"which one this node's SELECT replaces with config(replaces='...')."
        )
    return candidates[0]


def weight_cte(
    name: str, index: List[str], source: Optional[str], rows: List, version: Union[int, str]
) -> str:
    """A weight as a relation: read from the weights table when it holds this version, else
    the registry's rows as VALUES."""
    columns = [quote_ident(c) for c in index] + ["value"]
    if source:
        return (
            f"{quote_ident(name)} as (select {', '.join(columns)} from {source} "
            f"where tensor = {_literal(name)} and model_version = {int(version)})"
        )
    values = ", ".join("(" + ", ".join(_literal(v) for v in row) + ")" for row in rows)
    return f"{quote_ident(name)}({', '.join(columns)}) as (values {values})"


def _literal(value) -> str:
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    if isinstance(value, float):
        return f"{value!r}::float8"
    return str(value)


def prediction_sql(
    parameters: Dict,
    options: Dict,
    node_sql: str,
    version: Union[int, str],
    weights_table: Optional[str],
    replaces: Optional[str],
) -> str:
    """SELECT <prediction keys>, <its value> as predicted_value, <version> as model_version."""
    program = Program.parse(parameters["program"], weight_specs(options["weights"]))
    prediction = parameters["prediction"]
    replaced = replaced_relation(program, prediction, replaces)
    ctes = []
    for name, spec in program.weights.items():
        stored = parameters["weights"][name]
        ctes.append(weight_cte(name, list(spec.index), weights_table, stored["rows"], version))
    for name in _needed(program, prediction):
        body = (
            node_sql.strip().rstrip(";")
            if name == replaced
            else program.ctes[name].sql("postgres")
        )
        ctes.append(f"{quote_ident(name)} as (\n{body}\n)")
    keys = parameters.get("prediction_keys") or []
    value = _value_column(program, prediction, keys)
    select = [f"__sqlflow_p.{quote_ident(k)}" for k in keys]
    select += [f"__sqlflow_p.{quote_ident(value)}::float8 as predicted_value"]
    select += [f"{version} as model_version"]  # an int, or the stored template's marker
    return (
        "with "
        + ",\n".join(ctes)
        + f"\nselect {', '.join(select)} from {quote_ident(prediction)} "
        f"as __sqlflow_p"
    )


def _value_column(program: Program, prediction: str, keys: List[str]) -> str:
    names = [e.alias_or_name.lower() for e in program.ctes[prediction].expressions]
    values = [n for n in names if n not in keys]
    if len(values) == 1:
        return values[0]
    if "value" in values:
        return "value"
    raise ProgramError(
        f"the prediction CTE {prediction} returns {len(values)} values ({', '.join(values)}); "
        f"name the predicted one `value`."
    )
