"""ML facts in the dbt docs catalog: the table statistics of an ML node's relation (the catalog's
`stats:<id>:label/value/description/include` columns, as adapters report row counts) carry the live
version's type, number, training time, rows and key metrics, so `dbt docs serve` shows them."""

from typing import Any, Dict, List, Tuple

from dbt.adapters.sqlflow import facts

METRIC_SLOTS = 3  # the catalog has one set of columns for every table: the key metrics fill slots

Key = Tuple[str, str]  # (schema, relation name), lower case


def stats_of(live: Dict[str, Any]) -> List[Tuple[str, str, Any, str]]:
    """(id, label, value, description) of one live version."""
    out = [
        ("sqlflow_model_type", "ML model type", live["model_type"], "dbt-sqlflow model type"),
        (
            "sqlflow_version",
            "ML model version",
            _text("v", live["version"]),
            "the live version in the registry",
        ),
        (
            "sqlflow_trained_at",
            "Trained at",
            str(live["trained_at"]),
            "when the live version was trained",
        ),
        (
            "sqlflow_rows",
            "Training rows",
            _text("", live["row_count"]),
            "rows the live version was trained on",
        ),
    ]
    metrics = facts.key_metrics(live["model_type"], live["parameters"], live["metrics"])
    for slot in range(METRIC_SLOTS):
        if slot < len(metrics):
            _, label, value, text = metrics[slot]
            out.append((f"sqlflow_metric_{slot + 1}", label, f"{value:.4g}", text))
        else:
            out.append((f"sqlflow_metric_{slot + 1}", "", None, ""))
    return out


def _text(prefix: str, value, suffix: str = ""):
    return None if value is None else f"{prefix}{value:,}{suffix}"


def with_model_stats(table, live: Dict[Key, Dict[str, Any]]):
    """The catalog's agate table with the stats columns added (include=false where not an ML node)."""
    import agate

    ids = [s[0] for s in stats_of(_EMPTY)]
    names = list(table.column_names)
    types = list(table.column_types)
    schema_at, name_at = names.index("table_schema"), names.index("table_name")
    for stat in ids:
        names += [f"stats:{stat}:label", f"stats:{stat}:value", f"stats:{stat}:description"]
        names.append(f"stats:{stat}:include")
        types += [agate.Text(), agate.Text(), agate.Text(), agate.Boolean()]
    rows = []
    for row in table.rows:
        found = live.get((str(row[schema_at]).lower(), str(row[name_at]).lower()))
        extra: List[Any] = []
        for _, label, value, text in stats_of(found or _EMPTY):
            shown = found is not None and value is not None
            extra += [label, None if value is None else str(value), text, shown]
        rows.append(list(row) + extra)
    return agate.Table(rows, names, types)


_EMPTY: Dict[str, Any] = {
    "model_type": "kmeans",
    "version": None,
    "trained_at": None,
    "row_count": None,
    "parameters": {},
    "metrics": {},
}
