"""k-means and EM (Gaussian mixture) on numeric matrices: fit, choose k, drop small clusters, assign.

Models are plain numpy arrays (`ClusterModel`), so they are stored as weight rows and rebuilt for
scoring without pickling. scikit-learn does the fitting and is imported only here, when it runs.
"""

import logging
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Optional, Tuple

import numpy as np

from dbt.adapters.sqlflow import interrupt
from dbt.adapters.sqlflow.errors import ClusteringError
from dbt.adapters.sqlflow.ml import traces
from dbt.adapters.sqlflow.progress import Progress

log = logging.getLogger("dbt_sqlflow.ml")

SILHOUETTE_SAMPLE = 5_000  # silhouette is quadratic in rows: a sample keeps it under a second


@dataclass
class ClusterModel:
    model_type: str  # kmeans | em
    centers: np.ndarray  # (k, d)
    covariance_type: Optional[str] = None  # em
    covariances: Optional[np.ndarray] = None  # em, sklearn's shape for the covariance type
    weights: Optional[np.ndarray] = None  # em mixture weights
    info: Dict = field(default_factory=dict)  # iterations, inertia, ...

    @property
    def k(self) -> int:
        return len(self.centers)

    def _mixture(self):
        from sklearn.mixture import GaussianMixture

        gm = GaussianMixture(n_components=self.k, covariance_type=self.covariance_type)
        gm.weights_, gm.means_, gm.covariances_ = self.weights, self.centers, self.covariances
        gm.precisions_cholesky_ = _precision_cholesky(self.covariances, self.covariance_type)
        return gm

    def assign(self, X: np.ndarray) -> Tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]:
        """(cluster per row, distance to its centre, membership probabilities or None)."""
        if self.model_type == "em":
            probabilities = self._mixture().predict_proba(X)
            labels = probabilities.argmax(axis=1)
        else:
            probabilities = None
            labels = _nearest(X, self.centers)
        distances = np.linalg.norm(X - self.centers[labels], axis=1)
        return labels, distances, probabilities


def _precision_cholesky(covariances: np.ndarray, covariance_type: str) -> np.ndarray:
    """What scikit-learn scores with, from the covariances we store."""
    if covariance_type in ("diag", "spherical"):
        return 1.0 / np.sqrt(covariances)
    if covariance_type == "tied":
        return np.linalg.inv(np.linalg.cholesky(covariances)).T
    return np.stack([np.linalg.inv(np.linalg.cholesky(c)).T for c in covariances])


def _nearest(X: np.ndarray, centers: np.ndarray, block: int = 65_536) -> np.ndarray:
    labels = np.empty(len(X), np.int64)
    c2 = (centers**2).sum(axis=1)
    for start in range(0, len(X), block):  # blocks bound the (rows x k) distance matrix
        part = X[start : start + block]
        labels[start : start + block] = (c2 - 2 * part @ centers.T).argmin(axis=1)
    return labels


def fit(
    X: np.ndarray,
    model_type: str,
    k: int,
    seed: int = 0,
    n_init: int = 1,
    max_iter=None,
    tol=None,
    covariance_type: str = "diag",
) -> ClusterModel:
    """Fit k clusters on the whole matrix."""
    n_distinct = len(np.unique(X, axis=0)) if len(X) <= 200_000 else len(X)
    if k > n_distinct:
        raise ClusteringError(
            f"n_clusters={k} is larger than the {n_distinct} distinct input rows; "
            f"lower n_clusters or use n_clusters=0 to choose k."
        )
    if model_type == "kmeans":
        from sklearn.cluster import KMeans

        km = KMeans(
            n_clusters=k,
            init="k-means++",
            n_init=n_init,
            random_state=seed,
            max_iter=max_iter or 300,
            tol=1e-4 if tol is None else tol,
            verbose=1,  # its iterations' inertia, for the training info
        )
        started = time.perf_counter()
        with traces.printed() as lines:
            km.fit(X)
        info = {"inertia": float(km.inertia_), "iterations": int(km.n_iter_)}
        return ClusterModel(
            "kmeans", km.cluster_centers_, info=_traced(info, traces.kmeans(lines, started))
        )
    from sklearn.mixture import GaussianMixture

    gm = GaussianMixture(
        n_components=k,
        covariance_type=covariance_type,
        random_state=seed,
        max_iter=max_iter or 100,
        tol=1e-3 if tol is None else tol,
        reg_covar=1e-6,
        verbose=2,  # its iterations' change of the lower bound, for the training info
        verbose_interval=1,
    )
    with traces.printed() as lines:
        gm.fit(X)
    return ClusterModel(
        "em",
        gm.means_,
        covariance_type,
        gm.covariances_,
        gm.weights_,
        info=_traced(
            {
                "iterations": int(gm.n_iter_),
                "converged": bool(gm.converged_),
                "lower_bound": float(gm.lower_bound_),
                "bic": float(gm.bic(X)),
                "aic": float(gm.aic(X)),
            },
            traces.em(lines, float(gm.lower_bound_)),
        ),
    )


def _traced(info: Dict, trace: Optional[Dict]) -> Dict:
    """The fit's info with its per-iteration losses and seconds, when they could be read."""
    if not trace:
        return info
    return {**info, "trace": trace["loss"], "trace_kind": "loss", "pass_seconds": trace["seconds"]}


def cluster_sizes(model: ClusterModel, batches: Iterable[np.ndarray]) -> np.ndarray:
    sizes = np.zeros(model.k, np.int64)
    for X in batches:
        sizes += np.bincount(model.assign(X)[0], minlength=model.k)
    return sizes


def drop_small_clusters(
    model: ClusterModel, sizes: np.ndarray, minimum_support: int
) -> ClusterModel:
    """Remove clusters with fewer than minimum_support rows (sizes: rows per cluster); their rows go
    to the nearest surviving centre when assigned."""
    keep = np.flatnonzero(sizes >= minimum_support)
    if len(keep) == model.k:
        return model
    if len(keep) == 0:
        raise ClusteringError(
            f"no cluster has minimum_support={minimum_support} rows "
            f"(largest: {sizes.max()}); lower minimum_support."
        )
    dropped = {**model.info, "dropped_clusters": int(model.k - len(keep))}
    if model.model_type == "kmeans":
        return ClusterModel("kmeans", model.centers[keep], info=dropped)
    weights = model.weights[keep] / model.weights[keep].sum()
    covariances = model.covariances if model.covariance_type == "tied" else model.covariances[keep]
    return ClusterModel(
        "em", model.centers[keep], model.covariance_type, covariances, weights, info=dropped
    )


def metrics(
    X: np.ndarray, labels: np.ndarray, model: ClusterModel, seed: int = 0
) -> Dict[str, float]:
    """Inertia, silhouette (on a sample), Davies-Bouldin, Calinski-Harabasz; BIC/AIC for EM."""
    from sklearn.metrics import calinski_harabasz_score, davies_bouldin_score, silhouette_score

    out = {"inertia": float(((X - model.centers[labels]) ** 2).sum()), "k": model.k}
    if 1 < len(np.unique(labels)) < len(X):
        sample = min(len(X), SILHOUETTE_SAMPLE)
        out["silhouette"] = float(
            silhouette_score(X, labels, sample_size=sample, random_state=seed)
        )
        out["davies_bouldin"] = float(davies_bouldin_score(X, labels))
        out["calinski_harabasz"] = float(calinski_harabasz_score(X, labels))
    if model.model_type == "em":
        gm = model._mixture()
        out["bic"], out["aic"] = float(gm.bic(X)), float(gm.aic(X))
    return out


def choose_k(
    X: np.ndarray, model_type: str, k_range: Iterable[int], seed: int = 0, **fit_options
) -> Tuple[int, List[Dict]]:
    """k for n_clusters=0: EM by lowest BIC; k-means by the knee of inertia (`knee`)."""
    low, high = k_range
    high = min(high, len(np.unique(X, axis=0)) if len(X) <= 200_000 else high)
    if high < low:
        raise ClusteringError(
            f"k_range starts at {low} but the input has only {high} distinct rows."
        )
    sweep: List[Dict] = []
    progress = Progress(log, "k sweep: k", high, lines=min(high, 10))  # a few k, each slow
    for k in range(low, high + 1):
        interrupt.check()
        started = time.perf_counter()
        model = fit(X, model_type, k, seed, **fit_options)
        labels, _, _ = model.assign(X)
        sweep.append({"k": k, **metrics(X, labels, model, seed)})
        sweep[-1]["seconds"] = time.perf_counter() - started
        progress.step(
            k,
            f"inertia {sweep[-1]['inertia']:.6g}, "
            f"silhouette {sweep[-1].get('silhouette', float('nan')):.3f}",
        )
    if model_type == "em":
        best = min(sweep, key=lambda r: r["bic"])
    else:
        best = knee(sweep, float(((X - X.mean(axis=0)) ** 2).sum()))
    for row in sweep:
        row["chosen"] = row["k"] == best["k"]
    return int(best["k"]), sweep


def knee(sweep: List[Dict], total_inertia: float) -> Dict:
    """The kneedle rule (Satopaa et al., 2011) on log inertia, anchored at k=1 (the total sum of
    squares): scale k and log inertia to [0, 1] and take the k farthest below the chord from k=1
    to the largest k. The log makes a 5x drop count the same at any scale, so an early steep
    descent cannot hide the knee; the k=1 anchor lets the first k of the range be the knee. Knees
    within 5% of the best gap are ties, broken by the higher silhouette."""
    ks = np.array([1] + [r["k"] for r in sweep], float)
    inertia = np.array([total_inertia] + [r["inertia"] for r in sweep], float)
    floor = max(total_inertia, 1e-300) * 1e-12  # k >= distinct rows gives inertia 0
    y = np.log(np.maximum(inertia, floor))
    if y[0] - y.min() <= 0:
        return sweep[0]
    x_n = (ks - ks[0]) / (ks[-1] - ks[0])
    y_n = (y - y.min()) / (y[0] - y.min())
    gap = ((1.0 + (y_n[-1] - 1.0) * x_n) - y_n)[
        1:
    ]  # the chord from k=1 to the last k, minus the curve
    top = gap.max()
    candidates = [r for r, g in zip(sweep, gap) if g >= top - 0.05 * abs(top)]
    return max(candidates, key=lambda r: (r.get("silhouette", 0.0), -r["k"]))


# ---------------------------------------------------------------- scalable (streamed) fitting
#
# `batches` is a function returning a fresh iterator of matrices: one call is one pass over the data,
# so memory holds one batch at a time however many rows there are.

STREAM_PASSES = {"kmeans": 10, "em": 20}


def fit_streaming(
    batches: Callable[[], Iterable[np.ndarray]],
    model_type: str,
    k: int,
    seed: int = 0,
    n_init: int = 1,
    max_iter=None,
    tol=None,
    covariance_type: str = "diag",
) -> ClusterModel:
    passes = max_iter or STREAM_PASSES[model_type]
    if model_type == "kmeans":
        return _minibatch_kmeans(batches, k, seed, n_init, passes, 1e-4 if tol is None else tol)
    return _streaming_em(batches, k, seed, covariance_type, passes, 1e-3 if tol is None else tol)


def _minibatch_kmeans(batches, k, seed, n_init, passes, tol) -> ClusterModel:
    """Mini-batch k-means: every batch is one partial_fit step; stop when a pass moves no centre
    further than tol (in normalized units) or after `passes` passes."""
    from sklearn.cluster import MiniBatchKMeans

    km = MiniBatchKMeans(n_clusters=k, random_state=seed, n_init=n_init, init="k-means++")
    previous, done, trace, took = None, 0, [], []
    progress = Progress(log, "mini-batch k-means pass", passes)
    for done in range(1, passes + 1):
        interrupt.check()
        started = time.perf_counter()
        for X in batches():
            if not hasattr(km, "cluster_centers_") and len(X) < k:
                raise ClusteringError(
                    f"the first batch has {len(X)} rows, fewer than n_clusters={k}; "
                    f"raise sample_size."
                )
            km.partial_fit(X)
        shift = np.inf if previous is None else np.abs(km.cluster_centers_ - previous).max()
        previous = km.cluster_centers_.copy()
        took.append(time.perf_counter() - started)
        trace.append(float(shift) if np.isfinite(shift) else None)  # the first pass has no move
        progress.step(done, f"largest centre move {shift:.3g}")
        if shift <= tol:
            break
    info = {"iterations": done, "trace": trace, "trace_kind": "centre_shift", "pass_seconds": took}
    return ClusterModel("kmeans", km.cluster_centers_.copy(), info=info)


def _streaming_em(batches, k, seed, covariance_type, passes, tol, reg=1e-6) -> ClusterModel:
    """Exact EM with one pass per iteration: the E-step of each batch adds to the sufficient
    statistics (responsibility sums, weighted sums and second moments); the M-step uses the totals.
    Initialised by a seeded GaussianMixture on the first batch."""
    first = next(iter(batches()))
    if len(first) < k:
        raise ClusteringError(
            f"the first batch has {len(first)} rows, fewer than n_clusters={k}; raise sample_size."
        )
    init = fit(first, "em", k, seed, covariance_type=covariance_type)
    return em_map_reduce(lambda model: _em_statistics(model, batches), init, passes, tol, reg)


def em_batch_statistics(model: ClusterModel, X: np.ndarray, gm=None) -> Dict:
    """One batch's E-step: responsibility sums N, weighted sums S and second moments Q, its rows n
    and its total log-likelihood; batches (or shards) add up to the whole input's."""
    gm = gm or model._mixture()
    r = gm.predict_proba(X)  # (rows, k)
    return {
        "N": r.sum(axis=0),
        "S": r.T @ X,
        "Q": np.einsum("ik,id,ie->kde", r, X, X)
        if model.covariance_type in ("full", "tied")
        else r.T @ (X * X),
        "n": len(X),
        "log_likelihood": float(gm.score_samples(X).sum()),
    }


def add_statistics(parts: Iterable[Dict]) -> Dict:
    total: Optional[Dict] = None
    for part in parts:
        total = dict(part) if total is None else {k: total[k] + part[k] for k in total}
    if total is None:
        raise ClusteringError("no rows to compute statistics from.")
    return total


def _em_statistics(model: ClusterModel, batches) -> Dict:
    gm = model._mixture()
    return add_statistics(em_batch_statistics(model, X, gm) for X in batches())


def _m_step(stats, covariance_type, reg) -> ClusterModel:
    N, S, Q, n = stats["N"], stats["S"], stats["Q"], stats["n"]
    N = np.maximum(N, 10 * np.finfo(float).eps)
    means = S / N[:, None]
    d = means.shape[1]
    if covariance_type == "diag":
        covariances = Q / N[:, None] - means**2 + reg
    elif covariance_type == "spherical":
        covariances = (Q / N[:, None] - means**2).mean(axis=1) + reg
    elif covariance_type == "full":
        covariances = (
            Q / N[:, None, None] - np.einsum("kd,ke->kde", means, means) + reg * np.eye(d)
        )
    else:  # tied: one covariance shared by all components
        covariances = (
            Q.sum(axis=0) - np.einsum("k,kd,ke->de", N, means, means)
        ) / n + reg * np.eye(d)
    return ClusterModel("em", means, covariance_type, covariances, N / N.sum())


# ---------------------------------------------------------------- map-reduce fitting (engine: dask)
#
# `statistics(model)` runs one pass over every shard and returns the shards' statistics added up;
# the engine decides where the shards are. The drivers below hold only centres and totals.


def kmeans_batch_statistics(X: np.ndarray, centers: np.ndarray) -> Tuple[np.ndarray, Dict]:
    """A batch's Lloyd step: its labels, and per cluster the sum of its rows and their count, with
    the batch's inertia."""
    k, block = len(centers), 65_536
    labels = np.empty(len(X), np.int64)
    c2 = (centers**2).sum(axis=1)
    inertia = 0.0
    for start in range(0, len(X), block):  # blocks bound the (rows x k) distance matrix
        part = X[start : start + block]
        distances = c2 - 2 * part @ centers.T
        chosen = distances.argmin(axis=1)
        labels[start : start + block] = chosen
        closest = distances[np.arange(len(part)), chosen]
        inertia += float((part**2).sum() + closest.sum())
    # per column, bincount adds the rows of each cluster: np.add.at is ten times slower
    sums = (
        np.column_stack(
            [np.bincount(labels, weights=X[:, j], minlength=k) for j in range(X.shape[1])]
        )
        if X.shape[1]
        else np.zeros_like(centers)
    )
    return labels, {"sums": sums, "counts": np.bincount(labels, minlength=k), "inertia": inertia}


def initial_centers(sample: np.ndarray, k: int, seed) -> np.ndarray:
    """k-means++ on a sample of the rows, seeded as the in-memory KMeans seeds it (seed: an int, or
    the numpy RandomState that successive restarts draw from, as KMeans' n_init restarts do)."""
    from sklearn.cluster import kmeans_plusplus

    if k > len(np.unique(sample, axis=0)):
        raise ClusteringError(
            f"n_clusters={k} is larger than the distinct rows of the {len(sample)}-row sample; "
            f"lower n_clusters or raise sample_size."
        )
    # KMeans centres the data before seeding; so do we, so that both draw the same rows
    mean = sample.mean(axis=0)
    centers, _ = kmeans_plusplus(sample - mean, k, random_state=seed)
    return centers + mean


def kmeans_map_reduce(
    statistics: Callable[[np.ndarray], Dict],
    init: np.ndarray,
    tolerance: float,
    max_iter: int = 300,
) -> ClusterModel:
    """Lloyd's algorithm as scikit-learn's KMeans runs it, one map-reduce per iteration: stop when no
    row changes cluster or the centres move less than `tolerance` in total (squared), and end with
    the assignments of the final centres. `statistics(centers)` adds up the shards' sums, counts,
    inertia and `changed` (rows whose label differs from their previous pass's)."""
    centers, trace, took = init.copy(), [], []
    progress = Progress(log, "k-means iteration", max_iter, lines=5)
    done = 0
    for done in range(1, max_iter + 1):
        interrupt.check()
        started = time.perf_counter()
        totals = statistics(centers)
        moved = totals["sums"] / np.maximum(totals["counts"], 1)[:, None]
        moved[totals["counts"] == 0] = centers[totals["counts"] == 0]  # an empty cluster stays
        shift = float(((moved - centers) ** 2).sum())
        centers = moved
        took.append(time.perf_counter() - started)
        trace.append(totals["inertia"])
        progress.step(done, f"inertia {totals['inertia']:.6g}")
        if totals["changed"] == 0 and done > 1:
            break  # the labels of this pass equal the last pass's: converged
        if shift <= tolerance:
            break
    info = {"iterations": done, "trace": trace, "trace_kind": "loss", "pass_seconds": took}
    return ClusterModel("kmeans", centers, info=info)


def em_map_reduce(
    statistics: Callable[[ClusterModel], Dict],
    init: ClusterModel,
    passes: int,
    tol: float,
    reg: float = 1e-6,
) -> ClusterModel:
    """EM with one pass per iteration: `statistics(model)` is the E-step over every batch or shard
    (sufficient statistics added up), the M-step uses the totals; stop when the mean
    log-likelihood moves less than tol."""
    model, previous, done, trace, took = init, -np.inf, 0, [], []
    progress = Progress(log, "EM pass", passes)
    log_likelihood = float("nan")
    for done in range(1, passes + 1):
        interrupt.check()
        started = time.perf_counter()
        stats = statistics(model)
        log_likelihood = stats["log_likelihood"] / stats["n"]
        model = _m_step(stats, init.covariance_type, reg)
        took.append(time.perf_counter() - started)
        trace.append(-float(log_likelihood))
        progress.step(done, f"mean log-likelihood {log_likelihood:.6g}")
        if abs(log_likelihood - previous) < tol:
            break
        previous = log_likelihood
    model.info = {
        "iterations": done,
        "mean_log_likelihood": float(log_likelihood),
        "trace": trace,
        "trace_kind": "loss",
        "pass_seconds": took,
    }
    return model


# ---------------------------------------------------------------- stable ids across retrains


def matched_ids(cost: np.ndarray) -> np.ndarray:
    """ids[i]: the id new cluster i takes, from a (k_new, k_old) cost matrix. The assignment of
    minimum total cost (Hungarian) gives each new cluster the id of its old counterpart; ids stay
    0..k_new-1, so a counterpart whose id is out of range, or none, means the next free id."""
    from scipy.optimize import linear_sum_assignment

    k_new = cost.shape[0]
    ids = np.full(k_new, -1)
    for new, old in zip(*linear_sum_assignment(cost)):
        if old < k_new:
            ids[new] = old
    free = iter(sorted(set(range(k_new)) - set(ids[ids >= 0].tolist())))
    return np.array([i if i >= 0 else next(free) for i in ids])


def centre_distances(new: np.ndarray, old: np.ndarray) -> np.ndarray:
    return np.linalg.norm(new[:, None, :] - old[None, :, :], axis=2)


def overlap_cost(new_labels: np.ndarray, old_labels: np.ndarray, k_new: int, k_old: int):
    """Minus the rows two clusters share: the matching keeps the most rows' ids."""
    shared = np.zeros((k_new, k_old))
    np.add.at(shared, (new_labels, old_labels), 1)
    return -shared


def relabeled(model: ClusterModel, ids: np.ndarray) -> ClusterModel:
    """The same model with cluster i renamed ids[i] (its centre, weight and covariance move)."""
    order = np.argsort(ids)  # order[j]: the cluster that becomes j
    if model.model_type == "kmeans":
        return ClusterModel("kmeans", model.centers[order], info=model.info)
    tied = model.covariance_type == "tied"
    return ClusterModel(
        "em",
        model.centers[order],
        model.covariance_type,
        model.covariances if tied else model.covariances[order],
        model.weights[order],
        info=model.info,
    )
