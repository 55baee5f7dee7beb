"""The `cluster` node (fit + assign) and the clustering side of `ml_train` and `ml_predict`."""
import hashlib
import logging
from dataclasses import dataclass
from typing import Dict, List, Optional

import numpy as np

from dbt.adapters.sqlflow import registry
from dbt.adapters.sqlflow.data import Column, Frame, read_frame, write_frame
from dbt.adapters.sqlflow.data.pgtypes import WIRE_TYPES, quote_ident
from dbt.adapters.sqlflow.jobs import inputs
from dbt.adapters.sqlflow.ml import clustering
from dbt.adapters.sqlflow.ml.preprocess import FeatureEncoder

log = logging.getLogger("dbt_sqlflow.jobs")


@dataclass
class Targets:
    """Quoted names the job writes (intermediate tables, swapped in by the materialization)."""

    main: str
    centroids: Optional[str] = None
    profile: Optional[str] = None


@dataclass
class Outcome:
    rows: int
    k: int
    version: int
    message: str


def _fit(X: np.ndarray, options: Dict):
    fit_options = {"n_init": options.get("n_init", 1), "max_iter": options.get("max_iter"),
                   "tol": options.get("tol"), "covariance_type": options.get("covariance_type", "diag")}
    sweep: List[Dict] = []
    k = options["n_clusters"]
    if k == 0:
        k, sweep = clustering.choose_k(X, options["model_type"], options["k_range"], options["seed"], **fit_options)
        log.info(f"chose k={k} from k_range {options['k_range']}")
    model = clustering.fit(X, options["model_type"], k, options["seed"], **fit_options)
    model = clustering.drop_small_clusters(model, X, options["minimum_support"])
    return model, sweep


def parameters(model: clustering.ClusterModel) -> Dict:
    return {"centers": model.centers, "covariance_type": model.covariance_type,
            "covariances": model.covariances, "weights": model.weights}


def model_from(version: registry.ModelVersion) -> clustering.ClusterModel:
    p = version.parameters
    as_array = lambda v: None if v is None else np.asarray(v, float)  # noqa: E731
    return clustering.ClusterModel(version.model_type, as_array(p["centers"]), p.get("covariance_type"),
                                   as_array(p.get("covariances")), as_array(p.get("weights")))


def assignment_columns(model, X: np.ndarray, options: Dict) -> List[Column]:
    labels, distances, probabilities = model.assign(X)
    columns = [Column.of(options.get("label_column", "cluster_id"), labels.astype(np.int32),
                         type=WIRE_TYPES["integer"]),
               Column.of("cluster_distance", distances)]
    if probabilities is not None:
        columns.append(Column.of("cluster_probability", probabilities.max(axis=1)))
        if options.get("output_probabilities"):
            columns += [Column.of(f"probability_{i}", probabilities[:, i]) for i in range(model.k)]
    return columns


def _passed_through(frame: Frame, roles: inputs.Roles, options: Dict) -> List[Column]:
    if options.get("pass_through", True):
        return list(frame.columns)
    names = roles.key + [n for n in roles.features + roles.predict_only if n not in roles.key]
    return [frame[n] for n in names]


def centroid_frame(model, encoder: FeatureEncoder) -> Frame:
    names = encoder.feature_names
    k, d = model.centers.shape
    cluster_ids = np.repeat(np.arange(k, dtype=np.int32), d)
    features = np.array(names * k, dtype=object)
    normalized = model.centers.ravel()
    original = np.concatenate([[float(encoder.to_original_units(n, np.float64(v))) for n, v in zip(names, row)]
                               for row in model.centers]) if k else np.empty(0)
    return Frame([Column.of("cluster_id", cluster_ids, type=WIRE_TYPES["integer"]),
                  Column.of("feature", features), Column.of("value", original),
                  Column.of("normalized_value", normalized)])


def profile_sql(source: str, label_column: str, frame: Frame, numeric: List[str], categorical: Dict[str, List[str]]) -> str:
    """Per cluster: size, share, the mean of every numeric input column and the share of each state."""
    label = quote_ident(label_column)
    exprs = [f"{label} as cluster_id", "count(*) as size", "count(*)::float8 / sum(count(*)) over () as share"]
    exprs += [f"avg({quote_ident(n)}::float8) as {quote_ident(n[:63])}" for n in numeric]
    for name, states in categorical.items():
        for state in states:
            literal = "'" + state.replace("'", "''") + "'"
            column = quote_ident(f"{name}={state}"[:63])
            exprs.append(f"avg(({quote_ident(name)}::text = {literal})::int::float8) as {column}")
    return f"select {', '.join(exprs)} from {source} group by {label} order by {label}"


def _profile_columns(frame: Frame, roles: inputs.Roles, encoder: FeatureEncoder, max_states: int):
    numeric, categorical = [], {}
    encoded = {f["name"]: f for f in encoder.features_}
    for name in dict.fromkeys(roles.features + roles.predict_only):
        kind = frame[name].type.kind
        if kind in ("integer", "float"):
            numeric.append(name)
        elif kind in ("text", "boolean"):
            if name in encoded:
                categorical[name] = [s for s in encoded[name]["states"] if not s.startswith("__")]
            else:
                values = frame[name].values[~frame[name].null_mask]
                states, counts = np.unique(values.astype(str), return_counts=True)
                categorical[name] = [str(s) for s in states[np.argsort(-counts, kind="stable")][:max_states]]
    return numeric, categorical


def run(conn, sql: str, options: Dict, targets: Targets, model_name: str, materialization: str,
        registry_table: str, registry_schema: str, relation: str, invocation_id: Optional[str]) -> Outcome:
    frame = read_frame(conn, sql)
    log.info(f"read {frame.n_rows} rows x {len(frame.columns)} columns")
    conn.commit()  # release the input's locks: nothing is held while training
    if frame.n_rows == 0:
        raise inputs.InputError("the SELECT returned no rows; there is nothing to cluster.")
    roles = inputs.roles(frame, options)
    encoder = FeatureEncoder(options["normalize"], options["max_states"], options["null_handling"],
                             options["max_input_attributes"])
    raw = inputs.raw_columns(frame, roles.features)
    X = encoder.fit(list(raw.values())).transform(raw)
    model, sweep = _fit(X, options)
    labels, _, _ = model.assign(X)
    metrics = clustering.metrics(X, labels, model, options["seed"])
    log.info(f"fitted {options['model_type']} with k={model.k} on {X.shape[1]} encoded features")

    registry.ensure(conn, registry_table, registry_schema)
    version = registry.register(conn, registry_table, registry.ModelVersion(
        model_name=model_name, version=0, model_type=options["model_type"], options=options,
        features=encoder.to_dict(), label=None, parameters=parameters(model), metrics=metrics,
        training_info={"iterations": model.info.get("iterations"), "k_sweep": sweep,
                       "dropped_clusters": model.info.get("dropped_clusters", 0)},
        row_count=frame.n_rows, input_fingerprint=inputs.fingerprint(frame),
        sql_fingerprint=hashlib.sha256(sql.encode()).hexdigest(),
    ), materialization, relation, invocation_id)

    if materialization == "cluster":
        output = Frame(_passed_through(frame, roles, options) + assignment_columns(model, X, options))
        write_frame(conn, targets.main, output)
        write_frame(conn, targets.centroids, centroid_frame(model, encoder))
        numeric, categorical = _profile_columns(frame, roles, encoder, options["max_states"])
        with conn.cursor() as cur:
            cur.execute(f"create table {targets.profile} as "
                        f"{profile_sql(targets.main, options['label_column'], output, numeric, categorical)}")
        log.info(f"wrote {output.n_rows} rows, {model.k} centroids and the profile")
    else:
        write_frame(conn, targets.main, weights_frame(model, encoder, version))
    verb = "CLUSTER" if materialization == "cluster" else "TRAIN"
    return Outcome(frame.n_rows, model.k, version, f"{verb} {frame.n_rows} rows, k={model.k}, v{version}")


def weights_frame(model, encoder: FeatureEncoder, version: int) -> Frame:
    """Long weights: centres (and for EM variances and mixture weights), one row per number."""
    names = encoder.feature_names
    rows = []  # (tensor, i, j, feature, value)
    for i, center in enumerate(model.centers):
        rows += [("centers", i, j, names[j], v) for j, v in enumerate(center)]
    if model.model_type == "em":
        rows += [("mixture_weights", i, None, None, w) for i, w in enumerate(model.weights)]
        cov = np.asarray(model.covariances)
        if model.covariance_type == "diag":
            rows += [("variances", i, j, names[j], v) for i, r in enumerate(cov) for j, v in enumerate(r)]
        elif model.covariance_type == "spherical":
            rows += [("variances", i, None, None, v) for i, v in enumerate(cov)]
        elif model.covariance_type == "tied":
            rows += [("covariance", a, b, names[a], cov[a, b]) for a in range(len(cov)) for b in range(len(cov))]
        else:
            rows += [("covariances", i, a * len(names) + b, names[a], c[a, b])
                     for i, c in enumerate(cov) for a in range(len(c)) for b in range(len(c))]
    tensor, i, j, feature, value = (list(x) for x in zip(*rows))
    j_nulls = np.array([x is None for x in j])
    f_nulls = np.array([x is None for x in feature])
    n = len(value)
    return Frame([
        Column.of("model_version", np.full(n, version, np.int32), type=WIRE_TYPES["integer"]),
        Column.of("tensor", np.array(tensor, object)),
        Column.of("i", np.array(i, np.int32), type=WIRE_TYPES["integer"]),
        Column.of("j", np.array([x or 0 for x in j], np.int32), nulls=j_nulls, type=WIRE_TYPES["integer"]),
        Column.of("feature", np.array([x or "" for x in feature], object), nulls=f_nulls),
        Column.of("class", np.full(n, "", object), nulls=np.ones(n, bool)),
        Column.of("value", np.array(value, float)),
    ])
