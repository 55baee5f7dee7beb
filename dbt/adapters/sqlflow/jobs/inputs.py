"""An ML node's input: column roles (key, features, label, predict-only, excluded), its fingerprint,
and whether it fits the memory budget."""
import hashlib
from dataclasses import dataclass
from typing import Dict, List, Sequence

import numpy as np

from dbt.adapters.sqlflow.data.frame import Frame
from dbt.adapters.sqlflow.ml.preprocess import RawColumn


class InputError(ValueError):
    pass


@dataclass
class Roles:
    key: List[str]
    features: List[str]
    predict_only: List[str]
    label: str = None


def _missing(names: Sequence[str], frame: Frame, what: str) -> None:
    absent = [n for n in names if n not in frame]
    if absent:
        raise InputError(f"{what} column(s) {', '.join(repr(a) for a in absent)} not in the SELECT; "
                         f"its columns are: {', '.join(frame.names)}.")


def roles(frame: Frame, options: Dict) -> Roles:
    key, exclude = options.get("key") or [], options.get("exclude") or []
    predict_only, label = options.get("predict_only") or [], options.get("label")
    for what, names in (("key", key), ("exclude", exclude), ("predict_only", predict_only),
                        ("label", [label] if label else [])):
        _missing(names, frame, what)
    taken = set(key) | set(exclude) | set(predict_only) | ({label} if label else set())
    features = options.get("features") or [n for n in frame.names if n not in taken]
    _missing(features, frame, "feature")
    if not features:
        raise InputError("no feature columns are left after key, label, exclude and predict_only; "
                         "list them with config(features=[...]).")
    return Roles(key=list(key), features=list(features), predict_only=list(predict_only), label=label)


def raw_columns(frame: Frame, names: Sequence[str]) -> Dict[str, RawColumn]:
    return {n: RawColumn(n, frame[n].values, frame[n].nulls, frame[n].type.kind in ("text", "boolean"))
            for n in names}


class Fingerprint:
    """A digest of the input's values, NULLs and column names, fed batch by batch: equal inputs,
    equal digests."""

    def __init__(self):
        self._digest = hashlib.blake2b(digest_size=16)

    def update(self, frame: Frame) -> None:
        for column in frame.columns:
            self._digest.update(column.name.encode())
            values = column.values
            if values.dtype == object:
                self._digest.update("\x1f".join(map(str, values)).encode())
            else:
                self._digest.update(np.ascontiguousarray(values).tobytes())
            self._digest.update(column.null_mask.tobytes())

    def hexdigest(self) -> str:
        return self._digest.hexdigest()


def estimated_bytes(conn, sql: str) -> float:
    """The planner's estimate of the SELECT's size (rows x width): no rows are read to decide."""
    with conn.cursor() as cur:
        cur.execute(f"explain (format json) select * from (\n{sql.strip().rstrip(';')}\n) as __sqlflow_q")
        plan = cur.fetchone()[0][0]["Plan"]
    return float(plan["Plan Rows"]) * max(float(plan["Plan Width"]), 8.0)


def should_stream(conn, sql: str, options: Dict) -> bool:
    budget = options.get("memory_budget_mb", 1024)
    return budget == 0 or estimated_bytes(conn, sql) > budget * 2 ** 20
