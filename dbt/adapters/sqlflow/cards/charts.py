"""The charts of a model card, drawn with matplotlib (imported here only) as inline SVG strings.

Each function takes plain lists from the registry and returns an <svg> element, or None when the
version holds nothing to draw. Figures are built without pyplot (no global state) and under one lock:
matplotlib is not thread-safe and dbt runs nodes in threads."""

import functools
import io
import threading
from typing import Callable, Dict, List, Optional, Sequence

_LOCK = threading.Lock()
WIDE, TALL = (7.2, 3.4), (7.2, 4.6)
BLUE, ORANGE, GREY = "#1f6feb", "#e36209", "#8b949e"


def _svg(fig) -> str:
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg")
    text = buffer.getvalue()
    return text[text.index("<svg") :]  # inline: no XML declaration or doctype


def _draw(size=WIDE):
    """Decorator: the function draws on a new Figure; the caller gets its SVG, or None when the
    function returns False (nothing to draw)."""

    def wrap(function: Callable) -> Callable[..., Optional[str]]:
        @functools.wraps(function)
        def run(*args, **kwargs) -> Optional[str]:
            with _LOCK:
                from matplotlib import rcParams
                from matplotlib.figure import Figure

                rcParams["svg.fonttype"] = "none"  # text stays text: smaller, the browser's font
                fig = Figure(figsize=size, layout="constrained")
                if function(fig, *args, **kwargs) is False:
                    return None
                return _svg(fig)

        return run

    return wrap


@_draw()
def k_sweep(fig, sweep: List[Dict]):
    """n_clusters=0: inertia per k (the elbow) and silhouette, the chosen k marked."""
    if not sweep:
        return False
    ks = [r["k"] for r in sweep]
    ax = fig.add_subplot()
    ax.plot(ks, [r.get("inertia") for r in sweep], "o-", color=BLUE, label="inertia")
    ax.set_xlabel("k (clusters)")
    ax.set_ylabel("inertia", color=BLUE)
    chosen = [r["k"] for r in sweep if r.get("chosen")]
    for k in chosen:
        ax.axvline(k, color=GREY, linestyle="--")
        ax.annotate(f"chosen k={k}", (k, ax.get_ylim()[1]), ha="left", va="top", fontsize=9)
    if any(r.get("silhouette") is not None for r in sweep):
        twin = ax.twinx()
        twin.plot(ks, [r.get("silhouette") for r in sweep], "s-", color=ORANGE)
        twin.set_ylabel("silhouette", color=ORANGE)
    ax.set_title("Choosing k: the elbow of inertia, silhouette breaking ties")


@_draw()
def cluster_sizes(fig, sizes: Sequence[int]):
    if not sizes:
        return False
    ax = fig.add_subplot()
    total = max(sum(sizes), 1)
    bars = ax.bar(range(len(sizes)), sizes, color=BLUE)
    ax.bar_label(bars, [f"{100 * s / total:.0f}%" for s in sizes], fontsize=8)
    ax.set_xticks(range(len(sizes)))
    ax.set_xlabel("cluster_id")
    ax.set_ylabel("rows")
    ax.set_title("Cluster sizes")


@_draw(TALL)
def heatmap(fig, values: List[List[float]], columns: List[str], title: str, note: str):
    """Clusters x features; `note` names the units (the colour bar)."""
    import numpy as np

    matrix = np.asarray(values, dtype=float)
    if matrix.size == 0:
        return False
    ax = fig.add_subplot()
    limit = float(np.nanmax(np.abs(matrix))) or 1.0
    image = ax.imshow(matrix, cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto")
    ax.set_yticks(range(matrix.shape[0]))
    ax.set_ylabel("cluster_id")
    ax.set_xticks(
        range(len(columns)), [c[:18] for c in columns], rotation=45, ha="right", fontsize=8
    )
    if matrix.size <= 120:
        for (i, j), v in np.ndenumerate(matrix):
            ax.text(j, i, f"{v:.2g}", ha="center", va="center", fontsize=7)
    fig.colorbar(image, ax=ax, label=note)
    ax.set_title(title)


def profile(features: List[str], means: List[List[float]], overall: List[float]) -> Optional[str]:
    """Per-cluster means against the overall mean, as relative differences (0 = the average row)."""
    import numpy as np

    if not features or not means:
        return None
    m, o = np.asarray(means, float), np.asarray(overall, float)
    scale = np.where(np.abs(o) > 1e-12, np.abs(o), 1.0)
    return heatmap(
        ((m - o) / scale).tolist(),
        features,
        "Profile: each cluster's mean against the overall mean",
        "(cluster mean - overall) / |overall|",
    )


@_draw()
def probability_histogram(fig, counts: Sequence[int]):
    """EM and DEC: how sure the assignment is (cluster_probability)."""
    if not counts or not sum(counts):
        return False
    ax = fig.add_subplot()
    edges = [i / len(counts) for i in range(len(counts))]
    ax.bar(edges, counts, width=1 / len(counts), align="edge", color=BLUE, edgecolor="white")
    ax.set_xlim(0, 1)
    ax.set_xlabel("cluster_probability (of the assigned cluster)")
    ax.set_ylabel("rows")
    ax.set_title("How sure each assignment is")


@_draw()
def loss_curve(fig, rows: List[Dict], title: str, loss_label: str = "loss"):
    """Loss per epoch, training and held-out."""
    if not rows:
        return False
    ax = fig.add_subplot()
    x = [r["iteration"] for r in rows]
    ax.plot(x, [r.get("loss") for r in rows], color=BLUE, label=f"training {loss_label}")
    if any(r.get("eval_loss") is not None for r in rows):
        ax.plot(
            x, [r.get("eval_loss") for r in rows], color=ORANGE, label=f"held-out {loss_label}"
        )
    losses = [r["loss"] for r in rows if r.get("loss")]
    if losses and min(losses) > 0 and max(losses) / min(losses) > 50:
        ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel(loss_label)
    ax.legend()
    ax.set_title(title)


@_draw()
def dec_clustering(fig, rows: List[Dict]):
    """DEC's clustering phase: KL loss and the share of labels changed at each target update."""
    if not rows:
        return False
    ax = fig.add_subplot()
    x = [r["iteration"] for r in rows]
    ax.plot(x, [r.get("loss") for r in rows], color=BLUE)
    ax.set_xlabel("iteration (minibatches)")
    ax.set_ylabel("KL loss", color=BLUE)
    twin = ax.twinx()
    twin.plot(x, [r.get("label_change") for r in rows], "o-", color=ORANGE, markersize=3)
    twin.set_ylabel("share of labels changed", color=ORANGE)
    ax.set_title("Clustering: loss and labels changed per target update")


@_draw((4.6, 4.2))
def roc(fig, fpr: List[float], tpr: List[float], auc: Optional[float]):
    ax = fig.add_subplot()
    ax.plot(fpr, tpr, color=BLUE, label=f"ROC AUC {auc:.3f}" if auc is not None else "ROC")
    ax.plot([0, 1], [0, 1], color=GREY, linestyle="--", label="chance")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_aspect("equal")
    ax.legend(loc="lower right")
    ax.set_title("ROC curve (held-out rows)")


@_draw((4.6, 4.2))
def confusion(fig, matrix: List[List[int]], classes: List[str]):
    import numpy as np

    m = np.asarray(matrix)
    if m.size == 0:
        return False
    ax = fig.add_subplot()
    ax.imshow(m, cmap="Blues")
    names = [str(c)[:12] for c in classes]
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    for (i, j), v in np.ndenumerate(m):
        ax.text(
            j, i, str(v), ha="center", va="center", color="white" if v > m.max() / 2 else "black"
        )
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    ax.set_title("Confusion matrix (held-out rows)")


@_draw((4.6, 4.2))
def predicted_vs_actual(fig, actual: List[float], predicted: List[float]):
    if not actual:
        return False
    ax = fig.add_subplot()
    ax.scatter(actual, predicted, s=8, alpha=0.5, color=BLUE)
    low, high = min(min(actual), min(predicted)), max(max(actual), max(predicted))
    ax.plot([low, high], [low, high], color=GREY, linestyle="--")
    ax.set_xlabel("actual")
    ax.set_ylabel("predicted")
    ax.set_title("Predicted against actual (held-out rows)")


@_draw(TALL)
def feature_weights(fig, weights: List[Dict], top: int = 20):
    """The largest weights by size, in original units (per class for multiclass)."""
    if not weights:
        return False
    ranked = sorted(weights, key=lambda w: abs(w["weight"]), reverse=True)[:top][::-1]
    per_class = len({w.get("class") for w in weights}) > 1  # multiclass: a weight per class
    labels = [w["feature"] + (f" [{w['class']}]" if per_class else "") for w in ranked]
    values = [w["weight"] for w in ranked]
    ax = fig.add_subplot()
    ax.barh(range(len(values)), values, color=[BLUE if v >= 0 else ORANGE for v in values])
    ax.set_yticks(range(len(values)), [label[:32] for label in labels], fontsize=8)
    ax.axvline(0, color=GREY)
    ax.set_xlabel("weight per unit of the raw column")
    ax.set_title(f"The {len(values)} largest weights (original units)")


@_draw()
def metric_by_version(fig, versions: List[int], values: List[Optional[float]], label: str):
    if not versions or all(v is None for v in values):
        return False
    ax = fig.add_subplot()
    ax.plot(versions, values, "o-", color=BLUE)
    ax.set_xticks(versions)
    ax.set_xlabel("version")
    ax.set_ylabel(label)
    ax.set_title(f"{label} per version")
