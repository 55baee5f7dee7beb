"""The input of a distributed node, materialized once and read by page ranges, one range per worker.

The coordinator runs the SELECT into a committed unlogged table (workers on other machines connect
with their own sessions, so a temporary table would be invisible to them) and splits its pages into
contiguous ranges. A `Shard` is plain data: a worker opens its own connection with it and reads its
range through COPY binary, a batch of pages at a time, so no process holds or forwards the whole input.
"""

import logging
import uuid
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Tuple

from dbt.adapters.sqlflow.data.frame import Frame
from dbt.adapters.sqlflow.data.pgtypes import quote_ident, read_plan
from dbt.adapters.sqlflow.data.reader import ReadLayout, SourceColumn, copy_out, describe

log = logging.getLogger("dbt_sqlflow.data")

_PROBE_PAGES = 8


def connection_parameters(conn) -> Dict[str, str]:
    """What another process needs to open a session like `conn` (its password included)."""
    params = {k: v for k, v in conn.info.dsn_parameters.items() if v not in (None, "")}
    if conn.info.password:
        params["password"] = conn.info.password
    return params


def connect(params: Dict[str, str], application_name: str):
    import psycopg2

    keywords: Dict[str, Any] = {**params, "application_name": application_name}
    conn = psycopg2.connect(**keywords)
    conn.autocommit = True
    return conn


def split_relation(relation: str) -> Tuple[str, str]:
    """('"db"."schema"', 'name') of a rendered relation: ALTER TABLE ... RENAME TO takes the bare
    name, and a table created beside it takes the prefix."""
    parts, current, quoted = [], "", False
    for ch in relation:
        if ch == '"':
            quoted = not quoted
            current += ch
        elif ch == "." and not quoted:
            parts.append(current)
            current = ""
        else:
            current += ch
    parts.append(current)
    last = parts[-1]
    bare = last[1:-1].replace('""', '"') if last.startswith('"') else last
    return ".".join(parts[:-1]), bare


@dataclass(frozen=True)
class Shard:
    """One worker's part of a ShardedTable: pages [first_page, stop_page)."""

    index: int
    count: int
    params: Dict[str, str]
    table: str
    columns: Tuple[SourceColumn, ...]
    first_page: int
    stop_page: int  # exclusive
    pages_per_batch: int

    def to_json(self) -> Dict:
        """The shard as JSON, for a worker process started with it on stdin."""
        columns = [[c.name, c.oid, c.source_type, c.category] for c in self.columns]
        return {**{k: getattr(self, k) for k in _FIELDS}, "columns": columns}

    @classmethod
    def from_json(cls, data: Dict) -> "Shard":
        columns = tuple(
            SourceColumn(name, oid, kind, read_plan(name, oid, kind, category), category)
            for name, oid, kind, category in data["columns"]
        )
        return cls(**{k: data[k] for k in _FIELDS}, columns=columns)

    def frames(self, conn=None) -> Iterator[Frame]:
        """The shard's rows in batches, the same every pass; one (empty) frame when it has none."""
        own = conn is None
        conn = conn or connect(self.params, f"dbt-sqlflow shard {self.index + 1}/{self.count}")
        layout = ReadLayout(self.columns)
        try:
            first, emitted = self.first_page, False
            while first < self.stop_page:
                stop = min(first + self.pages_per_batch, self.stop_page)
                frame = layout.frame(
                    copy_out(
                        conn,
                        f"select * from {self.table} where ctid >= '({first},0)'::tid "
                        f"and ctid < '({stop},0)'::tid",
                    )
                )
                first = stop
                if frame.n_rows:
                    emitted = True
                    yield frame
            if not emitted:
                yield layout.frame(copy_out(conn, f"select * from {self.table} where false"))
        finally:
            if own:
                conn.close()


def _used_pages(cur, table: str, allocated: int) -> int:
    """1 + the last page holding a row, by bisection on `exists (ctid >= page)`: each probe stops
    at its first row, so only empty tail pages are ever scanned through."""
    low, high = 0, allocated  # a row on some page < high; none from `high` on
    while low < high:
        middle = (low + high) // 2
        cur.execute(f"select exists (select 1 from {table} where ctid >= '({middle},0)'::tid)")
        if cur.fetchone()[0]:
            low = middle + 1
        else:
            high = middle
    return low


_FIELDS = ("index", "count", "params", "table", "first_page", "stop_page", "pages_per_batch")


class ShardedTable:
    """The SELECT run once into an unlogged table in `schema`, split into page ranges.

    Created on the node's connection (it sees what the node's transaction sees; the read phase's
    commit makes it visible to workers) and dropped on a connection of its own, so that a failed
    node, whose transaction is aborted, still drops it."""

    def __init__(self, conn, sql: str, schema: str, batch_rows: int = 50_000):
        self.conn = conn
        self.params = connection_parameters(conn)
        self.columns = tuple(describe(conn, sql))
        layout = ReadLayout(self.columns)
        name = f"__sqlflow_shards_{uuid.uuid4().hex[:12]}"
        self.table = f"{quote_ident(schema)}.{quote_ident(name)}" if schema else quote_ident(name)
        with conn.cursor() as cur:
            cur.execute(f"create unlogged table {self.table} as {layout.select_sql(sql)}")
            self.n_rows = cur.rowcount
            cur.execute(
                f"select pg_relation_size('{self.table}'::regclass) / "
                f"current_setting('block_size')::int, "
                f"(select count(*) from {self.table} where ctid < '({_PROBE_PAGES},0)'::tid)"
            )
            allocated, probed = cur.fetchone()
            # bulk loads extend a table several pages at a time: split the pages that hold rows
            self.n_pages = _used_pages(cur, self.table, allocated)
        density = max(probed / min(_PROBE_PAGES, max(self.n_pages, 1)), 1.0)
        self.pages_per_batch = max(1, int(batch_rows / density))
        log.debug(f"sharded {self.n_rows} rows over {self.n_pages} pages into {self.table}")

    def empty_frame(self) -> Frame:
        """The input's columns, no rows: what a job checks roles and types on."""
        layout = ReadLayout(self.columns)
        return layout.frame(copy_out(self.conn, f"select * from {self.table} where false"))

    def shards(self, count: int) -> List[Shard]:
        """`count` contiguous page ranges of (nearly) equal size."""
        bounds = [round(i * self.n_pages / count) for i in range(count + 1)]
        return [
            Shard(
                i,
                count,
                self.params,
                self.table,
                self.columns,
                bounds[i],
                bounds[i + 1],
                self.pages_per_batch,
            )
            for i in range(count)
        ]

    def close(self) -> None:
        drop_tables(self.params, [self.table])


def drop_tables(params: Dict[str, str], tables: List[str]) -> None:
    """Drop committed work tables on a connection of their own (the node's may be aborted)."""
    try:
        conn = connect(params, "dbt-sqlflow cleanup")
    except Exception as exc:  # the database is gone: nothing left to drop
        log.debug(f"could not connect to drop {', '.join(tables)}: {exc}")
        return
    try:
        with conn.cursor() as cur:
            for table in tables:
                cur.execute(f"drop table if exists {table}")
    except Exception as exc:
        log.debug(f"could not drop {', '.join(tables)}: {exc}")
    finally:
        conn.close()
