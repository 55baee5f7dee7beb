"""The `cluster` node (fit + assign) and the clustering side of `ml_train` and `ml_predict`."""

import logging
import time
from typing import Dict, Iterator, List, Optional, Tuple

import numpy as np

from dbt.adapters.sqlflow import interrupt, registry
from dbt.adapters.sqlflow.data import (
    BatchReader,
    Column,
    Frame,
    copy_in,
    create_table,
    read_frame,
    write_frame,
)
from dbt.adapters.sqlflow.data.pgtypes import WIRE_TYPES, quote_ident
from dbt.adapters.sqlflow.jobs import inputs, steps, weights
from dbt.adapters.sqlflow.jobs.context import JobContext, Outcome
from dbt.adapters.sqlflow.ml import clustering, history, params
from dbt.adapters.sqlflow.ml.preprocess import FeatureEncoder
from dbt.adapters.sqlflow.progress import Progress

log = logging.getLogger("dbt_sqlflow.jobs")


def _fit_options(options: Dict) -> Dict:
    """The estimator's keyword arguments that apply to this model type (options.py sets their
    defaults; a key that does not apply, such as n_init for EM, is left to the estimator)."""
    names = ("n_init", "max_iter", "tol", "covariance_type")
    return {n: options[n] for n in names if n in options}


def _fit_dec(source: "Source", encode, options: Dict, pretrained: Optional[registry.ModelVersion]):
    from dbt.adapters.sqlflow.ml import dec

    if pretrained is not None and options.get("encode_units") != TYPE_DEFAULT_UNITS:
        log.warning(
            f"encode_units is ignored: the encoder of '{pretrained.model_name}' sets the layers"
        )
    if options["n_clusters"] > source.n_rows:
        raise clustering.ClusteringError(
            f"n_clusters={options['n_clusters']} is larger than the {source.n_rows} input rows."
        )
    data = (
        dec.Batches(
            lambda: (encode(f) for f in source.batches()), source.n_rows, encode(source.first)
        )
        if source.streamed
        else encode(source.first)
    )
    if source.streamed:
        log.info(
            f"the input is over memory_budget_mb: DEC reads it in batches of {options['sample_size']} rows"
        )
    model = dec.fit(
        data,
        options["n_clusters"],
        params.from_options(params.Dec, options),
        pretrained.artifact if pretrained else None,
    )
    return model, model.info.pop("k_sweep", [])


def _fit(source: "Source", encode, options: Dict, pretrained=None):
    """The model and the k sweep (n_clusters=0). Scalable mode streams the batches; choosing k then
    runs on the first batch, a sample of sample_size rows."""
    if options["model_type"] == "dec":
        return _fit_dec(source, encode, options, pretrained)
    sweep: List[Dict] = []
    k, seed = options["n_clusters"], options["seed"]
    if k == 0:
        sample = (
            encode(source.first)
            if source.streamed
            else np.vstack([encode(f) for f in source.batches()])
        )
        k, sweep = clustering.choose_k(
            sample, options["model_type"], options["k_range"], seed, **_fit_options(options)
        )
        log.info(f"chose k={k} in k_range {options['k_range']}")
    if source.streamed:
        model = clustering.fit_streaming(
            lambda: (encode(f) for f in source.batches()),
            options["model_type"],
            k,
            seed,
            **_fit_options(options),
        )
    else:
        model = clustering.fit(
            encode(source.first), options["model_type"], k, seed, **_fit_options(options)
        )
    if options.get("minimum_support", 1) > 1:
        sizes = clustering.cluster_sizes(model, (encode(f) for f in source.batches()))
        model = clustering.drop_small_clusters(model, sizes, options["minimum_support"])
    return model, sweep


def _relabeled(model, ids: np.ndarray):
    if model.model_type == "dec":
        from dbt.adapters.sqlflow.ml.dec import relabeled

        return relabeled(model, ids)
    return clustering.relabeled(model, ids)


def _matching_cost(model, live, encoder: FeatureEncoder, sample: Frame, encode):
    """(cost, method): centre distances when both are k-means/EM over the same encoded features
    (the live centres moved into this encoder's units), else minus the rows of the sample the two
    versions put in each pair of clusters. None when the live version cannot read the sample."""
    old_encoder = FeatureEncoder.from_dict(live.features)
    old = model_from(live)
    spatial = ("kmeans", "em")
    if (
        model.model_type in spatial
        and live.model_type in spatial
        and old_encoder.feature_names == encoder.feature_names
    ):
        (old_c, old_s), (new_c, new_s) = old_encoder.affine(), encoder.affine()
        centres = (old.centers * old_s + old_c - new_c) / new_s
        return clustering.centre_distances(model.centers, centres), "centre distance"
    names = [f["name"] for f in live.features["features"]]
    if any(n not in sample.names for n in names):
        return None, None
    X_old = old_encoder.transform(inputs.raw_columns(sample, names))
    new_labels, old_labels = model.assign(encode(sample))[0], old.assign(X_old)[0]
    return clustering.overlap_cost(new_labels, old_labels, model.k, old.k), "membership overlap"


def _stable_ids(ctx: JobContext, model, encoder: FeatureEncoder, sample: Frame, encode):
    """The model with its clusters renamed after the live version's (stable_ids=true), so that
    cluster 3 keeps its meaning across retrains, and what was matched, for training_info."""
    if not ctx.options.get("stable_ids", True):
        return model, None
    try:
        live = registry.load(ctx.conn, ctx.registry_table, ctx.node, model_name=ctx.model_name)
    except registry.RegistryError:
        return model, None  # the first version: its ids are the fit's
    if live.model_type not in CLUSTERING_TYPES:
        return model, None
    cost, method = _matching_cost(model, live, encoder, sample, encode)
    if cost is None:
        log.info(f"stable_ids: v{live.version} cannot read this input; ids not matched")
        return model, None
    ids = clustering.matched_ids(cost)
    log.info(f"stable_ids: clusters matched to v{live.version} by {method}: {ids.tolist()}")
    matching = {"matched_to": live.version, "method": method, "ids": ids.tolist()}
    return _relabeled(model, ids), matching


TYPE_DEFAULT_UNITS = [100, 10]
CLUSTERING_TYPES = ("kmeans", "em", "dec")


def _pretrained(ctx: JobContext, sample: Frame) -> Optional[registry.ModelVersion]:
    """The registered autoencoder or DEC model whose encoder a dec model starts from, checked."""
    name = ctx.options.get("pretrained_model")
    if ctx.options.get("model_type") != "dec" or not name:
        return None
    version = registry.load(ctx.conn, ctx.registry_table, ctx.model_key(name), model_name=name)
    if version.model_type not in ("autoencoder", "dec"):
        raise inputs.InputError(
            f"pretrained_model '{name}' is a {version.model_type} model; it must be an "
            f"ml_train model of type autoencoder or dec."
        )
    missing = [f["name"] for f in version.features["features"] if f["name"] not in sample]
    if missing:
        raise inputs.InputError(
            f"pretrained_model '{name}' was trained on {', '.join(repr(m) for m in missing)}, "
            f"which the SELECT does not return: its encoder needs the same columns."
        )
    return version


def _encoder_for(encoder: FeatureEncoder, features: List[str]):
    """frame -> matrix, remembering the last frame: in memory the one frame is fitted, scored and
    written, and is encoded once, not three times."""
    last: Dict = {}

    def encode(frame: Frame) -> np.ndarray:
        if last.get("frame") is not frame:
            last["frame"], last["X"] = (
                frame,
                encoder.transform(inputs.raw_columns(frame, features)),
            )
        return last["X"]

    return encode


class Source:
    """The SELECT's rows: one in-memory frame, or batches of a BatchReader (k-means and EM with
    scalable=true; DEC when the planner's estimate of the input is over memory_budget_mb)."""

    def __init__(self, conn, sql: str, options: Dict):
        self.streamed = bool(options.get("scalable")) or (
            options["model_type"] == "dec" and inputs.should_stream(conn, sql, options)
        )
        if self.streamed:
            self.reader = BatchReader(conn, sql, options["sample_size"] or 50_000)
            self.n_rows = self.reader.n_rows
            self.first = next(iter(self.reader))
        else:
            self.reader = None
            self.first = read_frame(conn, sql)
            self.n_rows = self.first.n_rows

    def batches(self) -> Iterator[Frame]:
        return iter(self.reader) if self.streamed else iter([self.first])

    def close(self) -> None:
        steps.close_reader(self.reader)


def parameters(model) -> Dict:
    if model.model_type == "dec":
        order = None if model.order is None else model.order.tolist()
        return {"centers": model.centers, "cluster_order": order}
    return {
        "centers": model.centers,
        "covariance_type": model.covariance_type,
        "covariances": model.covariances,
        "weights": model.weights,
    }


def model_from(version: registry.ModelVersion):
    p = version.parameters
    if version.model_type == "dec":
        from dbt.adapters.sqlflow.ml.dec import DecModel

        order = p.get("cluster_order")
        return DecModel(
            version.artifact,
            np.asarray(p["centers"], float),
            [],
            order=None if order is None else np.asarray(order, int),
        )
    as_array = lambda v: None if v is None else np.asarray(v, float)  # noqa: E731
    return clustering.ClusterModel(
        version.model_type,
        as_array(p["centers"]),
        p.get("covariance_type"),
        as_array(p.get("covariances")),
        as_array(p.get("weights")),
    )


def assignment_columns(model, X: np.ndarray, options: Dict) -> List[Column]:
    labels, distances, probabilities = model.assign(X)
    columns = [
        Column.of(
            options.get("label_column", "cluster_id"),
            labels.astype(np.int32),
            type=WIRE_TYPES["integer"],
        ),
        Column.of("cluster_distance", distances),
    ]
    if probabilities is not None:
        columns.append(Column.of("cluster_probability", probabilities.max(axis=1)))
        if options.get("output_probabilities"):
            columns += [Column.of(f"probability_{i}", probabilities[:, i]) for i in range(model.k)]
    if options.get("output_embedding"):
        z = model.embedding(X)
        columns += [Column.of(f"embedding_{j}", z[:, j]) for j in range(z.shape[1])]
    return columns


def _passed_through(frame: Frame, roles: inputs.Roles, options: Dict) -> List[Column]:
    if options.get("pass_through", True):
        return list(frame.columns)
    names = roles.key + [n for n in roles.features + roles.predict_only if n not in roles.key]
    return [frame[n] for n in names]


def centroid_frame(model, encoder: FeatureEncoder) -> Frame:
    """Centres per feature, in original and normalized units (DEC: in embedding space, both the same)."""
    if model.model_type == "dec":
        k, d = model.centers.shape
        return Frame(
            [
                Column.of(
                    "cluster_id",
                    np.repeat(np.arange(k, dtype=np.int32), d),
                    type=WIRE_TYPES["integer"],
                ),
                Column.of(
                    "feature", np.array([f"embedding_{j}" for j in range(d)] * k, dtype=object)
                ),
                Column.of("value", model.centers.ravel()),
                Column.of("normalized_value", model.centers.ravel()),
            ]
        )
    names = encoder.feature_names
    k, d = model.centers.shape
    cluster_ids = np.repeat(np.arange(k, dtype=np.int32), d)
    features = np.array(names * k, dtype=object)
    normalized = model.centers.ravel()
    original = (
        np.concatenate(
            [
                [
                    float(encoder.to_original_units(n, np.asarray(v, np.float64)))
                    for n, v in zip(names, row)
                ]
                for row in model.centers
            ]
        )
        if k
        else np.empty(0)
    )
    return Frame(
        [
            Column.of("cluster_id", cluster_ids, type=WIRE_TYPES["integer"]),
            Column.of("feature", features),
            Column.of("value", original),
            Column.of("normalized_value", normalized),
        ]
    )


def profile_sql(
    source: str, label_column: str, numeric: List[str], categorical: Dict[str, List[str]]
) -> str:
    """Per cluster: size, share, the mean of every numeric input column and the share of each state."""
    label = quote_ident(label_column)
    exprs = [
        f"{label} as cluster_id",
        "count(*) as size",
        "count(*)::float8 / sum(count(*)) over () as share",
    ]
    exprs += [f"avg({quote_ident(n)}::float8) as {quote_ident(n[:63])}" for n in numeric]
    for name, states in categorical.items():
        for state in states:
            literal = "'" + state.replace("'", "''") + "'"
            column = quote_ident(f"{name}={state}"[:63])
            exprs.append(f"avg(({quote_ident(name)}::text = {literal})::int::float8) as {column}")
    return f"select {', '.join(exprs)} from {source} group by {label} order by {label}"


def _frequent_states(conn, table: str, column: str, limit: int) -> List[str]:
    with conn.cursor() as cur:
        cur.execute(
            f"select {quote_ident(column)}::text from {table} where {quote_ident(column)} is not null "
            f"group by 1 order by count(*) desc, 1 limit {int(limit)}"
        )
        return [r[0] for r in cur.fetchall()]


def _profile_columns(
    conn, table: str, sample: Frame, roles: inputs.Roles, encoder: FeatureEncoder, max_states: int
):
    """Numeric columns get a mean; categorical ones the share of each state (the encoder's states for
    features, the most frequent ones in the written table for predict_only columns)."""
    numeric, categorical = [], {}
    encoded = {f["name"]: f for f in encoder.features_}
    for name in dict.fromkeys(roles.features + roles.predict_only):
        kind = sample[name].type.kind
        if kind in ("integer", "float"):
            numeric.append(name)
        elif kind in ("text", "boolean"):
            if name in encoded:
                categorical[name] = [s for s in encoded[name]["states"] if not s.startswith("__")]
            else:
                categorical[name] = _frequent_states(conn, table, name, max_states)
    return numeric, categorical


def _metrics(model, source: Source, encode, seed: int, numeric: List[str]) -> Tuple[Dict, Dict]:
    """Quality metrics on the first batch (all rows in memory); DEC's are computed in its embedding
    space. In the same pass over the rows, what a model card draws: rows per cluster, the per-cluster
    means of the numeric features (the profile) and the histogram of cluster_probability."""
    X = encode(source.first)
    first = model.assign(X)
    labels = first[0]
    space = model.embedding(X) if model.model_type == "dec" else X
    metrics = clustering.metrics(space, labels, model, seed)
    sizes = np.zeros(model.k, np.int64)
    sums, counts = np.zeros((model.k, len(numeric))), np.zeros((model.k, len(numeric)))
    bins = np.zeros(20, np.int64)
    inertia = 0.0
    for frame in source.batches():
        assigned, distances, probabilities = (
            first if frame is source.first else model.assign(encode(frame))
        )
        inertia += float((distances**2).sum())
        sizes += np.bincount(assigned, minlength=model.k)
        for j, name in enumerate(numeric):
            column, present = frame[name], ~frame[name].null_mask
            values = np.where(present, column.values.astype(np.float64), 0.0)
            sums[:, j] += np.bincount(assigned, weights=values, minlength=model.k)
            counts[:, j] += np.bincount(assigned, weights=present, minlength=model.k)
        if probabilities is not None:
            bins += np.histogram(probabilities.max(axis=1), bins=20, range=(0.0, 1.0))[0]
    if source.streamed:
        metrics["inertia"] = inertia
        metrics["metrics_sample_rows"] = len(X)
    facts = {
        "sizes": sizes.tolist(),
        "profile": {
            "features": numeric,
            # as the __profile table's avg(): NULLs are not counted
            "means": (sums / np.maximum(counts, 1)).tolist(),
            "overall": (sums.sum(axis=0) / np.maximum(counts.sum(axis=0), 1)).tolist(),
        },
    }
    if model.model_type in ("em", "dec"):
        facts["probability_histogram"] = bins.tolist()
    return metrics, facts


def _history(model, options: Dict, seconds: float, metrics: Dict) -> List[Dict]:
    if model.model_type == "dec":
        return history.dec(model.info, options.get("learning_rate"))
    if model.model_type == "em" and "lower_bound" in model.info:
        loss = -model.info["lower_bound"]  # what EM maximizes, per row, as a loss
    else:
        loss = metrics.get("inertia")
    return history.clustering(model.info, seconds, loss)


def _write_assignments(
    conn, source: Source, encode, model, roles, options: Dict, target: str
) -> int:
    """Read a batch, assign it, COPY it out: the whole table is never in memory in scalable mode."""
    written = 0
    progress = Progress(log, "written rows", source.n_rows)
    for frame in source.batches():
        output = Frame(
            _passed_through(frame, roles, options)
            + assignment_columns(model, encode(frame), options)
        )
        if written == 0:
            create_table(conn, target, output)
        written += copy_in(conn, target, output)
        if source.streamed:  # in memory it is one step: the summary line says it
            progress.step(written)
    return written


def output_names(options, model_type: str) -> List[str]:
    names = [options.get("label_column", "cluster_id"), "cluster_distance"]
    if model_type in ("em", "dec"):
        names.append("cluster_probability")
    return names


def checked_roles(ctx: JobContext, first: Frame) -> inputs.Roles:
    """The columns' roles; a cluster node's passed-through columns must not clash with its outputs."""
    roles = inputs.roles(first, ctx.options)
    if ctx.materialization == "cluster":
        inputs.check_outputs(
            _passed_through(first, roles, ctx.options),
            output_names(ctx.options, ctx.options["model_type"]),
        )
    return roles


class ClusterJob:
    """cluster (fit + assign + side tables) and ml_train of kmeans, em and dec (weights table)."""

    def read(self, ctx: JobContext) -> Source:
        source = Source(ctx.conn, ctx.sql, ctx.options)
        log.info(f"read {source.n_rows} rows x {len(source.first.columns)} columns")
        return source

    def close(self, source: Source) -> None:
        source.close()

    def fit_and_write(self, ctx: JobContext, source: Source) -> Outcome:
        options = ctx.options
        verb = "CLUSTER" if ctx.materialization == "cluster" else "TRAIN"
        roles = checked_roles(ctx, source.first)
        if source.n_rows == 0 and ctx.empty:
            return self._write_empty(ctx, source, roles)
        if source.n_rows == 0:
            raise inputs.InputError("the SELECT returned no rows; there is nothing to cluster.")
        pretrained = _pretrained(ctx, source.first)
        if pretrained is not None:  # the encoder reads its inputs as it was trained to
            roles.features = [f["name"] for f in pretrained.features["features"]]
        encoder = inputs.new_encoder(options)
        fingerprint = inputs.Fingerprint()

        def fingerprinted(frames):  # one pass both digests the input and fits the encoder
            for frame in frames:
                fingerprint.update(frame)
                inputs.check_finite(frame, roles.features)
                yield inputs.raw_columns(frame, roles.features)

        encoder.fit_batches(fingerprinted(source.batches()))
        if pretrained is not None:
            encoder = FeatureEncoder.from_dict(pretrained.features)
        kept = steps.unchanged(ctx, fingerprint.hexdigest(), verb, source.n_rows)
        if kept:
            return kept
        inputs.report_dropped(encoder)
        interrupt.check()
        encode = _encoder_for(encoder, roles.features)
        fit_started = time.perf_counter()
        model, sweep = _fit(source, encode, options, pretrained)
        fit_seconds = time.perf_counter() - fit_started
        model, matching = _stable_ids(ctx, model, encoder, source.first, encode)
        interrupt.check()
        kinds = {n: source.first[n].type.kind for n in roles.features}
        numeric = [n for n in roles.features if kinds[n] in ("integer", "float")]
        metrics, facts = _metrics(model, source, encode, options["seed"], numeric)
        log.info(
            f"fitted {options['model_type']} with k={model.k} on {len(encoder.feature_names)} encoded features"
        )
        version = steps.register(
            ctx,
            registry.ModelVersion(
                model_name=ctx.model_name,
                version=0,
                model_type=options["model_type"],
                options=dict(options),
                features={
                    **encoder.to_dict(),
                    "kinds": kinds,
                    "dropped": encoder.dropped_,
                },
                label=None,
                parameters=parameters(model),
                metrics=metrics,
                training_info={
                    "k_sweep": sweep,
                    "stable_ids": matching,
                    "dropped_clusters": model.info.get("dropped_clusters", 0),
                    **{k: v for k, v in model.info.items() if k != "dropped_clusters"},
                    "history": _history(model, options, fit_seconds, metrics),
                    **facts,
                },
                row_count=source.n_rows,
                input_fingerprint=fingerprint.hexdigest(),
                sql_fingerprint=steps.sql_fingerprint(ctx.sql),
                artifact=getattr(model, "artifact", None),
            ),
        )
        self._write(ctx, source, encode, model, roles, encoder, version)
        return Outcome(
            source.n_rows,
            version,
            f"{verb} {source.n_rows} rows, k={model.k}, v{version}",
            k=model.k,
        )

    @staticmethod
    def _write_empty(ctx: JobContext, source: Source, roles) -> Outcome:
        """`dbt run --empty`: every relation with its columns and no rows; nothing trained or registered."""
        conn, targets = ctx.conn, ctx.targets
        verb = "CLUSTER" if ctx.materialization == "cluster" else "TRAIN"
        if ctx.materialization != "cluster":
            write_frame(conn, targets.main, weights.empty_weights_frame())
            return Outcome(0, 0, f"{verb} 0 rows (--empty: not trained)")
        integer = WIRE_TYPES["integer"]
        label, *floats = output_names(ctx.options, ctx.options["model_type"])
        write_frame(
            conn,
            targets.main,
            Frame(
                _passed_through(source.first, roles, ctx.options)
                + [Column.of(label, np.empty(0, np.int32), type=integer)]
                + [Column.of(n, np.empty(0)) for n in floats]
            ),
        )
        write_frame(
            conn,
            targets.centroids,
            Frame(
                [
                    Column.of("cluster_id", np.empty(0, np.int32), type=integer),
                    Column.of("feature", np.empty(0, object)),
                    Column.of("value", np.empty(0)),
                    Column.of("normalized_value", np.empty(0)),
                ]
            ),
        )
        with conn.cursor() as cur:
            cur.execute(
                f"create table {targets.profile} as select null::integer as cluster_id, 0::bigint as size, "
                f"0::float8 as share where false"
            )
        return Outcome(0, 0, f"{verb} 0 rows (--empty: not trained)")

    @staticmethod
    def _write(
        ctx: JobContext, source: Source, encode, model, roles, encoder, version: int
    ) -> None:
        conn, options, targets = ctx.conn, ctx.options, ctx.targets
        if ctx.materialization == "cluster":
            _write_assignments(conn, source, encode, model, roles, options, targets.main)
            write_frame(conn, targets.centroids, centroid_frame(model, encoder))
            numeric, categorical = _profile_columns(
                conn, targets.main, source.first, roles, encoder, options["max_states"]
            )
            with conn.cursor() as cur:
                cur.execute(
                    f"create table {targets.profile} as "
                    f"{profile_sql(targets.main, options['label_column'], numeric, categorical)}"
                )
            log.info(f"wrote {source.n_rows} rows, {model.k} centroids and the profile")
        elif model.model_type == "dec":
            write_frame(conn, targets.main, weights.network_weights_frame(model, encoder, version))
        else:
            write_frame(conn, targets.main, weights.cluster_weights_frame(model, encoder, version))
