"""Reading any SELECT into numpy columns through `COPY ... TO STDOUT (FORMAT binary)`.

Each row carries a bigint NULL mask per 63 fixed-width columns ahead of its values. A stream with
no NULLs and no text has rows of one width and decodes with a single `np.frombuffer`; otherwise a
short Python scan per row finds the row starts (the mask gives the width of the fixed part at once).
"""

import io
import logging
import math
import uuid
from dataclasses import dataclass
from typing import Iterator, List, Sequence

import numpy as np

from dbt.adapters.sqlflow.data import binary
from dbt.adapters.sqlflow.data.frame import Column, Frame
from dbt.adapters.sqlflow.data.pgtypes import WIRE_TYPES, ReadPlan, quote_ident, read_plan
from dbt.adapters.sqlflow.errors import SqlflowError

log = logging.getLogger("dbt_sqlflow.data")

_SOURCE = "__sqlflow_src"
_PROBE_PAGES = 8


class DuplicateColumnError(SqlflowError, ValueError):
    def __init__(self, column: str):
        super().__init__(
            f'the SELECT returns two columns named "{column}"; give each column a distinct name '
            f"(e.g. with AS)."
        )


@dataclass(frozen=True)
class SourceColumn:
    name: str
    oid: int
    source_type: str
    plan: ReadPlan
    category: str = ""  # pg_type.typcategory: with the rest, what rebuilds the plan elsewhere


def _subquery(sql: str) -> str:
    # newlines guard against a trailing `-- comment`; a trailing semicolon would end the statement
    return "(\n" + sql.strip().rstrip(";") + "\n) as " + _SOURCE


def describe(conn, sql: str) -> List[SourceColumn]:
    """Name, type and read plan of every column the SELECT returns, without running it."""
    with conn.cursor() as cur:
        cur.execute(f"select * from {_subquery(sql)} limit 0")
        described = [(d.name, d.type_code) for d in cur.description]
        oids = sorted({oid for _, oid in described})
        cur.execute(
            "select oid::int, format_type(oid, null), typcategory from pg_type where oid = any(%s)",
            (oids,),
        )
        types = {oid: (name, category) for oid, name, category in cur.fetchall()}
    seen = set()
    columns = []
    for name, oid in described:
        if name in seen:
            raise DuplicateColumnError(name)
        seen.add(name)
        type_name, category = types.get(oid, (f"oid {oid}", ""))
        columns.append(
            SourceColumn(name, oid, type_name, read_plan(name, oid, type_name, category), category)
        )
    return columns


class ReadLayout:
    """The projection that makes a SELECT wire-friendly, and how to turn its COPY stream into a Frame."""

    def __init__(self, columns: Sequence[SourceColumn]):
        self.columns = list(columns)
        self.fixed = [c for c in self.columns if c.plan.type.wire is not None]
        self.text = [c for c in self.columns if c.plan.type.wire is None]
        self.n_masks = math.ceil(len(self.fixed) / binary.MASK_BITS)
        for c in self.columns:
            if c.plan.fallback:
                log.info(
                    f'column "{c.name}" ({c.source_type}) is read through a slower conversion '
                    f"as {c.plan.type.name}"
                )

    def _value(self, c: SourceColumn) -> str:
        return c.plan.expression.format(col=f"{_SOURCE}.{quote_ident(c.name)}")

    def _mask_expressions(self) -> List[str]:
        masks = []
        for m in range(self.n_masks):
            group = self.fixed[m * binary.MASK_BITS : (m + 1) * binary.MASK_BITS]
            refs = [f"{_SOURCE}.{quote_ident(c.name)}" for c in group]
            bits = " | ".join(f"(({r} is null)::int::bigint << {i})" for i, r in enumerate(refs))
            # num_nulls is one cheap call; the bit arithmetic then runs only for rows that have NULLs
            masks.append(
                f"case when num_nulls({', '.join(refs)}) = 0 then 0::bigint else {bits} end"
            )
        return masks

    def select_sql(self, sql: str) -> str:
        # masks first: one read at a row's start tells the width of all its fixed fields
        exprs = self._mask_expressions()
        exprs += [self._value(c) for c in self.fixed + self.text]
        named = [
            f"{e} as __f{i}" for i, e in enumerate(exprs)
        ]  # CREATE TABLE AS needs distinct names
        return f"select {', '.join(named)} from {_subquery(sql)}"

    @property
    def wires(self):
        return [WIRE_TYPES["bigint"]] * self.n_masks + [
            c.plan.type for c in self.fixed + self.text
        ]

    def frame(self, buf: bytes) -> Frame:
        _, arrays, nulls = binary.decode(buf, self.wires, self.n_masks)
        ordered = self.fixed + self.text
        decoded = {
            c.name: (binary.to_numpy(a, c.plan.type), m) for c, a, m in zip(ordered, arrays, nulls)
        }
        return Frame([self._column(c, *decoded[c.name]) for c in self.columns])

    @staticmethod
    def _column(c: SourceColumn, values: np.ndarray, nulls: np.ndarray) -> Column:
        converted = c.source_type if c.oid != c.plan.type.oid else ""
        return Column(c.name, values, c.plan.type, nulls, converted)


def copy_out(conn, select_sql: str) -> bytes:
    buf = io.BytesIO()
    with conn.cursor() as cur:
        cur.copy_expert(f"copy ({select_sql}) to stdout (format binary)", buf)
    return buf.getvalue()


def read_frame(conn, sql: str) -> Frame:
    """Every row of the SELECT, as one Frame."""
    layout = ReadLayout(describe(conn, sql))
    frame = layout.frame(copy_out(conn, layout.select_sql(sql)))
    log.debug(f"read {frame.n_rows} rows x {len(frame.columns)} columns")
    return frame


class BatchReader:
    """Reads a SELECT in batches of about `batch_rows` rows, as often as asked, in the same order.

    The SELECT runs once into a temporary table; each batch is a range of its pages (a TID range
    scan), so memory is bounded by the batch and every pass sees the same rows in the same order.
    """

    def __init__(self, conn, sql: str, batch_rows: int = 50_000):
        self.conn = conn
        self.layout = ReadLayout(describe(conn, sql))
        self.table = quote_ident(f"__sqlflow_batches_{uuid.uuid4().hex[:12]}")
        with conn.cursor() as cur:
            cur.execute(f"create temporary table {self.table} as {self.layout.select_sql(sql)}")
            self.n_rows = cur.rowcount
            # rows per page from the first pages: the file may hold trailing empty pages
            # (PostgreSQL extends relations several pages at a time)
            cur.execute(
                f"select count(*) from {self.table} where ctid < '({_PROBE_PAGES},0)'::tid"
            )
            density = max(cur.fetchone()[0] / _PROBE_PAGES, 1.0)
        self.pages_per_batch = max(1, int(batch_rows / density))
        log.debug(
            f"materialized {self.n_rows} rows for batched reading, {self.pages_per_batch} pages a batch"
        )

    @property
    def names(self) -> List[str]:
        return [c.name for c in self.layout.columns]

    def __iter__(self) -> Iterator[Frame]:
        """Page ranges in order until every row has been read; empty ranges are skipped."""
        first, read = 0, 0
        while read < self.n_rows:
            stop = first + self.pages_per_batch
            sql = (
                f"select * from {self.table} "
                f"where ctid >= '({first},0)'::tid and ctid < '({stop},0)'::tid"
            )
            frame = self.layout.frame(copy_out(self.conn, sql))
            first, read = stop, read + frame.n_rows
            if frame.n_rows:
                yield frame
        if self.n_rows == 0:
            yield self.layout.frame(copy_out(self.conn, f"select * from {self.table}"))

    def close(self) -> None:
        with self.conn.cursor() as cur:
            cur.execute(f"drop table if exists {self.table}")

    def __enter__(self) -> "BatchReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
