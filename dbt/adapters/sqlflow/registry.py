"""The model registry: one row per trained version in `<registry_schema>.sqlflow_models`."""

import json
from dataclasses import dataclass
from typing import Any, Dict, Optional

import numpy as np
import psycopg2

from dbt.adapters.sqlflow.data.pgtypes import quote_ident
from dbt.adapters.sqlflow.errors import RegistryError  # noqa: F401  (raised here, caught by callers)

TABLE = "sqlflow_models"

# A version belongs to a relation (database, schema, identifier): two targets sharing registry_schema,
# or two schemas with a model of the same name, keep separate histories.
DDL = """
create table if not exists {table} (
    model_name          text        not null,
    version             integer     not null,
    model_type          text        not null,
    materialization     text        not null,
    relation            text        not null,
    options             jsonb       not null,
    features            jsonb       not null,
    label               text,
    parameters          jsonb       not null,
    metrics             jsonb       not null,
    training_info       jsonb       not null,
    row_count           bigint      not null,
    input_fingerprint   text        not null,
    sql_fingerprint     text        not null,
    trained_at          timestamptz not null default clock_timestamp(),
    invocation_id       text,
    artifact            bytea,
    artifact_format     text,
    relation_database   text        not null,
    relation_schema     text        not null,
    relation_identifier text        not null,
    unique_id           text,
    primary key (relation_database, relation_schema, relation_identifier, version)
)
"""

# Registries written before versions were keyed by relation: the key columns are added and filled
# from the rendered `relation` column, and the primary key moves from (model_name, version).
MIGRATION = """
alter table {table} add column if not exists relation_database text,
                    add column if not exists relation_schema text,
                    add column if not exists relation_identifier text,
                    add column if not exists unique_id text;
update {table} set relation_database = (parse_ident(relation))[1], relation_schema = (parse_ident(relation))[2],
                   relation_identifier = (parse_ident(relation))[3]
 where relation_identifier is null;
alter table {table} alter column relation_database set not null, alter column relation_schema set not null,
                    alter column relation_identifier set not null;
alter table {table} drop constraint if exists {pkey};
alter table {table} add primary key (relation_database, relation_schema, relation_identifier, version);
"""

# A role sees the rows of exactly the models it may select from, so granting select on a model
# is all it takes to use the registry macros on it; rows of other models stay hidden.
POLICY = """
alter table {table} enable row level security;
create policy sqlflow_models_readable on {table} for select using (coalesce(has_table_privilege(
    to_regclass(quote_ident(relation_schema) || '.' || quote_ident(relation_identifier)), 'select'), false));
create policy sqlflow_models_insert on {table} for insert with check (true);
grant select on {table} to public;
"""

_KEY = "relation_database = %s and relation_schema = %s and relation_identifier = %s"


@dataclass(frozen=True)
class ModelKey:
    """The relation a model's versions belong to."""

    database: str
    schema: str
    identifier: str

    def render(self) -> str:
        return ".".join(quote_ident(p) for p in (self.database, self.schema, self.identifier))

    @property
    def args(self) -> tuple:
        return (self.database, self.schema, self.identifier)


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
    artifact: Optional[bytes] = (
        None  # a `.keras` file, for models their weights table cannot score alone
    )
    key: Optional[ModelKey] = None
    unique_id: Optional[str] = None


def table_name(schema: str, database: Optional[str] = None) -> str:
    parts = ([database] if database else []) + [schema, TABLE]
    return ".".join(quote_ident(p) for p in parts)


def ensure(conn, table: str, schema: str) -> None:
    """Create the registry (or bring an older one up to date) under an advisory lock."""
    with conn.cursor() as cur:
        # one creator at a time: threads of one run may all find the table missing
        cur.execute("select pg_advisory_xact_lock(hashtext('dbt_sqlflow.registry'))")
        cur.execute(f"create schema if not exists {quote_ident(schema)}")
        cur.execute("select to_regclass(%s)", (table,))
        existed = cur.fetchone()[0] is not None
        cur.execute(DDL.format(table=table))
        if existed and not _has_column(cur, table, "relation_identifier"):
            cur.execute(
                "select conname from pg_constraint where conrelid = %s::regclass and contype = 'p'",
                (table,),
            )
            pkey = cur.fetchone()
            cur.execute(
                MIGRATION.format(
                    table=table, pkey=quote_ident(pkey[0] if pkey else TABLE + "_pkey")
                )
            )
        cur.execute("select relrowsecurity from pg_class where oid = %s::regclass", (table,))
        if not cur.fetchone()[0]:
            cur.execute(POLICY.format(table=table))


def _has_column(cur, table: str, column: str) -> bool:
    cur.execute(
        "select 1 from pg_attribute where attrelid = %s::regclass and attname = %s and not attisdropped",
        (table, column),
    )
    return cur.fetchone() is not None


def register(
    conn, table: str, version: ModelVersion, materialization: str, invocation_id: Optional[str]
) -> int:
    """Insert the next version of the model's relation; returns its number."""
    key = version.key
    with conn.cursor() as cur:
        cur.execute("select pg_advisory_xact_lock(hashtext(%s))", (f"dbt_sqlflow.{key.render()}",))
        cur.execute(f"select coalesce(max(version), 0) + 1 from {table} where {_KEY}", key.args)
        number = cur.fetchone()[0]
        cur.execute(
            f"insert into {table} (model_name, version, model_type, materialization, relation, options, "
            f"features, label, parameters, metrics, training_info, row_count, input_fingerprint, "
            f"sql_fingerprint, invocation_id, artifact, artifact_format, relation_database, relation_schema, "
            f"relation_identifier, unique_id) "
            f"values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (
                version.model_name,
                number,
                version.model_type,
                materialization,
                key.render(),
                dumps(version.options),
                dumps(version.features),
                version.label,
                dumps(version.parameters),
                dumps(version.metrics),
                dumps(version.training_info),
                version.row_count,
                version.input_fingerprint,
                version.sql_fingerprint,
                invocation_id,
                None if version.artifact is None else psycopg2.Binary(version.artifact),
                None if version.artifact is None else "keras",
                *key.args,
                version.unique_id,
            ),
        )
    return number


def _exists(cur, table: str) -> bool:
    cur.execute("select to_regclass(%s)", (table,))
    return cur.fetchone()[0] is not None


def load(
    conn,
    table: str,
    key: ModelKey,
    version: Optional[int] = None,
    model_name: Optional[str] = None,
) -> ModelVersion:
    """A registered version of the model at `key` (the latest when version is None), or RegistryError
    saying what exists."""
    name = model_name or key.identifier
    with conn.cursor() as cur:
        if not _exists(cur, table):
            raise RegistryError(
                f"no model registry at {table}: train '{name}' first (dbt run -s {name})."
            )
        if _has_column(cur, table, "relation_identifier"):
            where, args = _KEY, list(key.args)
        else:  # a registry not yet migrated (no model trained since the upgrade): by relation text
            where, args = "relation = %s", [key.render()]
        base_where, base_args = where, list(args)
        if version is not None:
            where, args = where + " and version = %s", args + [version]
        cur.execute(
            f"select model_name, version, model_type, options, features, label, parameters, metrics, "
            f"training_info, row_count, input_fingerprint, sql_fingerprint, artifact from {table} "
            f"where {where} order by version desc limit 1",
            args,
        )
        row = cur.fetchone()
        if row is None:
            cur.execute(
                f"select coalesce(array_agg(version order by version), '{{}}') from {table} "
                f"where {base_where}",
                base_args,
            )
            versions = cur.fetchone()[0]
            what = f"version {version} of model '{name}'" if version else f"model '{name}'"
            raise RegistryError(
                f"{what} is not in the registry {table} (versions of {key.render()} there: "
                f"{versions or 'none'}); train it first (dbt run -s {name})."
            )
    names = (
        "model_name",
        "version",
        "model_type",
        "options",
        "features",
        "label",
        "parameters",
        "metrics",
        "training_info",
        "row_count",
        "input_fingerprint",
        "sql_fingerprint",
    )
    values: Dict[str, Any] = dict(zip(names, row[:-1]))
    artifact = row[-1]
    return ModelVersion(**values, artifact=None if artifact is None else bytes(artifact), key=key)


def unchanged_version(
    conn, table: str, key: ModelKey, options: Dict, sql_fingerprint: str, input_fingerprint: str
) -> Optional[int]:
    """The latest version if it was trained from the same SQL, options and input; else None."""
    with conn.cursor() as cur:
        if not _exists(cur, table) or not _has_column(cur, table, "relation_identifier"):
            return None
        cur.execute(
            f"select version, options = %s::jsonb and sql_fingerprint = %s and input_fingerprint = %s "
            f"from {table} where {_KEY} order by version desc limit 1",
            (dumps(options), sql_fingerprint, input_fingerprint, *key.args),
        )
        row = cur.fetchone()
    return row[0] if row and row[1] else None


def trained_with_side_tables(conn, table: str, key: ModelKey) -> bool:
    """Whether the relation was last built by `cluster` (so `<identifier>__centroids` etc. are ours)."""
    with conn.cursor() as cur:
        if not _exists(cur, table) or not _has_column(cur, table, "relation_identifier"):
            return False
        cur.execute(
            f"select materialization = 'cluster' from {table} where {_KEY} order by version desc limit 1",
            key.args,
        )
        row = cur.fetchone()
    return bool(row and row[0])
