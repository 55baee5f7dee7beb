"""Writing numpy columns into PostgreSQL tables through `COPY ... FROM STDIN (FORMAT binary)`."""

import io
import logging
from typing import Optional

from dbt.adapters.sqlflow.data import binary
from dbt.adapters.sqlflow.data.frame import Frame
from dbt.adapters.sqlflow.data.pgtypes import quote_ident

log = logging.getLogger("dbt_sqlflow.data")

CHUNK_ROWS = 250_000  # bounds the encoded buffer (~30 MB for ten float columns)


def column_definitions(frame: Frame) -> str:
    return ", ".join(f"{quote_ident(c.name)} {c.type.name}" for c in frame.columns)


def create_table(
    conn, relation: str, frame: Frame, temporary: bool = False, unlogged: bool = False
) -> None:
    """CREATE TABLE `relation` (an already quoted name) with the frame's columns and types."""
    kind = "temporary table" if temporary else "unlogged table" if unlogged else "table"
    with conn.cursor() as cur:
        cur.execute(f"create {kind} {relation} ({column_definitions(frame)})")


def copy_in(conn, relation: str, frame: Frame, chunk_rows: Optional[int] = None) -> int:
    """Append the frame's rows to an existing table, in chunks; returns the rows written."""
    chunk_rows = chunk_rows or CHUNK_ROWS
    columns = ", ".join(quote_ident(c.name) for c in frame.columns)
    statement = f"copy {relation} ({columns}) from stdin (format binary)"
    with conn.cursor() as cur:
        for start in range(0, frame.n_rows, chunk_rows):
            part = frame.take(slice(start, start + chunk_rows))
            fields = [(c.type, binary.to_wire(c.values, c.type)) for c in part.columns]
            payload = binary.encode(fields, [c.nulls for c in part.columns])
            cur.copy_expert(statement, io.BytesIO(payload))
    log.debug(f"wrote {frame.n_rows} rows to {relation}")
    return frame.n_rows


def write_frame(conn, relation: str, frame: Frame, **create_options) -> int:
    """Create `relation` and fill it with the frame."""
    create_table(conn, relation, frame, **create_options)
    return copy_in(conn, relation, frame)
