"""Turning input columns into a numeric matrix, and back: imputation, one-hot states, normalization.

The fitted state is plain JSON (`to_dict` / `from_dict`): it is stored in the model registry and
replayed at prediction, so new rows are encoded exactly as the training rows were.

Columns arrive as `RawColumn`s (values, NULL mask, kind). Text and boolean columns are categorical;
numbers, dates (days) and timestamps (seconds) are continuous.

max_input_attributes rule: continuous features are kept first, in column order, then categorical
states from the most to the least frequent, until the limit is reached.
"""
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np

OTHER = "__other__"
MISSING = "__missing__"


class EncodingError(ValueError):
    pass


@dataclass
class RawColumn:
    name: str
    values: np.ndarray
    nulls: Optional[np.ndarray]
    categorical: bool

    @property
    def null_mask(self) -> np.ndarray:
        return self.nulls if self.nulls is not None else np.zeros(len(self.values), bool)


def continuous_values(values: np.ndarray) -> np.ndarray:
    """Numbers as float64; dates as days and timestamps as seconds since 1970."""
    if values.dtype.kind == "M":
        unit = "D" if np.datetime_data(values.dtype)[0] == "D" else "s"
        return values.astype(f"datetime64[{unit}]").astype(np.int64).astype(np.float64)
    return values.astype(np.float64)


def _state_strings(values: np.ndarray) -> np.ndarray:
    if values.dtype.kind == "b":
        return np.where(values, "true", "false").astype(object)
    return values.astype(str).astype(object)


class FeatureEncoder:
    def __init__(self, normalize="zscore", max_states=100, null_handling="impute", max_input_attributes=255):
        self.normalize = normalize
        self.max_states = max_states
        self.null_handling = null_handling
        self.max_input_attributes = max_input_attributes
        self.features_: List[dict] = []

    # ---- fitting

    def fit(self, columns: Sequence[RawColumn]) -> "FeatureEncoder":
        self.features_ = [self._fit_one(c) for c in columns]
        self._limit_attributes()
        return self

    def _check_nulls(self, column: RawColumn, nulls: np.ndarray) -> None:
        if nulls.all():
            raise EncodingError(f'feature column "{column.name}" holds only NULLs; '
                                f"exclude it or fill it in the SELECT.")
        if nulls.any() and self.null_handling == "error":
            raise EncodingError(f'feature column "{column.name}" has {int(nulls.sum())} NULL values and '
                                f"null_handling='error'; fill them in the SELECT or use "
                                f"null_handling='impute' or 'indicator'.")

    def _fit_one(self, column: RawColumn) -> dict:
        nulls = column.null_mask
        self._check_nulls(column, nulls)
        indicator = bool(self.null_handling == "indicator" and nulls.any())
        if column.categorical:
            return self._fit_categorical(column, nulls, indicator)
        x = continuous_values(column.values[~nulls])
        center, scale = self._scaling(x)
        return {"name": column.name, "kind": "continuous", "impute": float(x.mean()),
                "center": center, "scale": scale, "indicator": indicator}

    def _scaling(self, x: np.ndarray):
        from sklearn.preprocessing import MinMaxScaler, StandardScaler

        if self.normalize == "zscore":
            scaler = StandardScaler().fit(x.reshape(-1, 1))  # a constant column gets scale 1, not NaN
            return float(scaler.mean_[0]), float(scaler.scale_[0])
        if self.normalize == "minmax":
            scaler = MinMaxScaler().fit(x.reshape(-1, 1))
            return float(scaler.data_min_[0]), float(1.0 / scaler.scale_[0])
        return 0.0, 1.0

    def _fit_categorical(self, column: RawColumn, nulls: np.ndarray, indicator: bool) -> dict:
        states, counts = np.unique(_state_strings(column.values[~nulls]), return_counts=True)
        order = sorted(range(len(states)), key=lambda i: (-counts[i], states[i]))  # ties by name: deterministic
        kept = [str(states[i]) for i in order[: self.max_states]]
        frequency = {str(states[i]): int(counts[i]) for i in order[: self.max_states]}
        if indicator:
            kept.append(MISSING)
            frequency[MISSING] = int(nulls.sum())
        other = len(states) > self.max_states
        return {"name": column.name, "kind": "categorical", "states": kept, "other": other,
                "impute": kept[0], "frequency": frequency, "indicator": indicator}

    def _limit_attributes(self) -> None:
        budget = self.max_input_attributes
        for f in self.features_:
            if f["kind"] == "continuous":
                f["dropped"] = budget <= 0
                budget -= 1 if budget > 0 else 0
        ranked = sorted(
            ((f["frequency"][s], f["name"], s) for f in self.features_ if f["kind"] == "categorical"
             for s in f["states"]),
            key=lambda t: (-t[0], t[1], t[2]),
        )
        keep = {(name, s) for _, name, s in ranked[:max(budget, 0)]}
        for f in self.features_:
            if f["kind"] == "categorical":
                f["states"] = [s for s in f["states"] if (f["name"], s) in keep]

    # ---- encoding

    @property
    def feature_names(self) -> List[str]:
        names = []
        for f in self.features_:
            if f["kind"] == "continuous":
                if not f.get("dropped"):
                    names.append(f["name"])
                if f["indicator"]:
                    names.append(f"{f['name']}{MISSING}")
            else:
                names += [f"{f['name']}={s}" for s in f["states"]]
                if f["other"]:
                    names.append(f"{f['name']}={OTHER}")
        return names

    def transform(self, columns: Dict[str, RawColumn]) -> np.ndarray:
        blocks = []
        for f in self.features_:
            column = columns.get(f["name"])
            if column is None:
                raise EncodingError(f'feature column "{f["name"]}" is missing from the input.')
            blocks += self._encode_continuous(f, column) if f["kind"] == "continuous" \
                else self._encode_categorical(f, column)
        n = len(next(iter(columns.values())).values) if columns else 0
        return np.column_stack(blocks) if blocks else np.empty((n, 0))

    def _encode_continuous(self, f: dict, column: RawColumn) -> List[np.ndarray]:
        nulls = column.null_mask
        if nulls.any() and self.null_handling == "error":
            raise EncodingError(f'feature column "{f["name"]}" has NULL values and null_handling=\'error\'.')
        x = np.where(nulls, f["impute"], continuous_values(column.values))
        out = [] if f.get("dropped") else [(x - f["center"]) / f["scale"]]
        if f["indicator"]:
            out.append(nulls.astype(np.float64))
        return out

    def _encode_categorical(self, f: dict, column: RawColumn) -> List[np.ndarray]:
        nulls = column.null_mask
        if nulls.any() and self.null_handling == "error":
            raise EncodingError(f'feature column "{f["name"]}" has NULL values and null_handling=\'error\'.')
        states = _state_strings(column.values)
        states[nulls] = MISSING if f["indicator"] else f["impute"]
        out = [(states == s).astype(np.float64) for s in f["states"]]
        if f["other"]:
            known = np.isin(states, np.array(f["states"], dtype=object))
            out.append((~known).astype(np.float64))
        return out

    def to_original_units(self, name: str, value: np.ndarray) -> np.ndarray:
        """An encoded feature's values in the column's own units (one-hot features are shares)."""
        for f in self.features_:
            if f["kind"] == "continuous" and f["name"] == name:
                return value * f["scale"] + f["center"]
        return value

    # ---- persistence

    def to_dict(self) -> dict:
        return {"normalize": self.normalize, "max_states": self.max_states, "null_handling": self.null_handling,
                "max_input_attributes": self.max_input_attributes, "features": self.features_,
                "encoded": self.feature_names}

    @classmethod
    def from_dict(cls, state: dict) -> "FeatureEncoder":
        encoder = cls(state["normalize"], state["max_states"], state["null_handling"], state["max_input_attributes"])
        encoder.features_ = state["features"]
        return encoder
