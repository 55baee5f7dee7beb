"""PostgreSQL types as the data path sees them: how each travels in COPY binary and lands in numpy."""

from dataclasses import dataclass
from typing import Optional

import numpy as np

from dbt.adapters.sqlflow.errors import SqlflowError

# COPY binary counts dates in days and timestamps in microseconds from 2000-01-01.
PG_EPOCH_DAYS = 10957
PG_EPOCH_MICROS = PG_EPOCH_DAYS * 86_400_000_000


@dataclass(frozen=True)
class WireType:
    """A type we decode and encode ourselves."""

    name: str  # SQL name, used in CREATE TABLE and casts
    oid: int
    wire: Optional[str]  # numpy dtype of one value on the wire; None = variable width (text)
    kind: str  # integer | float | boolean | text | date | timestamp

    @property
    def numpy_dtype(self) -> np.dtype:
        return np.dtype(_NUMPY_DTYPES[self.kind])


_NUMPY_DTYPES = {
    "integer": "int64",
    "float": "float64",
    "boolean": "bool",
    "text": "object",
    "date": "datetime64[D]",
    "timestamp": "datetime64[us]",
}

WIRE_TYPES = {
    t.name: t
    for t in [
        WireType("smallint", 21, ">i2", "integer"),
        WireType("integer", 23, ">i4", "integer"),
        WireType("bigint", 20, ">i8", "integer"),
        WireType("real", 700, ">f4", "float"),
        WireType("double precision", 701, ">f8", "float"),
        WireType("boolean", 16, "?", "boolean"),
        WireType("text", 25, None, "text"),
        WireType("date", 1082, ">i4", "date"),
        WireType("timestamp", 1114, ">i8", "timestamp"),
        WireType("timestamptz", 1184, ">i8", "timestamp"),
    ]
}
_BY_OID = {t.oid: t for t in WIRE_TYPES.values()}

# Read as text with a cast in SQL: PostgreSQL renders these well and they behave as categories.
_TEXT_LIKE_OIDS = {1043: "varchar", 1042: "char", 19: "name", 18: '"char"'}
_TEXT_FALLBACK_OIDS = {
    2950: "uuid",
    869: "inet",
    650: "cidr",
    829: "macaddr",
    1083: "time",
    1266: "timetz",
}
_TEXT_FALLBACK_CATEGORIES = {"E": "enum", "S": "string"}


@dataclass(frozen=True)
class ReadPlan:
    """How one source column is read: the SQL expression over it and the type that arrives."""

    expression: str  # SQL over the quoted column name, `{col}` marks the column
    type: WireType
    fallback: bool = False  # True when a slower or lossy conversion is used (we log it)


class UnsupportedTypeError(SqlflowError, ValueError):
    def __init__(self, column: str, type_name: str):
        self.column = column
        self.type_name = type_name
        super().__init__(
            f'column "{column}" has type {type_name}, which dbt-sqlflow cannot read as a feature. '
            f"Cast it in the SELECT to a number, boolean, text, date or timestamp "
            f'(e.g. "{column}"::text), or leave it out of the SELECT.'
        )


def read_plan(column: str, oid: int, type_name: str, category: str) -> ReadPlan:
    """The read plan for a column of the given type, or UnsupportedTypeError."""
    if oid in _BY_OID:
        return ReadPlan("{col}", _BY_OID[oid])
    if oid in _TEXT_LIKE_OIDS:
        return ReadPlan("{col}::text", WIRE_TYPES["text"])
    if oid == 1700:  # numeric: float8 keeps 15 significant digits, plenty for features
        return ReadPlan("{col}::double precision", WIRE_TYPES["double precision"])
    if oid == 790:  # money
        return ReadPlan("{col}::numeric::double precision", WIRE_TYPES["double precision"], True)
    if oid == 1186:  # interval, as seconds
        return ReadPlan(
            "extract(epoch from {col})::double precision", WIRE_TYPES["double precision"], True
        )
    if oid in _TEXT_FALLBACK_OIDS or category in _TEXT_FALLBACK_CATEGORIES:
        return ReadPlan("{col}::text", WIRE_TYPES["text"], True)
    raise UnsupportedTypeError(column, type_name)


def wire_type_for(values: np.ndarray) -> WireType:
    """The PostgreSQL type a numpy column is written as when no type is given."""
    kind = values.dtype.kind
    if kind == "b":
        return WIRE_TYPES["boolean"]
    if kind in "iu":
        return WIRE_TYPES["bigint"]
    if kind == "f":
        return WIRE_TYPES["double precision"]
    if kind == "M":
        unit = np.datetime_data(values.dtype)[0]
        return WIRE_TYPES["date"] if unit in ("D", "W", "M", "Y") else WIRE_TYPES["timestamp"]
    if kind in "OUS":
        return WIRE_TYPES["text"]
    raise TypeError(f"cannot write a numpy column of dtype {values.dtype} to PostgreSQL")


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
