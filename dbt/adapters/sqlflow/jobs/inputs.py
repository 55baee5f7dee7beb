"""Column roles of an ML node's input: key, features, label, predict-only, excluded."""
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


def fingerprint(frame: Frame) -> str:
    """A digest of the input's values, NULLs and column names: equal inputs, equal digests."""
    digest = hashlib.blake2b(digest_size=16)
    for column in frame.columns:
        digest.update(column.name.encode())
        values = column.values
        data = "\x1f".join(map(str, values)).encode() if values.dtype == object else np.ascontiguousarray(values).tobytes()
        digest.update(data)
        digest.update(column.null_mask.tobytes())
    return digest.hexdigest()
