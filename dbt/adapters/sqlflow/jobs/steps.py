"""Steps every job shares: the retrain policy, registration with promotion gates, closing a batch
reader, the SQL digest."""

import hashlib
import logging
from typing import Callable, Dict, Optional

from dbt.adapters.sqlflow import registry
from dbt.adapters.sqlflow.errors import Rejected, SqlflowError
from dbt.adapters.sqlflow.jobs.context import JobContext, Outcome
from dbt.adapters.sqlflow.jobs.gates import failures as gate_failures

log = logging.getLogger("dbt_sqlflow.jobs")


def sql_fingerprint(sql: str) -> str:
    return hashlib.sha256(sql.encode()).hexdigest()


def unchanged(ctx: JobContext, input_fingerprint: str, verb: str, rows: int) -> Optional[Outcome]:
    """The live version kept instead of retraining, by the node's retrain policy: 'never' keeps it
    whatever changed, 'max_age' while it is younger than max_age and nothing changed, 'on_change'
    while SQL, learned options and input match it. `--full-refresh` always retrains, as it rebuilds
    every other model; so does a missing relation."""
    policy = ctx.options.get("retrain", "always")
    if policy == "always" or not ctx.relation_exists or ctx.full_refresh:
        return None
    table, key = ctx.registry_table, ctx.node
    if policy == "never":
        live = registry.live(ctx.conn, table, key)
        if live is None:
            return None
        reason = "retrain='never' (dbt run --full-refresh retrains)"
        return _kept(rows, live["version"], verb, reason)
    if policy == "max_age" and registry.older_than(ctx.conn, table, key, ctx.options["max_age"]):
        log.info(f"the live version is older than max_age={ctx.options['max_age']}: retraining")
        return None
    kept = registry.unchanged_version(
        ctx.conn, table, key, dict(ctx.options), sql_fingerprint(ctx.sql), input_fingerprint
    )
    if not kept:
        return None
    reason = "SQL, config and input unchanged"
    if policy == "max_age":
        reason += f", younger than max_age={ctx.options['max_age']}"
    return _kept(rows, kept, verb, reason)


def _kept(rows: int, version: int, verb: str, reason: str) -> Outcome:
    log.info(f"{reason}: v{version} kept, not retrained")
    return Outcome(rows, version, f"{verb} unchanged, v{version} kept: {reason}", unchanged=True)


def close_reader(reader) -> None:
    if reader is None:
        return
    try:
        reader.close()
    except Exception:  # after a failed statement; the temporary table ends with the session
        log.debug("left the batch table to the end of the session")


def register(
    ctx: JobContext,
    version: registry.ModelVersion,
    live_metrics: Optional[Callable[[registry.ModelVersion], Optional[Dict]]] = None,
) -> int:
    """Register the version in the fit-and-write transaction, so it commits with the swap or not at
    all. With promote_if, a candidate that fails a gate is registered as rejected and Rejected raised
    (the adapter commits that row alone). `live_metrics` recomputes the live version's metrics on the
    candidate's held-out rows, so '<= live' compares like with like; else its stored metrics count."""
    from dbt.adapters.sqlflow.jobs.predict import scoring_templates  # predict imports this module

    registry.ensure(ctx.conn, ctx.registry_table, ctx.registry_schema)
    version.key, version.unique_id = ctx.node, ctx.unique_id
    if ctx.invoked_as:
        version.training_info = {**version.training_info, "invoked_as": ctx.invoked_as}
    templates = scoring_templates(version)
    if templates:  # for projects that score on plain dbt-postgres (the scoring package)
        version.parameters = {**version.parameters, "scoring_sql": templates}
    gates = ctx.options.get("promote_if")
    failed, live_number = [], None
    if gates:
        live = registry.live(ctx.conn, ctx.registry_table, ctx.node)
        live_number = live and live["version"]
        compared = live and live["metrics"]
        if (
            live
            and live_metrics is not None
            and any(c.strip().endswith("live") for c in gates.values())
        ):
            compared = _recomputed(ctx, live_number, live_metrics) or compared
        failed = gate_failures(gates, version.metrics, compared, live_number)
    version.status = "rejected" if failed else "live"
    number = registry.register(
        ctx.conn,
        ctx.registry_table,
        version,
        ctx.materialization,
        ctx.invocation_id,
        "; ".join(failed) or None,
    )
    if failed:
        raise Rejected(number, live_number, failed)
    keep = ctx.options.get("keep_versions") or 0
    retired = registry.retire(ctx.conn, ctx.registry_table, ctx.node, keep, ctx.invocation_id)
    if retired:
        log.info(f"keep_versions={keep}: artifacts of v{', v'.join(map(str, retired))} pruned")
    return number


def _recomputed(ctx: JobContext, live_number, live_metrics) -> Optional[Dict]:
    try:
        live = registry.load(ctx.conn, ctx.registry_table, ctx.node, live_number, ctx.model_name)
        metrics = live_metrics(live)
    except SqlflowError as exc:  # a live version that cannot score these rows: its stored metrics
        log.debug(f"live v{live_number} not re-evaluated on the held-out rows: {exc}")
        return None
    if metrics:
        log.info(f"live v{live_number} re-evaluated on this run's held-out rows for promote_if")
    return metrics
