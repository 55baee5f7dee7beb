"""Columns of a query result held as numpy arrays, with NULL masks and their PostgreSQL types."""

from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Sequence

import numpy as np

from dbt.adapters.sqlflow.data.pgtypes import WireType, wire_type_for


@dataclass
class Column:
    name: str
    values: np.ndarray
    type: WireType
    nulls: Optional[np.ndarray] = None  # True where the value is NULL; None when there are none
    source_type: str = ""  # the type in the SELECT when the read converted it (numeric, uuid, ...)

    def __post_init__(self):
        if self.nulls is not None and not self.nulls.any():
            self.nulls = None

    def __len__(self) -> int:
        return len(self.values)

    @classmethod
    def of(cls, name: str, values, nulls=None, type: Optional[WireType] = None) -> "Column":
        values = np.asarray(values)
        return cls(
            name,
            values,
            type or wire_type_for(values),
            None if nulls is None else np.asarray(nulls, bool),
        )

    @property
    def null_mask(self) -> np.ndarray:
        return self.nulls if self.nulls is not None else np.zeros(len(self.values), bool)

    def take(self, index) -> "Column":
        nulls = None if self.nulls is None else self.nulls[index]
        return Column(self.name, self.values[index], self.type, nulls, self.source_type)


@dataclass
class Frame:
    """An ordered set of equally long columns."""

    columns: List[Column] = field(default_factory=list)

    def __post_init__(self):
        lengths = {len(c) for c in self.columns}
        if len(lengths) > 1:
            raise ValueError(f"columns differ in length: {sorted(lengths)}")

    @property
    def n_rows(self) -> int:
        return len(self.columns[0]) if self.columns else 0

    @property
    def names(self) -> List[str]:
        return [c.name for c in self.columns]

    def __getitem__(self, name: str) -> Column:
        for column in self.columns:
            if column.name == name:
                return column
        raise KeyError(name)

    def __contains__(self, name: str) -> bool:
        return name in self.names

    def select(self, names: Iterable[str]) -> "Frame":
        return Frame([self[n] for n in names])

    def take(self, index) -> "Frame":
        return Frame([c.take(index) for c in self.columns])

    def as_dict(self) -> Dict[str, np.ndarray]:
        return {c.name: c.values for c in self.columns}

    @classmethod
    def concat(cls, frames: Sequence["Frame"]) -> "Frame":
        if not frames:
            return cls([])
        columns = []
        for parts in zip(*(f.columns for f in frames)):
            first = parts[0]
            nulls = None
            if any(p.nulls is not None for p in parts):
                nulls = np.concatenate([p.null_mask for p in parts])
            values = np.concatenate([p.values for p in parts])
            columns.append(Column(first.name, values, first.type, nulls, first.source_type))
        return cls(columns)
