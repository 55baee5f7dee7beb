"""The model registry: one row per trained version in `<registry_schema>.sqlflow_models`."""

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

import numpy as np
import psycopg2

from dbt.adapters.sqlflow.data.pgtypes import quote_ident
from dbt.adapters.sqlflow.errors import (  # noqa: F401  (raised here, caught by callers)
    ArtifactError,
    RegistryError,
)

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
    status              text        not null default 'live',
    events              jsonb       not null default '[]',
    artifact_sha256     text,
    primary key (relation_database, relation_schema, relation_identifier, version)
)
"""

# Registries from before versions had a status: the newest version of each model was the one in use.
STATUS_MIGRATION = """
alter table {table} add column if not exists status text not null default 'candidate',
                    add column if not exists events jsonb not null default '[]',
                    add column if not exists artifact_sha256 text;
alter table {table} alter column status set default 'live';
update {table} r set status = 'live'
 where version = (select max(version) from {table} o where o.relation_database = r.relation_database
                    and o.relation_schema = r.relation_schema and o.relation_identifier = r.relation_identifier);
"""

# live: what ml_predict and the scoring macros use (one per model); candidate: trained and passed its
# gates, not in use now; rejected: failed a promote_if gate; retired: artifact pruned by keep_versions.
STATUSES = ("live", "candidate", "rejected", "retired")

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

# Status changes (promotion, rollback, retirement) by roles that may write to the model's relation.
UPDATE_POLICY = """
create policy sqlflow_models_update on {table} for update using (coalesce(has_table_privilege(
    to_regclass(quote_ident(relation_schema) || '.' || quote_ident(relation_identifier)), 'insert'), false));
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
    status: str = "live"


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
        if not _has_column(cur, table, "status"):
            cur.execute(STATUS_MIGRATION.format(table=table))
        cur.execute("select relrowsecurity from pg_class where oid = %s::regclass", (table,))
        if not cur.fetchone()[0]:
            cur.execute(POLICY.format(table=table))
        cur.execute(
            "select 1 from pg_policy where polrelid = %s::regclass and polname = 'sqlflow_models_update'",
            (table,),
        )
        if cur.fetchone() is None:
            cur.execute(UPDATE_POLICY.format(table=table))


def _has_column(cur, table: str, column: str) -> bool:
    cur.execute(
        "select 1 from pg_attribute where attrelid = %s::regclass and attname = %s and not attisdropped",
        (table, column),
    )
    return cur.fetchone() is not None


# One event per status change: what, when, which dbt invocation and which database role.
_EVENT = (
    "jsonb_build_object('status', %s, 'at', clock_timestamp(), 'invocation_id', %s, "
    "'by', current_user, 'note', %s)"
)


def register(
    conn,
    table: str,
    version: ModelVersion,
    materialization: str,
    invocation_id: Optional[str],
    note: Optional[str] = None,
) -> int:
    """Insert the next version of the model's relation; returns its number. A live version demotes the
    previous live one to candidate, in the same transaction as the swap of its tables."""
    key = version.key
    artifact = version.artifact
    with conn.cursor() as cur:
        cur.execute("select pg_advisory_xact_lock(hashtext(%s))", (f"dbt_sqlflow.{key.render()}",))
        cur.execute(f"select coalesce(max(version), 0) + 1 from {table} where {_KEY}", key.args)
        number = cur.fetchone()[0]
        if version.status == "live":
            _set_status(
                cur,
                table,
                key,
                "candidate",
                invocation_id,
                f"v{number} became live",
                "status = 'live'",
            )
        cur.execute(
            f"insert into {table} (model_name, version, model_type, materialization, relation, options, "
            f"features, label, parameters, metrics, training_info, row_count, input_fingerprint, "
            f"sql_fingerprint, invocation_id, artifact, artifact_format, relation_database, relation_schema, "
            f"relation_identifier, unique_id, status, events, artifact_sha256) "
            f"values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, "
            f"jsonb_build_array({_EVENT}), %s)",
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
                None if artifact is None else psycopg2.Binary(artifact),
                None if artifact is None else "keras",
                *key.args,
                version.unique_id,
                version.status,
                version.status,
                invocation_id,
                note,
                None if artifact is None else hashlib.sha256(artifact).hexdigest(),
            ),
        )
    return number


def _set_status(cur, table, key: ModelKey, status: str, invocation_id, note, where: str, args=()):
    cur.execute(
        f"update {table} set status = %s, events = events || jsonb_build_array({_EVENT}) "
        f"where {_KEY} and {where}",
        (status, status, invocation_id, note, *key.args, *args),
    )


def live(conn, table: str, key: ModelKey) -> Optional[Dict[str, Any]]:
    """The live version's number, metrics and trained_at, or None when there is none."""
    with conn.cursor() as cur:
        if not _exists(cur, table) or not _has_column(cur, table, "status"):
            return None
        cur.execute(
            f"select version, metrics, trained_at from {table} where {_KEY} and status = 'live'",
            key.args,
        )
        row = cur.fetchone()
    return None if row is None else {"version": row[0], "metrics": row[1], "trained_at": row[2]}


_FACTS = (
    "relation_database",
    "relation_schema",
    "relation_identifier",
    "model_name",
    "version",
    "status",
    "model_type",
    "metrics",
    "row_count",
    "trained_at",
    "invocation_id",
)


def facts(conn, table: str, where: str = "true", args: tuple = ()) -> List[Dict[str, Any]]:
    """The facts of the versions `where` selects, by relation and version (what run_results, the
    catalog and the model cards show): the _FACTS columns and `parameters` holding the task."""
    with conn.cursor() as cur:
        if not _exists(cur, table) or not _has_column(cur, table, "status"):
            return []
        cur.execute(
            f"select {', '.join(_FACTS)}, jsonb_build_object('task', parameters -> 'task') "
            f"from {table} where {where} order by {', '.join(_FACTS[:3])}, version",
            args,
        )
        return [{**dict(zip(_FACTS, r)), "parameters": r[-1]} for r in cur.fetchall()]


def summary(conn, table: str, key: ModelKey, version: int) -> Optional[Dict[str, Any]]:
    found = facts(conn, table, f"{_KEY} and version = %s", key.args + (version,))
    return found[0] if found else None


def versions(conn, table: str, key: ModelKey) -> List[Dict[str, Any]]:
    """Every version of the model at `key`, oldest first."""
    return facts(conn, table, _KEY, key.args)


def live_versions(conn, table: str) -> List[Dict[str, Any]]:
    """Every model's live version."""
    return facts(conn, table, "status = 'live'")


def older_than(conn, table: str, key: ModelKey, age: str) -> Optional[bool]:
    """Whether the live version was trained more than `age` ('7 days') ago; None without one."""
    with conn.cursor() as cur:
        if not _exists(cur, table) or not _has_column(cur, table, "status"):
            return None
        cur.execute(
            f"select trained_at < clock_timestamp() - %s::interval from {table} "
            f"where {_KEY} and status = 'live'",
            (age, *key.args),
        )
        row = cur.fetchone()
    return None if row is None else bool(row[0])


def promote(
    conn, table: str, key: ModelKey, version: int, invocation_id: Optional[str], name: str
) -> Optional[int]:
    """Make `version` live (a rollback, or a reviewed rejected version); returns the version it
    replaced. The change is recorded in both rows' events."""
    with conn.cursor() as cur:
        if not _exists(cur, table):
            raise RegistryError(f"no model registry at {table}: train '{name}' first.")
        cur.execute("select pg_advisory_xact_lock(hashtext(%s))", (f"dbt_sqlflow.{key.render()}",))
        cur.execute(f"select version, status from {table} where {_KEY} order by version", key.args)
        statuses = dict(cur.fetchall())
        if version not in statuses:
            raise RegistryError(
                f"model '{name}' has no version {version} (versions: "
                f"{', '.join(f'{v} {s}' for v, s in statuses.items()) or 'none'})."
            )
        if statuses[version] == "retired":
            raise RegistryError(
                f"version {version} of model '{name}' is retired: keep_versions pruned its artifact, "
                f"so it cannot score. Promote a kept version, or retrain."
            )
        previous = next((v for v, s in statuses.items() if s == "live"), None)
        if previous == version:
            return previous
        _set_status(
            cur, table, key, "candidate", invocation_id, f"v{version} promoted", "status = 'live'"
        )
        _set_status(cur, table, key, "live", invocation_id, "promoted", "version = %s", (version,))
    return previous


def materialization_of(conn, table: str, key: ModelKey, version: int) -> Optional[str]:
    with conn.cursor() as cur:
        cur.execute(
            f"select materialization from {table} where {_KEY} and version = %s",
            (*key.args, version),
        )
        row = cur.fetchone()
    return row and row[0]


def retire(conn, table: str, key: ModelKey, keep: int, invocation_id: Optional[str]) -> list:
    """keep_versions: drop the artifacts of all but the newest `keep` versions and the live one; their
    rows stay (metrics, options, lineage), marked retired. Returns the versions retired."""
    if not keep:
        return []
    with conn.cursor() as cur:
        cur.execute(
            f"select version from {table} where {_KEY} and status not in ('live', 'retired') "
            f"and version <= (select max(version) from {table} where {_KEY}) - %s order by version",
            (*key.args, *key.args, keep),
        )
        versions = [r[0] for r in cur.fetchall()]
        if versions:
            cur.execute(
                f"update {table} set artifact = null, artifact_sha256 = null where {_KEY} "
                f"and version = any(%s)",
                (*key.args, versions),
            )
            _set_status(
                cur,
                table,
                key,
                "retired",
                invocation_id,
                f"keep_versions={keep}",
                "version = any(%s)",
                (versions,),
            )
    return versions


def _exists(cur, table: str) -> bool:
    cur.execute("select to_regclass(%s)", (table,))
    return cur.fetchone()[0] is not None


def load(
    conn,
    table: str,
    key: ModelKey,
    version: Optional[int] = None,
    model_name: Optional[str] = None,
    latest: bool = False,
) -> ModelVersion:
    """A registered version of the model at `key`: the live one when version is None (the newest with
    latest=True), or RegistryError saying what exists. The artifact's SHA-256 is checked."""
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
        has_status = _has_column(cur, table, "status")
        base_where, base_args = where, list(args)
        if version is not None:
            where, args = where + " and version = %s", args + [version]
        elif has_status and not latest:
            where += " and status = 'live'"
        status = "status, artifact_sha256" if has_status else "'live', null"
        cur.execute(
            f"select model_name, version, model_type, options, features, label, parameters, metrics, "
            f"training_info, row_count, input_fingerprint, sql_fingerprint, {status}, artifact "
            f"from {table} where {where} order by version desc limit 1",
            args,
        )
        row = cur.fetchone()
        if row is None:
            statuses = "status" if has_status else "'live'"
            cur.execute(
                f"select coalesce(string_agg(version || ' ' || {statuses}, ', ' order by version), "
                f"'none') from {table} where {base_where}",
                base_args,
            )
            versions = cur.fetchone()[0]
            if version is None and versions != "none":
                raise RegistryError(
                    f"model '{name}' has no live version (versions: {versions}); make one live with "
                    f"dbt run-operation sqlflow_promote --args '{{model: {name}, version: N}}', or "
                    f"pin config(version=N)."
                )
            what = f"version {version} of model '{name}'" if version else f"model '{name}'"
            raise RegistryError(
                f"{what} is not in the registry {table} (versions of {key.render()} there: "
                f"{versions}); train it first (dbt run -s {name})."
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
        "status",
    )
    values: Dict[str, Any] = dict(zip(names, row[:-2]))
    digest, artifact = row[-2], row[-1]
    if values["status"] == "retired":
        raise RegistryError(
            f"version {values['version']} of model '{name}' is retired: keep_versions pruned its "
            f"artifact. Use the live version (drop config(version=...)) or a kept one."
        )
    artifact = None if artifact is None else bytes(artifact)
    if artifact is not None and digest and hashlib.sha256(artifact).hexdigest() != digest:
        raise ArtifactError(
            name, values["version"], "its SHA-256 does not match the one registered with it"
        )
    return ModelVersion(**values, artifact=artifact, key=key)


# Keys that change how a model is kept in service, not what it learns (options.OPERATIONAL_KEYS).
_NOT_LEARNED = "array['retrain', 'max_age', 'promote_if', 'on_gate_fail', 'keep_versions']"


def unchanged_version(
    conn, table: str, key: ModelKey, options: Dict, sql_fingerprint: str, input_fingerprint: str
) -> Optional[int]:
    """The live version if it was trained from the same SQL, options and input; else None."""
    with conn.cursor() as cur:
        if not _exists(cur, table) or not _has_column(cur, table, "status"):
            return None
        cur.execute(
            f"select version, options - {_NOT_LEARNED} = %s::jsonb - {_NOT_LEARNED} "
            f"and sql_fingerprint = %s and input_fingerprint = %s "
            f"from {table} where {_KEY} and status = 'live'",
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
