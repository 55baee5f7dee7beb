"""Turning input columns into a numeric matrix, and back: imputation, one-hot states, normalization.

The fitted state is plain JSON (`to_dict` / `from_dict`): it is stored in the model registry and
replayed at prediction, so new rows are encoded exactly as the training rows were.

Columns arrive as `RawColumn`s (values, NULL mask, kind). Text and boolean columns are categorical;
numbers, dates (days) and timestamps (seconds) are continuous.

max_input_attributes rule: continuous features are kept first, in column order, then categorical
states from the most to the least frequent, until the limit is reached.
"""

from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from dbt.adapters.sqlflow.errors import EncodingError

OTHER = "__other__"
MISSING = "__missing__"
PROFILE_SAMPLE = 20_000  # values per continuous column kept for the drift bins
PROFILE_BINS = 10


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


class _ColumnStats:
    """NULL count and state counts, with scikit-learn's scalers fitted batch by batch (partial_fit
    keeps their statistics exact over any number of batches)."""

    def __init__(self, categorical: bool, seed=0):
        self.categorical = categorical
        self.count = self.nulls = 0
        self.states: Dict[str, int] = {}
        # a uniform sample over all batches: the values with the smallest random keys
        self.sample, self.keys = np.empty(0), np.empty(0)
        self.rng = np.random.default_rng(seed)  # a shard seeds its own, so shards draw other keys
        if not categorical:
            from sklearn.preprocessing import MinMaxScaler, StandardScaler

            self.standard, self.minmax = StandardScaler(), MinMaxScaler()

    def add(self, column: RawColumn) -> None:
        nulls = column.null_mask
        self.nulls += int(nulls.sum())
        present = column.values[~nulls]
        self.count += len(present)
        if self.categorical:
            states, counts = np.unique(_state_strings(present), return_counts=True)
            for state, count in zip(states, counts):
                self.states[str(state)] = self.states.get(str(state), 0) + int(count)
        elif len(present):
            x = continuous_values(present).reshape(-1, 1)
            self.standard.partial_fit(x)
            self.minmax.partial_fit(x)
            self._keep_sample(x[:, 0])

    def _keep_sample(self, x: np.ndarray) -> None:
        values = np.concatenate([self.sample, x])
        keys = np.concatenate([self.keys, self.rng.random(len(x))])
        if len(values) > PROFILE_SAMPLE:
            kept = np.argpartition(keys, PROFILE_SAMPLE)[:PROFILE_SAMPLE]
            values, keys = values[kept], keys[kept]
        self.sample, self.keys = values, keys

    def merge(self, other: "_ColumnStats") -> "_ColumnStats":
        """Add another shard's statistics: counts add, means and variances combine exactly (Chan et
        al.), and the sample keeps the smallest keys of both, so it stays uniform."""
        self.count, self.nulls = self.count + other.count, self.nulls + other.nulls
        for state, count in other.states.items():
            self.states[state] = self.states.get(state, 0) + count
        if self.categorical or not hasattr(other.standard, "mean_"):
            return self
        if not hasattr(self.standard, "mean_"):
            self.standard, self.minmax = other.standard, other.minmax
        else:
            _merge_scalers(self.standard, self.minmax, other.standard, other.minmax)
        values = np.concatenate([self.sample, other.sample])
        keys = np.concatenate([self.keys, other.keys])
        if len(values) > PROFILE_SAMPLE:
            kept = np.argpartition(keys, PROFILE_SAMPLE)[:PROFILE_SAMPLE]
            values, keys = values[kept], keys[kept]
        self.sample, self.keys = values, keys
        return self

    def to_dict(self) -> dict:
        """Plain JSON (a worker process reports its shard's statistics on stdout)."""
        out = {
            "categorical": self.categorical,
            "count": self.count,
            "nulls": self.nulls,
            "states": self.states,
            "sample": self.sample.tolist(),
            "keys": self.keys.tolist(),
        }
        if not self.categorical and hasattr(self.standard, "mean_"):
            out["moments"] = [
                float(self.standard.n_samples_seen_),
                float(self.standard.mean_[0]),
                float(self.standard.var_[0]),
                float(self.minmax.data_min_[0]),
                float(self.minmax.data_max_[0]),
            ]
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "_ColumnStats":
        stats = cls(data["categorical"])
        stats.count, stats.nulls, stats.states = data["count"], data["nulls"], data["states"]
        stats.sample, stats.keys = np.array(data["sample"]), np.array(data["keys"])
        if "moments" in data:
            n, mean, var, low, high = data["moments"]
            stats.standard.fit(np.array([[0.0]]))  # fitted attributes to overwrite
            stats.minmax.fit(np.array([[0.0]]))
            stats.standard.n_samples_seen_ = int(n)
            stats.standard.mean_, stats.standard.var_ = np.array([mean]), np.array([var])
            stats.standard.scale_ = np.array([np.sqrt(var) if var > 0 else 1.0])
            span = high - low
            stats.minmax.data_min_, stats.minmax.data_max_ = np.array([low]), np.array([high])
            stats.minmax.data_range_ = np.array([span])
            stats.minmax.scale_ = np.array([1.0 / (span if span > 0 else 1.0)])
            stats.minmax.min_ = -stats.minmax.data_min_ * stats.minmax.scale_
        return stats

    def profile(self, states: List[str]) -> dict:
        """The training distribution the drift test compares with: shares of quantile bins
        (continuous; bin i holds edges[i-1] <= x < edges[i], as PostgreSQL's width_bucket) or of the
        kept states and the rest (categorical), and the share of NULLs."""
        total = self.count + self.nulls
        if self.categorical:
            kept = [self.states.get(state, 0) / total for state in states]
            rest = sum(self.states.values()) / total - sum(kept)
            return {
                "states": states,
                "shares": kept + [max(rest, 0.0)],
                "nulls": self.nulls / total,
            }
        finite = self.sample[np.isfinite(self.sample)]
        quantiles = np.linspace(0, 1, PROFILE_BINS + 1)[1:-1]
        edges = np.unique(np.quantile(finite, quantiles)) if len(finite) else np.empty(0)
        bins = np.bincount(np.searchsorted(edges, finite, side="right"), minlength=len(edges) + 1)
        present = self.count / total
        shares = bins / max(len(finite), 1) * present
        return {"edges": edges.tolist(), "shares": shares.tolist(), "nulls": self.nulls / total}


def _merge_scalers(standard, minmax, other_standard, other_minmax) -> None:
    """Fold a second shard's fitted StandardScaler and MinMaxScaler into the first pair."""
    n_a, n_b = float(standard.n_samples_seen_), float(other_standard.n_samples_seen_)
    n = n_a + n_b
    delta = other_standard.mean_ - standard.mean_
    mean = standard.mean_ + delta * n_b / n
    m2 = standard.var_ * n_a + other_standard.var_ * n_b + delta**2 * n_a * n_b / n
    standard.mean_, standard.var_, standard.n_samples_seen_ = mean, m2 / n, int(n)
    standard.scale_ = np.where(standard.var_ > 0, np.sqrt(standard.var_), 1.0)
    low = np.minimum(minmax.data_min_, other_minmax.data_min_)
    high = np.maximum(minmax.data_max_, other_minmax.data_max_)
    span = high - low
    minmax.data_min_, minmax.data_max_, minmax.data_range_ = low, high, span
    minmax.scale_ = 1.0 / np.where(span > 0, span, 1.0)
    minmax.min_ = -low * minmax.scale_


def column_statistics(
    batches: Iterable[Dict[str, RawColumn]], seed=0
) -> Dict[str, "_ColumnStats"]:
    """One pass over batches of rows: the statistics an encoder is fitted from, per column. Shards
    compute theirs apart (seed: the shard's own); `merge_statistics` combines them exactly."""
    stats: Dict[str, _ColumnStats] = {}
    for batch in batches:
        for name, column in batch.items():
            stats.setdefault(name, _ColumnStats(column.categorical, seed)).add(column)
    return stats


def merge_statistics(parts: Sequence[Dict[str, "_ColumnStats"]]) -> Dict[str, "_ColumnStats"]:
    merged: Dict[str, _ColumnStats] = {}
    for part in parts:
        for name, stats in part.items():
            merged[name] = merged[name].merge(stats) if name in merged else stats
    return merged


def feature_groups(encoder_state: Dict) -> List[Tuple[str, List[int]]]:
    """(original feature, its encoded columns) in encoding order: a categorical's states and a
    missing indicator belong to their column."""
    groups, j = [], 0
    for f in encoder_state["features"]:
        if f["kind"] == "continuous":
            n = (0 if f.get("dropped") else 1) + (1 if f["indicator"] else 0)
        else:
            n = len(f["states"]) + (1 if f["other"] else 0)
        groups.append((f["name"], list(range(j, j + n))))
        j += n
    return groups


class FeatureEncoder:
    def __init__(
        self, normalize="zscore", max_states=100, null_handling="impute", max_input_attributes=255
    ):
        self.normalize = normalize
        self.max_states = max_states
        self.null_handling = null_handling
        self.max_input_attributes = max_input_attributes
        self.features_: List[dict] = []
        self.dropped_: List[str] = []  # features and states cut by max_input_attributes

    # ---- fitting

    def fit(self, columns: Sequence[RawColumn]) -> "FeatureEncoder":
        return self.fit_batches([{c.name: c for c in columns}])

    def fit_batches(self, batches: Iterable[Dict[str, RawColumn]]) -> "FeatureEncoder":
        """Fit from batches of rows (one pass, memory bounded by a batch): the statistics are exact."""
        return self.fit_statistics(column_statistics(batches))

    def fit_statistics(self, stats: Dict[str, "_ColumnStats"]) -> "FeatureEncoder":
        """Fit from `column_statistics` (of one pass, or merged from shards)."""
        self.features_ = [self._finish(name, s) for name, s in stats.items()]
        self._limit_attributes()
        return self

    def _finish(self, name: str, s: "_ColumnStats") -> dict:
        if s.count == 0:
            raise EncodingError(
                f'feature column "{name}" holds only NULLs; exclude it or fill it in the SELECT.'
            )
        if s.nulls and self.null_handling == "error":
            raise EncodingError(
                f"feature column \"{name}\" has {s.nulls} NULL values and null_handling='error'; "
                f"fill them in the SELECT or use null_handling='impute' or 'indicator'."
            )
        indicator = bool(self.null_handling == "indicator" and s.nulls)
        if s.categorical:
            return self._categorical(name, s, indicator)
        mean = float(s.standard.mean_[0])
        if self.normalize == "zscore":  # scikit-learn gives a constant column scale 1, not NaN
            center, scale = mean, float(s.standard.scale_[0])
        elif self.normalize == "minmax":
            center, scale = float(s.minmax.data_min_[0]), float(1.0 / s.minmax.scale_[0])
        else:
            center, scale = 0.0, 1.0
        return {
            "name": name,
            "kind": "continuous",
            "impute": mean,
            "center": float(center),
            "scale": float(scale),
            "indicator": indicator,
            "profile": s.profile([]),
        }

    def _categorical(self, name: str, s: "_ColumnStats", indicator: bool) -> dict:
        order = sorted(
            s.states, key=lambda state: (-s.states[state], state)
        )  # ties by name: deterministic
        kept = order[: self.max_states]
        frequency = {state: s.states[state] for state in kept}
        if indicator:
            kept.append(MISSING)
            frequency[MISSING] = s.nulls
        return {
            "name": name,
            "kind": "categorical",
            "states": kept,
            "other": len(order) > self.max_states,
            "impute": kept[0],
            "frequency": frequency,
            "indicator": indicator,
            "profile": s.profile([state for state in kept if state != MISSING]),
        }

    def _limit_attributes(self) -> None:
        budget = self.max_input_attributes
        for f in self.features_:
            if f["kind"] == "continuous":
                f["dropped"] = budget <= 0
                budget -= 1 if budget > 0 else 0
        ranked = sorted(
            (
                (f["frequency"][s], f["name"], s)
                for f in self.features_
                if f["kind"] == "categorical"
                for s in f["states"]
            ),
            key=lambda t: (-t[0], t[1], t[2]),
        )
        keep = {(name, s) for _, name, s in ranked[: max(budget, 0)]}
        self.dropped_ = [f["name"] for f in self.features_ if f.get("dropped")]
        self.dropped_ += [f"{name}={s}" for _, name, s in ranked[max(budget, 0) :]]
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
            blocks += (
                self._encode_continuous(f, column)
                if f["kind"] == "continuous"
                else self._encode_categorical(f, column)
            )
        n = len(next(iter(columns.values())).values) if columns else 0
        return np.column_stack(blocks) if blocks else np.empty((n, 0))

    def _encode_continuous(self, f: dict, column: RawColumn) -> List[np.ndarray]:
        nulls = column.null_mask
        if nulls.any() and self.null_handling == "error":
            raise EncodingError(
                f"feature column \"{f['name']}\" has NULL values and null_handling='error'."
            )
        x = np.where(nulls, f["impute"], continuous_values(column.values))
        out = [] if f.get("dropped") else [(x - f["center"]) / f["scale"]]
        if f["indicator"]:
            out.append(nulls.astype(np.float64))
        return out

    def _encode_categorical(self, f: dict, column: RawColumn) -> List[np.ndarray]:
        nulls = column.null_mask
        if nulls.any() and self.null_handling == "error":
            raise EncodingError(
                f"feature column \"{f['name']}\" has NULL values and null_handling='error'."
            )
        states = _state_strings(column.values)
        states[nulls] = MISSING if f["indicator"] else f["impute"]
        out = [(states == s).astype(np.float64) for s in f["states"]]
        if f["other"]:
            known = np.isin(states, np.array(f["states"], dtype=object))
            out.append((~known).astype(np.float64))
        return out

    def affine(self):
        """(center, scale) per encoded feature: encoded = (raw - center) / scale, where raw is the
        column value (continuous) or the 0/1 flag (one-hot states and missing indicators)."""
        center, scale = [], []
        for f in self.features_:
            if f["kind"] == "continuous":
                if not f.get("dropped"):
                    center.append(f["center"])
                    scale.append(f["scale"])
                if f["indicator"]:
                    center.append(0.0)
                    scale.append(1.0)
            else:
                n = len(f["states"]) + (1 if f["other"] else 0)
                center += [0.0] * n
                scale += [1.0] * n
        return np.array(center, np.float64), np.array(scale, np.float64)

    def to_original_units(self, name: str, value: np.ndarray) -> np.ndarray:
        """An encoded feature's values in the column's own units (one-hot features are shares)."""
        for f in self.features_:
            if f["kind"] == "continuous" and f["name"] == name:
                return value * f["scale"] + f["center"]
        return value

    # ---- persistence

    def to_dict(self) -> dict:
        return {
            "normalize": self.normalize,
            "max_states": self.max_states,
            "null_handling": self.null_handling,
            "max_input_attributes": self.max_input_attributes,
            "features": self.features_,
            "encoded": self.feature_names,
        }

    @classmethod
    def from_dict(cls, state: dict) -> "FeatureEncoder":
        encoder = cls(
            state["normalize"],
            state["max_states"],
            state["null_handling"],
            state["max_input_attributes"],
        )
        encoder.features_ = state["features"]
        return encoder
