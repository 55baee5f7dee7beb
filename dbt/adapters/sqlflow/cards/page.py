"""The HTML of a model card and of the index: plain HTML and CSS around the charts, no script."""

import datetime as dt
import json
from html import escape
from typing import Any, Dict, List, Optional

from dbt.adapters.sqlflow import facts
from dbt.adapters.sqlflow.cards import charts

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:0;color:#1f2328;background:#f6f8fa}
header{background:#fff;border-bottom:1px solid #d0d7de;padding:20px 32px}
h1{margin:0 0 4px;font-size:24px} h2{font-size:18px;margin:28px 0 8px}
main{padding:0 32px 40px;max-width:1200px}
.meta{color:#59636e;font-size:14px} .meta b{color:#1f2328}
.tiles{display:flex;flex-wrap:wrap;gap:12px;margin-top:14px}
.tile{background:#f6f8fa;border:1px solid #d0d7de;border-radius:6px;padding:8px 14px;min-width:120px}
.tile .v{font-size:20px;font-weight:600} .tile .l{font-size:12px;color:#59636e}
.charts{display:flex;flex-wrap:wrap;gap:16px}
figure.chart{background:#fff;border:1px solid #d0d7de;border-radius:6px;margin:0;padding:8px}
figure.chart svg{display:block;max-width:100%;height:auto}
figcaption{font-size:13px;color:#59636e;max-width:640px;padding:4px}
table{border-collapse:collapse;background:#fff;font-size:13px}
td,th{border:1px solid #d0d7de;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f6f8fa} .num{text-align:right;font-variant-numeric:tabular-nums}
.code{display:flex;gap:16px;flex-wrap:wrap} .code>div{flex:1;min-width:420px}
pre{background:#fff;border:1px solid #d0d7de;border-radius:6px;padding:10px;overflow:auto;
    font-size:12px;max-height:520px}
.status-live{color:#1a7f37;font-weight:600} .status-rejected{color:#cf222e}
"""


def _number(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return "" if value is None else str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.4g}"
    return escape(str(value))


def _chart(name: str, svg: Optional[str], caption: str) -> str:
    if not svg:
        return ""
    return (
        f'<figure class="chart" data-chart="{name}">{svg}'
        f"<figcaption>{escape(caption)}</figcaption></figure>"
    )


def _table(header: List[str], rows: List[List[Any]], numeric=()) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="num">{_number(v)}</td>' if i in numeric else f"<td>{_cell(v)}</td>"
            for i, v in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _cell(value: Any) -> str:
    if isinstance(value, (dict, list)):
        return f"<code>{escape(json.dumps(value, default=str))}</code>"
    return (
        _number(value) if isinstance(value, float) else escape("" if value is None else str(value))
    )


def _history(version, phase: str) -> List[Dict]:
    return [r for r in version.training_info.get("history", []) if r.get("phase") == phase]


def _clustering_charts(version) -> List[str]:
    info, params = version.training_info, version.parameters
    out = [
        _chart(
            "k_sweep",
            charts.k_sweep(info.get("k_sweep") or []),
            "n_clusters=0: k is taken at the knee of the inertia curve (for EM, the lowest BIC); "
            "silhouette, higher is better, breaks near-ties.",
        ),
        _chart(
            "sizes",
            charts.cluster_sizes(info.get("sizes") or []),
            "Rows per cluster in the training input.",
        ),
    ]
    encoded = version.features.get("encoded") or []
    if version.model_type != "dec" and params.get("centers") is not None and encoded:
        out.append(
            _chart(
                "centroids",
                charts.heatmap(
                    params["centers"],
                    encoded,
                    "Centroids in normalized units",
                    "standard deviations from the mean",
                ),
                "Each cluster's centre per encoded feature, in the units the model works in "
                "(after normalization): far from 0 is what sets a cluster apart.",
            )
        )
    profile = info.get("profile") or {}
    out.append(
        _chart(
            "profile",
            charts.profile(
                profile.get("features") or [],
                profile.get("means") or [],
                profile.get("overall") or [],
            ),
            "The numeric features' mean in each cluster relative to the mean of all rows "
            "(+0.5 = 50% above average); the __profile table has the values.",
        )
    )
    if info.get("probability_histogram"):
        out.append(
            _chart(
                "probability",
                charts.probability_histogram(info["probability_histogram"]),
                "cluster_probability of the assigned cluster: near 1, the row clearly belongs; "
                "near 1/k, it sits between clusters.",
            )
        )
    return out


def _dec_charts(version) -> List[str]:
    return [
        _chart(
            "pretraining",
            charts.loss_curve(_history(version, "pretrain"), "Autoencoder pretraining", "MSE"),
            "Reconstruction error per pretraining epoch of the autoencoder DEC starts from.",
        ),
        _chart(
            "clustering_loss",
            charts.dec_clustering(_history(version, "cluster")),
            "KL divergence between the soft assignments and their sharpened target, and the share "
            "of rows whose cluster changed at each target update (training stops under tol).",
        ),
    ] + _clustering_charts(version)


def _supervised_charts(version, kind: str) -> List[str]:
    info, metrics = version.training_info, version.metrics
    out = [
        _chart(
            "loss",
            charts.loss_curve(_history(version, "train"), "Loss per epoch"),
            "Training loss and, when rows were held out, held-out loss per epoch: a held-out "
            "curve that rises while training falls is overfitting.",
        )
    ]
    evaluated = info.get("evaluation") or {}
    if kind == "classification":
        if evaluated.get("roc"):
            out.append(
                _chart(
                    "roc",
                    charts.roc(
                        evaluated["roc"]["fpr"],
                        evaluated["roc"]["tpr"],
                        metrics.get("eval_roc_auc"),
                    ),
                    "Share of positives found against share of negatives flagged, over every "
                    "threshold; the diagonal is guessing.",
                )
            )
        if evaluated.get("confusion"):
            classes = [str(c) for c in version.parameters.get("classes") or []]
            out.append(
                _chart(
                    "confusion",
                    charts.confusion(evaluated["confusion"], classes),
                    "Rows by actual and predicted class (the most likely class; 0.5 for two).",
                )
            )
    elif kind == "regression" and evaluated.get("actual"):
        out.append(
            _chart(
                "predicted_vs_actual",
                charts.predicted_vs_actual(evaluated["actual"], evaluated["predicted"]),
                "Each held-out row (up to 1,000): on the dashed line, the prediction is exact.",
            )
        )
    out.append(
        _chart(
            "weights",
            charts.feature_weights(info.get("feature_weights") or []),
            "What the model adds to its output (the logit for classifiers) per unit of each raw "
            "column; categories are their own one-hot features.",
        )
    )
    return out


def _sql_section(version) -> str:
    params = version.parameters
    chart = _chart(
        "objective",
        charts.loss_curve(_history(version, "train"), "Objective per epoch", "objective"),
        "The program's objective per epoch of gradient descent.",
    )
    check = version.training_info.get("self_check") or {}
    return (
        f'<div class="charts">{chart}</div>'
        f"<h2>Self-check</h2><p>TensorFlow's objective {_number(check.get('tensorflow'))}; "
        f"the same SQL run in PostgreSQL with the learned weights: "
        f"{_number(check.get('postgresql'))}.</p>"
        '<h2>The program and its TensorFlow</h2><div class="code">'
        f"<div><b>SQL</b><pre>{escape(params.get('program') or '')}</pre></div>"
        f"<div><b>Generated TensorFlow</b><pre>{escape(params.get('generated_program') or '')}</pre></div>"
        "</div>"
    )


def _features(version) -> str:
    features = version.features.get("features")
    if version.model_type == "sql":
        data = version.features.get("keys") or {}
        return _table(
            ["data relation", "key columns"], [[n, ", ".join(k)] for n, k in data.items()]
        )
    if not features:
        return ""
    rows = [
        [
            f.get("name"),
            f.get("kind"),
            f.get("center"),
            f.get("scale"),
            f.get("impute"),
            ", ".join(map(str, f.get("states") or [])) or None,
        ]
        for f in features
    ]
    return _table(["column", "kind", "centre", "scale", "imputed", "states"], rows, numeric=(2, 3))


def _versions(version, versions: List[Dict]) -> str:
    label, _ = facts.key_metric(version.model_type, version.parameters, version.metrics)
    rows, numbers, values = [], [], []
    for v in versions:
        name, value = facts.key_metric(
            v["model_type"], v.get("parameters") or {}, v["metrics"] or {}
        )
        rows.append(
            [
                v["version"],
                v["status"],
                str(v["trained_at"]),
                v["row_count"],
                value,
                v["invocation_id"],
            ]
        )
        numbers.append(v["version"])
        values.append(value if name == label else None)
    chart = _chart(
        "versions",
        charts.metric_by_version(numbers, values, label) if label and len(versions) > 1 else None,
        f"{label} of every registered version.",
    )
    table = _table(
        ["version", "status", "trained at", "rows", label or "key metric", "invocation"],
        rows,
        (3, 4),
    )
    return f'<div class="charts">{chart}</div>{table}'


def render(version, versions: List[Dict]) -> str:
    kind = facts.family(version.model_type, version.parameters)
    if version.model_type == "dec":
        body = '<div class="charts">' + "".join(_dec_charts(version)) + "</div>"
    elif kind == "clustering":
        body = '<div class="charts">' + "".join(_clustering_charts(version)) + "</div>"
    elif kind == "sql":
        body = _sql_section(version)
    else:
        body = '<div class="charts">' + "".join(_supervised_charts(version, kind)) + "</div>"
    this = next((v for v in versions if v["version"] == version.version), {})
    tiles = "".join(
        f'<div class="tile" title="{escape(text)}"><div class="v">{_number(value)}</div>'
        f'<div class="l">{escape(label)}</div></div>'
        for _, label, value, text in facts.key_metrics(
            version.model_type, version.parameters, version.metrics
        )
    )
    invoked = version.training_info.get("invoked_as") or ""
    options = [[k, v] for k, v in sorted(version.options.items()) if v not in (None, [], {})]
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{escape(version.model_name)}: model card</title>
<style>{STYLE}</style></head>
<body><header><h1>{escape(version.model_name)}</h1>
<div class="meta"><b>{escape(version.model_type)}</b> &middot; version <b>{version.version}</b>
(<span class="status-{escape(version.status)}">{escape(version.status)}</span>) &middot; trained at
<b>{escape(str(this.get("trained_at") or ""))}</b> on <b>{version.row_count:,}</b> rows &middot;
label <b>{escape(version.label or "none")}</b></div>
<div class="meta">dbt invocation <code>{escape(str(this.get("invocation_id") or ""))}</code>
{f"(<code>{escape(invoked)}</code>)" if invoked else ""} &middot;
<a href="index.html">all models</a></div>
<div class="tiles">{tiles}</div></header>
<main>
<h2>Training</h2>{body}
<h2>Versions</h2>{_versions(version, versions)}
<h2>Features</h2>{_features(version)}
<h2>Options</h2>{_table(["option", "value"], options)}
<p class="meta">Card written {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC from the registry
row of version {version.version}; <code>dbt run-operation sqlflow_cards</code> rebuilds it.</p>
</main></body></html>
"""


def index(summaries: List[Dict]) -> str:
    rows = "".join(
        f'<tr><td><a href="{escape(s["card"])}">{escape(s["model"])}</a></td>'
        f'<td>{escape(s["model_type"])}</td><td class="num">{s["version"]}</td>'
        f"<td>{escape(s.get('status') or '')}</td>"
        f'<td>{escape(s.get("metric") or "")}</td><td class="num">{_number(s.get("value"))}</td>'
        f'<td>{escape(s.get("trained_at") or "")}</td><td class="num">{_number(s.get("rows"))}</td></tr>'
        for s in sorted(summaries, key=lambda s: s["model"])
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>dbt-sqlflow model cards</title>
<style>{STYLE}</style></head>
<body><header><h1>Model cards</h1><div class="meta">{len(summaries)} ML models of this project</div>
</header><main><h2>Models</h2>
<table><tr><th>model</th><th>type</th><th>version</th><th>status</th><th>key metric</th><th>value</th>
<th>trained at</th><th>rows</th></tr>{rows}</table></main></body></html>
"""
