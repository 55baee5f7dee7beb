"""An ML node's input: column roles (key, features, label, predict-only, excluded), its fingerprint,
and whether it fits the memory budget."""

import hashlib
import logging
from dataclasses import dataclass
from typing import Dict, List, Sequence

import numpy as np

from dbt.adapters.sqlflow.data.frame import Frame
from dbt.adapters.sqlflow.errors import InputError
from dbt.adapters.sqlflow.ml.preprocess import FeatureEncoder, RawColumn

log = logging.getLogger("dbt_sqlflow.jobs")


@dataclass
class Roles:
    key: List[str]
    features: List[str]
    predict_only: List[str]
    label: str = None


def _missing(names: Sequence[str], frame: Frame, what: str) -> None:
    absent = [n for n in names if n not in frame]
    if absent:
        raise InputError(
            f"{what} column(s) {', '.join(repr(a) for a in absent)} not in the SELECT; "
            f"its columns are: {', '.join(frame.names)}."
        )


def _conflicts(
    key: List[str], features, label, exclude: List[str], predict_only: List[str]
) -> None:
    """A column in two roles is a mistake the model would hide (a label among the features trains
    a perfect, useless model), so each is an error naming the column and the fix."""
    if label and label in key:
        raise InputError(
            f"label '{label}' is also the key; the key identifies rows and is never learned. "
            f"Name a different label or key."
        )
    for name in features or []:
        if name == label:
            raise InputError(
                f"label '{label}' is listed in features; the model would learn the answer from "
                f"itself. Remove it from features."
            )
        if name in key:
            raise InputError(
                f"key column '{name}' is listed in features; keys identify rows and are not "
                f"learned. Remove it from features (or from key)."
            )
        if name in exclude:
            raise InputError(
                f"column '{name}' is both in features and in exclude; keep it in one of them."
            )
        if name in predict_only:
            raise InputError(
                f"column '{name}' is both in features and in predict_only; keep it in one of them."
            )


def roles(frame: Frame, options: Dict) -> Roles:
    key, exclude = options.get("key") or [], options.get("exclude") or []
    predict_only, label = options.get("predict_only") or [], options.get("label")
    listed = options.get("features")
    if listed is not None and len(listed) == 0:
        raise InputError(
            "features=[] names no column; list the feature columns, or leave features out to use "
            "every column that is not a key, label, exclude or predict_only column."
        )
    _conflicts(list(key), listed, label, list(exclude), list(predict_only))
    for what, names in (
        ("key", key),
        ("exclude", exclude),
        ("predict_only", predict_only),
        ("label", [label] if label else []),
    ):
        _missing(names, frame, what)
    taken = set(key) | set(exclude) | set(predict_only) | ({label} if label else set())
    features = listed or [n for n in frame.names if n not in taken]
    _missing(features, frame, "feature")
    if not features:
        raise InputError(
            "no feature columns are left after key, label, exclude and predict_only; "
            "list them with config(features=[...])."
        )
    return Roles(
        key=list(key), features=list(features), predict_only=list(predict_only), label=label
    )


def _non_finite(column) -> np.ndarray:
    """True where a float column holds NaN or +-Infinity (NULLs are not counted)."""
    if column.values.dtype.kind != "f":
        return np.zeros(len(column), bool)
    return ~np.isfinite(column.values) & ~column.null_mask


def non_finite_rows(frame: Frame, names: Sequence[str]) -> np.ndarray:
    """True where any of the features holds NaN or +-Infinity."""
    bad = np.zeros(frame.n_rows, bool)
    for name in names:
        bad |= _non_finite(frame[name])
    return bad


def check_finite(frame: Frame, names: Sequence[str]) -> None:
    """Training refuses NaN and +-Infinity before any epoch runs, naming the column."""
    for name in names:
        bad = _non_finite(frame[name])
        if bad.any():
            raise InputError(
                f"feature column '{name}' has {int(bad.sum())} NaN or Infinity value(s); a model cannot "
                f"learn from them. Filter them out or turn them into NULLs in the SELECT, e.g. case when "
                f"{name} in ('NaN', 'Infinity', '-Infinity') then null else {name} end; NULLs are imputed."
            )


def check_outputs(kept: Sequence, outputs: Sequence[str]) -> None:
    """An input column named like an output column would be written twice."""
    names = {getattr(c, "name", c) for c in kept}
    clash = [o for o in outputs if o in names]
    if clash:
        raise InputError(
            f"the SELECT already has a column named {', '.join(repr(c) for c in clash)}, which this "
            f"node writes; rename it in the SELECT, set label_column='...' for the cluster column, "
            f"or pass_through=false to keep only key and feature columns."
        )


def report_dropped(encoder) -> None:
    if encoder.dropped_:
        shown = ", ".join(encoder.dropped_[:20]) + (
            f" and {len(encoder.dropped_) - 20} more" if len(encoder.dropped_) > 20 else ""
        )
        log.warning(
            f"max_input_attributes={encoder.max_input_attributes}: {len(encoder.dropped_)} encoded "
            f"attribute(s) left out of the model: {shown}. Raise max_input_attributes to keep them; "
            f"the list is in the registry (features -> dropped)."
        )


def new_encoder(options: Dict) -> FeatureEncoder:
    """The feature encoder the node's options ask for, not fitted yet."""
    return FeatureEncoder(
        options["normalize"],
        options["max_states"],
        options["null_handling"],
        options["max_input_attributes"],
    )


def raw_columns(frame: Frame, names: Sequence[str]) -> Dict[str, RawColumn]:
    return {
        n: RawColumn(n, frame[n].values, frame[n].nulls, frame[n].type.kind in ("text", "boolean"))
        for n in names
    }


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
        cur.execute(
            f"explain (format json) select * from (\n{sql.strip().rstrip(';')}\n) as __sqlflow_q"
        )
        plan = cur.fetchone()[0][0]["Plan"]
    return float(plan["Plan Rows"]) * max(float(plan["Plan Width"]), 8.0)


def should_stream(conn, sql: str, options: Dict) -> bool:
    budget = options.get("memory_budget_mb", 1024)
    return budget == 0 or estimated_bytes(conn, sql) > budget * 2**20
