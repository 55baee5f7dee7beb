"""The data path: SELECT -> numpy columns -> tables, over COPY binary on a psycopg2 connection.

Nothing here imports dbt, so every piece runs and tests on a plain connection.
"""

from dbt.adapters.sqlflow.data.frame import Column, Frame
from dbt.adapters.sqlflow.data.pgtypes import UnsupportedTypeError
from dbt.adapters.sqlflow.data.reader import (
    BatchReader,
    DuplicateColumnError,
    describe,
    read_frame,
)
from dbt.adapters.sqlflow.data.writer import copy_in, create_table, write_frame

__all__ = [
    "BatchReader",
    "Column",
    "DuplicateColumnError",
    "Frame",
    "UnsupportedTypeError",
    "copy_in",
    "create_table",
    "describe",
    "read_frame",
    "write_frame",
]
