"""The model registry: one row per trained version in `<registry_schema>.sqlflow_models`."""
import json
from dataclasses import dataclass
from typing import Any, Dict, Optional

import numpy as np
import psycopg2

from dbt.adapters.sqlflow.data.pgtypes import quote_ident

TABLE = "sqlflow_models"

DDL = """
create table if not exists {table} (
    model_name        text        not null,
    version           integer     not null,
    model_type        text        not null,
    materialization   text        not null,
    relation          text        not null,
    options           jsonb       not null,
    features          jsonb       not null,
    label             text,
    parameters        jsonb       not null,
    metrics           jsonb       not null,
    training_info     jsonb       not null,
    row_count         bigint      not null,
    input_fingerprint text        not null,
    sql_fingerprint   text        not null,
    trained_at        timestamptz not null default clock_timestamp(),
    invocation_id     text,
    artifact          bytea,
    artifact_format   text,
    primary key (model_name, version)
)
"""


class RegistryError(LookupError):
    pass


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None  # JSON has no NaN or infinity
    return value


def dumps(value: Any) -> str:
    return json.dumps(_jsonable(value))


@dataclass
class ModelVersion:
    model_name: str
    version: int
    model_type: str
    options: Dict
    features: Dict
    label: Optional[str]
    parameters: Dict
    metrics: Dict
    training_info: Dict
    row_count: int
    input_fingerprint: str
    sql_fingerprint: str
    artifact: Optional[bytes] = None  # a `.keras` file, for models their weights table cannot score alone


def table_name(schema: str, database: Optional[str] = None) -> str:
    parts = ([database] if database else []) + [schema, TABLE]
    return ".".join(quote_ident(p) for p in parts)


def ensure(conn, table: str, schema: str) -> None:
    with conn.cursor() as cur:
        # one creator at a time: threads of one run may all find the table missing
        cur.execute("select pg_advisory_xact_lock(hashtext('dbt_sqlflow.registry'))")
        cur.execute(f"create schema if not exists {quote_ident(schema)}")
        cur.execute(DDL.format(table=table))


def register(conn, table: str, version: ModelVersion, materialization: str, relation: str,
             invocation_id: Optional[str]) -> int:
    """Insert the next version of the model; returns its number."""
    with conn.cursor() as cur:
        cur.execute("select pg_advisory_xact_lock(hashtext(%s))", (f"dbt_sqlflow.{version.model_name}",))
        cur.execute(f"select coalesce(max(version), 0) + 1 from {table} where model_name = %s",
                    (version.model_name,))
        number = cur.fetchone()[0]
        cur.execute(
            f"insert into {table} (model_name, version, model_type, materialization, relation, options, "
            f"features, label, parameters, metrics, training_info, row_count, input_fingerprint, "
            f"sql_fingerprint, invocation_id, artifact, artifact_format) "
            f"values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (version.model_name, number, version.model_type, materialization, relation, dumps(version.options),
             dumps(version.features), version.label, dumps(version.parameters), dumps(version.metrics),
             dumps(version.training_info), version.row_count, version.input_fingerprint,
             version.sql_fingerprint, invocation_id,
             None if version.artifact is None else psycopg2.Binary(version.artifact),
             None if version.artifact is None else "keras"),
        )
    return number


def load(conn, table: str, model_name: str, version: Optional[int] = None) -> ModelVersion:
    """A registered version (the latest when version is None), or RegistryError saying what exists."""
    with conn.cursor() as cur:
        cur.execute("select to_regclass(%s)", (table,))
        if cur.fetchone()[0] is None:
            raise RegistryError(f"no model registry at {table}: train '{model_name}' first "
                                f"(dbt run -s {model_name}).")
        where, args = "model_name = %s", [model_name]
        if version is not None:
            where, args = where + " and version = %s", args + [version]
        cur.execute(
            f"select model_name, version, model_type, options, features, label, parameters, metrics, "
            f"training_info, row_count, input_fingerprint, sql_fingerprint, artifact from {table} "
            f"where {where} order by version desc limit 1", args)
        row = cur.fetchone()
        if row is None:
            cur.execute(f"select coalesce(array_agg(version order by version), '{{}}') from {table} "
                        f"where model_name = %s", (model_name,))
            versions = cur.fetchone()[0]
            what = f"version {version} of model '{model_name}'" if version else f"model '{model_name}'"
            raise RegistryError(f"{what} is not in the registry {table} (versions there: {versions or 'none'}); "
                                f"train it first (dbt run -s {model_name}).")
    *fields, artifact = row
    return ModelVersion(*fields, artifact=None if artifact is None else bytes(artifact))


def unchanged_version(conn, table: str, model_name: str, options: Dict, sql_fingerprint: str,
                      input_fingerprint: str) -> Optional[int]:
    """The latest version if it was trained from the same SQL, options and input; else None."""
    with conn.cursor() as cur:
        cur.execute("select to_regclass(%s)", (table,))
        if cur.fetchone()[0] is None:
            return None
        cur.execute(f"select version, options = %s::jsonb and sql_fingerprint = %s and input_fingerprint = %s "
                    f"from {table} where model_name = %s order by version desc limit 1",
                    (dumps(options), sql_fingerprint, input_fingerprint, model_name))
        row = cur.fetchone()
    return row[0] if row and row[1] else None
