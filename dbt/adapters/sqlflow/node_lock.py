"""One build of an ML model at a time across dbt processes (two schedulers, a manual run beside a cron
job): a session-level advisory lock keyed on the model's relation, taken before the node reads its
cache and released after its swap commits. A second process waits, saying for whom, and then builds
on what the first committed; the two never interleave their tables or registry rows."""

from typing import Callable, Optional

from psycopg2 import extensions

# The two-key form, so pg_locks shows (classid, objid) = (our namespace, the relation) and the
# waiting message can name the process holding it.
_NAMESPACE = "hashtext('dbt_sqlflow.node')"
_HOLDER = f"""
select l.pid, a.application_name, a.backend_start from pg_locks l
  left join pg_stat_activity a on a.pid = l.pid
 where l.locktype = 'advisory' and l.granted and l.objsubid = 2
   and l.classid::int = {_NAMESPACE} and l.objid::int = hashtext(%s) and l.pid <> pg_backend_pid()
"""


def acquire(conn, relation: str, name: str, say: Callable[[str], None]) -> bool:
    """Take the model's lock; True when another process held it and this one waited."""
    with conn.cursor() as cur:
        cur.execute(f"select pg_try_advisory_lock({_NAMESPACE}, hashtext(%s))", (relation,))
        if cur.fetchone()[0]:
            return False
        cur.execute(_HOLDER, (relation,))
        holder = cur.fetchone()
        who = f"process {holder[0]} ({holder[1] or 'dbt'})" if holder else "another process"
        say(f"{name}: {who} is building this model; waiting for it to finish")
        cur.execute(f"select pg_advisory_lock({_NAMESPACE}, hashtext(%s))", (relation,))
        # the wait ended a statement; what the other process committed is visible from here on
        return True


def release(conn, relation: str) -> None:
    with conn.cursor() as cur:
        cur.execute(f"select pg_advisory_unlock({_NAMESPACE}, hashtext(%s))", (relation,))


def release_after_failure(conn, relation: str) -> None:
    """After a failed node. A session lock outlives the transaction, so it is released here; in an
    aborted transaction that takes a rollback first (dbt rolls back the failed node anyway)."""
    if conn.closed:
        return
    if conn.info.transaction_status == extensions.TRANSACTION_STATUS_INERROR:
        conn.rollback()
    try:
        release(conn, relation)
    except Exception:  # the connection is gone: so is the lock
        pass


def relation_kind(conn, schema: str, identifier: str) -> Optional[str]:
    """'table' or 'view' for the relation as the catalog has it now, or None."""
    with conn.cursor() as cur:
        cur.execute(
            "select c.relkind from pg_class c join pg_namespace n on n.oid = c.relnamespace "
            "where n.nspname = %s and c.relname = %s",
            (schema, identifier),
        )
        row = cur.fetchone()
    if row is None:
        return None
    return {"r": "table", "p": "table", "v": "view", "m": "materialized_view"}.get(row[0], "table")
