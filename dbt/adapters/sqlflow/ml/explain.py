"""Why a model predicts what it predicts, on arrays: SHAP values of any scalar model output (the `shap`
library's Permutation, Kernel or Exact explainers), the encoded features' training means that a
linear model's exact attributions are measured from, and the cluster discrimination table (per
cluster, the feature states that set it apart from the rest, as SSAS's Cluster Discrimination view).
"""

from typing import Callable, Dict, List, Sequence, Tuple

import numpy as np

from dbt.adapters.sqlflow.errors import SqlflowError
from dbt.adapters.sqlflow.ml.preprocess import MISSING, OTHER, feature_groups

__all__ = ["feature_groups"]

EPSILON = 1e-6  # share smoothing in the discrimination score (a state absent on one side)


def encoded_means(encoder_state: Dict) -> np.ndarray:
    """Each encoded column's training mean, before normalization: a continuous column's mean (NULLs
    imputed with it), a state's share of the rows (NULLs imputed to the first state count there)."""
    means: List[float] = []
    for f in encoder_state["features"]:
        profile = f.get("profile") or {}
        nulls = float(profile.get("nulls", 0.0))
        if f["kind"] == "continuous":
            if not f.get("dropped"):
                means.append(float(f["impute"]))
            if f["indicator"]:
                means.append(nulls)
            continue
        shares = dict(zip(profile.get("states", []), profile.get("shares", [])))
        for state in f["states"]:
            if state == MISSING:
                means.append(nulls)
            else:
                imputed = nulls if (state == f["impute"] and not f["indicator"]) else 0.0
                means.append(float(shares.get(state, 0.0)) + imputed)
        if f["other"]:
            means.append(float(profile.get("shares", [0.0])[-1]))
    return np.array(means, np.float64)


def shap_values(
    f: Callable[[np.ndarray], np.ndarray],
    X: np.ndarray,
    background: np.ndarray,
    explainer: str,
    seed: int,
    max_evals: int = 0,
) -> Tuple[np.ndarray, np.ndarray]:
    """(attributions (rows, columns), base value per row) of the scalar output f, so that a row's
    attributions sum to f(row) - base. Permutation (the default) and Exact are exactly additive;
    Kernel SHAP is additive by its constraint."""
    try:
        import shap
    except ImportError:
        raise SqlflowError(
            "explaining this model needs the shap library: pip install 'dbt-sqlflow[explain]' "
            "(linear and logistic regression, k-means and EM need nothing more)."
        ) from None
    if len(X) == 0:
        return np.empty((0, X.shape[1])), np.empty(0)
    if explainer == "kernel":
        kernel = shap.KernelExplainer(f, background, seed=seed)
        values = np.asarray(kernel.shap_values(X, silent=True), np.float64)
        return values, np.full(len(X), float(np.ravel(kernel.expected_value)[0]))
    masker = shap.maskers.Independent(background, max_samples=len(background))
    if explainer == "exact":
        out = shap.explainers.ExactExplainer(f, masker)(X, silent=True)
    else:
        evals = max(max_evals or 500, 2 * X.shape[1] + 1)
        out = shap.explainers.PermutationExplainer(f, masker, seed=seed)(
            X, max_evals=evals, silent=True
        )
    return np.asarray(out.values, np.float64), np.asarray(out.base_values, np.float64)


def grouped(values: np.ndarray, groups: Sequence[Tuple[str, List[int]]]) -> np.ndarray:
    """Encoded columns' attributions summed per original feature (rows, features)."""
    return np.column_stack([values[:, idx].sum(axis=1) for _, idx in groups])


def background_rows(X: np.ndarray, size: int, seed: int) -> np.ndarray:
    """A seeded sample of `size` rows (all rows when there are fewer)."""
    if len(X) <= size:
        return X
    return X[np.random.default_rng(seed).choice(len(X), size, replace=False)]


# ---------------------------------------------------------------- cluster discrimination


def bin_labels(values: np.ndarray, nulls: np.ndarray, feature: Dict) -> np.ndarray:
    """Each row's state (categorical) or quantile bin of the training profile (continuous)."""
    out = np.empty(len(values), dtype=object)
    if feature["kind"] == "categorical":
        states = set(feature["states"])
        text = np.array([str(v) for v in values], dtype=object)
        out[:] = [t if t in states else OTHER for t in text]
    else:
        edges = list((feature.get("profile") or {}).get("edges") or [])
        x = np.asarray(values, np.float64)
        names = _bin_names(edges)
        out[:] = [names[i] for i in np.searchsorted(np.array(edges), x, side="right")]
    out[nulls] = "NULL"
    return out


def _bin_names(edges: List[float]) -> List[str]:
    if not edges:
        return ["all"]
    fmt = lambda v: f"{v:.4g}"  # noqa: E731
    names = [f"< {fmt(edges[0])}"]
    names += [f"{fmt(a)} - {fmt(b)}" for a, b in zip(edges[:-1], edges[1:])]
    return names + [f">= {fmt(edges[-1])}"]


def discrimination(labels: np.ndarray, k: int, states: Dict[str, np.ndarray]) -> List[tuple]:
    """(cluster, feature, state_or_bin, cluster_share, rest_share, score) for every state seen.
    score = (c - r) * ln(c / r) with the sign of c - r: the state's information value, positive
    where it favours the cluster and negative where it favours the rest."""
    rows = []
    for cluster in range(k):
        inside = labels == cluster
        n_in, n_out = int(inside.sum()), int((~inside).sum())
        if n_in == 0:
            continue
        for feature, state in states.items():
            for value in sorted(set(state.tolist())):
                hit = state == value
                c = float((hit & inside).sum()) / n_in
                r = float((hit & ~inside).sum()) / n_out if n_out else 0.0
                score = (c - r) * np.log((c + EPSILON) / (r + EPSILON))
                rows.append((cluster, feature, value, c, r, float(np.sign(c - r) * abs(score))))
    return rows
