"""Steps every job shares: the retrain='on_change' check, closing a batch reader, the SQL digest."""

import hashlib
import logging
from typing import Optional

from dbt.adapters.sqlflow import registry
from dbt.adapters.sqlflow.jobs.context import JobContext, Outcome

log = logging.getLogger("dbt_sqlflow.jobs")


def sql_fingerprint(sql: str) -> str:
    return hashlib.sha256(sql.encode()).hexdigest()


def unchanged(ctx: JobContext, input_fingerprint: str, verb: str, rows: int) -> Optional[Outcome]:
    """retrain='on_change': the kept version when SQL, options and input match the latest one.
    `--full-refresh` always retrains, as it rebuilds every other model."""
    if ctx.options.get("retrain") != "on_change" or not ctx.relation_exists or ctx.full_refresh:
        return None
    kept = registry.unchanged_version(
        ctx.conn,
        ctx.registry_table,
        ctx.node,
        dict(ctx.options),
        sql_fingerprint(ctx.sql),
        input_fingerprint,
    )
    if not kept:
        return None
    log.info(f"SQL, config and input unchanged since version {kept}: not retrained")
    return Outcome(rows, kept, f"{verb} unchanged, v{kept} kept", unchanged=True)


def close_reader(reader) -> None:
    if reader is None:
        return
    try:
        reader.close()
    except Exception:  # after a failed statement; the temporary table ends with the session
        log.debug("left the batch table to the end of the session")


def register(ctx: JobContext, version: registry.ModelVersion) -> int:
    """Register the version in the fit-and-write transaction, so it commits with the swap or not at all."""
    registry.ensure(ctx.conn, ctx.registry_table, ctx.registry_schema)
    version.key, version.unique_id = ctx.node, ctx.unique_id
    return registry.register(
        ctx.conn, ctx.registry_table, version, ctx.materialization, ctx.invocation_id
    )
