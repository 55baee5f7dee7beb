"""The few facts that describe a trained version at a glance (type, version, trained at, rows and its
key metrics), chosen once here for run_results.json, the dbt docs catalog and the model cards."""

from typing import Any, Dict, List, Tuple

CLUSTERING = ("kmeans", "em", "dec")
CLASSIFIERS = ("logistic_regression", "dnn_classifier")

# (metric, label, what it says), in the order shown; the first present is the "key metric"
_KEYS: Dict[str, List[Tuple[str, str, str]]] = {
    "clustering": [
        ("silhouette", "Silhouette", "cluster separation on a sample, -1..1, higher is better"),
        ("davies_bouldin", "Davies-Bouldin", "cluster overlap, lower is better"),
        ("k", "Clusters", "number of clusters"),
        ("bic", "BIC", "EM: Bayesian information criterion, lower is better"),
    ],
    "classification": [
        ("eval_roc_auc", "ROC AUC (held out)", "area under the ROC curve on the held-out rows"),
        ("eval_accuracy", "Accuracy (held out)", "share of held-out rows classified right"),
        ("eval_log_loss", "Log loss (held out)", "lower is better"),
        ("train_accuracy", "Accuracy (train)", "share of training rows classified right"),
    ],
    "regression": [
        ("eval_r2", "R2 (held out)", "share of the label's variance explained on held-out rows"),
        ("eval_mse", "MSE (held out)", "mean squared error on held-out rows"),
        ("train_r2", "R2 (train)", "on the training rows"),
    ],
    "autoencoder": [
        ("eval_mse", "Reconstruction MSE (held out)", "lower is better"),
        ("train_mse", "Reconstruction MSE (train)", "lower is better"),
    ],
    "sql": [
        ("objective", "Objective", "the program's objective with the learned weights"),
        ("objective_in_postgresql", "Objective in PostgreSQL", "the self-check's value"),
    ],
}


def family(model_type: str, parameters: Dict[str, Any]) -> str:
    if model_type in CLUSTERING:
        return "clustering"
    if model_type in ("sql", "autoencoder"):
        return model_type
    task = (parameters or {}).get("task")
    if task in ("binary", "multiclass") or model_type in CLASSIFIERS:
        return "classification"
    return "regression"


def key_metrics(
    model_type: str, parameters: Dict, metrics: Dict
) -> List[Tuple[str, str, Any, str]]:
    """(name, label, value, description) of the metrics that matter for this kind of model."""
    return [
        (name, label, metrics[name], text)
        for name, label, text in _KEYS[family(model_type, parameters)]
        if isinstance(metrics.get(name), (int, float)) and not isinstance(metrics[name], bool)
    ]


def key_metric(model_type: str, parameters: Dict, metrics: Dict) -> Tuple[str, Any]:
    """The one metric a list of versions shows: (label, value), or ('', None)."""
    found = key_metrics(model_type, parameters, metrics)
    return (found[0][1], found[0][2]) if found else ("", None)
