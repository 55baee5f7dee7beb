"""The `ml_predict` node: score the SELECT with a registered model version and write the predictions,
in Python (rows read, scored, written back) or inside PostgreSQL (one CREATE TABLE AS)."""

import logging
from typing import Dict, List, Optional, Tuple

import numpy as np

from dbt.adapters.sqlflow import interrupt, registry, scoring_sql
from dbt.adapters.sqlflow.data import (
    BatchReader,
    Column,
    Frame,
    copy_in,
    create_table,
    describe,
    read_frame,
    write_frame,
)
from dbt.adapters.sqlflow.data.pgtypes import WIRE_TYPES, quote_ident
from dbt.adapters.sqlflow.errors import ArtifactError
from dbt.adapters.sqlflow.jobs import cluster, increment, inputs, prepare, steps
from dbt.adapters.sqlflow.jobs.context import JobContext, Outcome
from dbt.adapters.sqlflow.jobs.weights import original_units
from dbt.adapters.sqlflow.ml import supervised
from dbt.adapters.sqlflow.ml.preprocess import FeatureEncoder
from dbt.adapters.sqlflow.progress import Progress

log = logging.getLogger("dbt_sqlflow.jobs")

CLUSTER_TYPES = ("kmeans", "em", "dec")
LINEAR_TYPES = ("linear_regression", "logistic_regression")
IN_DATABASE = ("kmeans", "em") + LINEAR_TYPES


def _in_database(options: Dict, model_type: str) -> bool:
    setting = options.get("in_database", "auto")
    if setting in (False, "false"):
        return False
    if model_type in IN_DATABASE:
        return True
    if setting in (True, "true"):
        raise inputs.InputError(
            f"in_database=true cannot score a {model_type} model in SQL yet; use "
            f"in_database='auto' or false."
        )
    return False


def _check_features(trained: registry.ModelVersion, names: List[str]) -> List[str]:
    features = [f["name"] for f in trained.features["features"]]
    absent = [n for n in features if n not in names]
    if absent:
        raise inputs.InputError(
            f"model '{trained.model_name}' v{trained.version} was trained on "
            f"{', '.join(repr(a) for a in absent)}, which the SELECT does not return; "
            f"its columns are: {', '.join(names)}."
        )
    return features


def _kept_names(trained: registry.ModelVersion, options: Dict, names: List[str]) -> List[str]:
    """The input columns the output keeps; a column named as the prediction is replaced by it."""
    kept = names if options.get("pass_through", True) else trained.options.get("key") or []
    return [n for n in kept if n in names and n != options.get("prediction_column")]


def _prediction_name(trained: registry.ModelVersion) -> Optional[str]:
    """The column that holds the prediction (what prediction_column renames)."""
    if trained.model_type in CLUSTER_TYPES:
        return trained.options.get("label_column", "cluster_id")
    if trained.model_type == "autoencoder" or not trained.label:
        return None
    return f"predicted_{trained.label}"


def _rename_prediction(conn, trained, options: Dict, target: str) -> None:
    """prediction_column: SQLFlow's TO PREDICT <table>.<column> names the prediction's column."""
    wanted = options.get("prediction_column")
    current = _prediction_name(trained)
    if not wanted or wanted == current:
        return
    if current is None:
        raise inputs.InputError(
            f"prediction_column='{wanted}': a {trained.model_type} model has no single prediction "
            f"column to name; leave it out."
        )
    with conn.cursor() as cur:
        cur.execute(
            f"alter table {target} rename column {quote_ident(current)} to {quote_ident(wanted)}"
        )


def _linear(trained: registry.ModelVersion) -> supervised.LinearModel:
    p = trained.parameters
    return supervised.LinearModel(
        p["task"], np.asarray(p["kernel"], float), np.asarray(p["bias"], float), p.get("classes")
    )


def _network(trained: registry.ModelVersion) -> supervised.KerasModel:
    p = trained.parameters
    if trained.artifact is None:
        raise inputs.InputError(
            f"model '{trained.model_name}' v{trained.version} has no stored network; retrain it."
        )
    return supervised.KerasModel(
        p["task"],
        trained.artifact,
        [],
        p.get("classes"),
        shift=p.get("shift", 0.0),
        spread=p.get("spread", 1.0),
    )


def trained_model(trained: registry.ModelVersion):
    """The estimator a registered supervised version scores with."""
    return _linear(trained) if trained.model_type in LINEAR_TYPES else _network(trained)


def _autoencoder_columns(model: supervised.KerasModel, X: np.ndarray) -> List[Column]:
    embedding = model.embedding(X)
    error = ((model.output(X) - X) ** 2).mean(axis=1)
    return [Column.of(f"embedding_{i}", embedding[:, i]) for i in range(embedding.shape[1])] + [
        Column.of("reconstruction_error", error)
    ]


def _prediction_columns(trained, model, X: np.ndarray, options: Dict) -> List[Column]:
    if model.task == "autoencoder":
        return _autoencoder_columns(model, X)
    output = model.output(X)
    label = trained.label
    if model.task == "regression":
        return [Column.of(f"predicted_{label}", output)]
    label_type = WIRE_TYPES.get(trained.parameters.get("label_type"), WIRE_TYPES["text"])
    predicted = np.array([model.classes[i] for i in output.argmax(axis=1)], dtype=object)
    if label_type.kind != "text":
        predicted = predicted.astype(label_type.numpy_dtype)
    columns = [Column.of(f"predicted_{label}", predicted, type=label_type)]
    if options.get("output_probabilities"):
        columns += [
            Column.of(f"probability_{supervised.class_name(c)}", output[:, i])
            for i, c in enumerate(model.classes)
        ]
    return columns


def _write_scored(conn, read, score, target: str) -> int:
    """Score what the read phase staged: one frame, or a BatchReader a batch at a time."""
    if isinstance(read, Frame):
        return write_frame(conn, target, score(read))
    written = 0
    progress = Progress(log, "scored rows", read.n_rows)
    for frame in read:
        scored = score(frame)
        if written == 0:  # an empty input yields one empty frame: the table still gets its columns
            create_table(conn, target, scored)
        written += copy_in(conn, target, scored)
        progress.step(written)
        interrupt.check()
    return written


def _scorer(trained, options: Dict):
    """frame -> the output frame (kept columns, predictions, model_version); the model is loaded once."""
    encoder = FeatureEncoder.from_dict(trained.features)
    if trained.model_type in CLUSTER_TYPES:
        model = cluster.model_from(trained)
        scoring = {
            **trained.options,
            "output_probabilities": options.get("output_probabilities", False),
        }
        predict = lambda X: cluster.assignment_columns(model, X, scoring)  # noqa: E731
    else:
        network = trained_model(trained)
        predict = lambda X: _prediction_columns(trained, network, X, options)  # noqa: E731

    def score(frame: Frame) -> Frame:
        features = _check_features(trained, frame.names)
        kept = [frame[n] for n in _kept_names(trained, options, frame.names)]
        bad = inputs.non_finite_rows(frame, features)
        X = encoder.transform(inputs.raw_columns(frame, features))
        X[bad] = (
            0.0  # NaN or Infinity in a feature: the row's predictions are NULL, as in PostgreSQL
        )
        predicted = [Column(c.name, c.values, c.type, c.null_mask | bad) for c in predict(X)]
        inputs.check_outputs(kept, [c.name for c in predicted] + ["model_version"])
        version = Column.of(
            "model_version",
            np.full(frame.n_rows, trained.version, np.int32),
            type=WIRE_TYPES["integer"],
        )
        return Frame(kept + predicted + [version])

    return score


# ---------------------------------------------------------------- in PostgreSQL


def _linear_select(trained, options: Dict, exprs: List[str]) -> Tuple[List[str], List[List[str]]]:
    model = _linear(trained)
    kernel, bias = original_units(model, FeatureEncoder.from_dict(trained.features))
    z = [
        f"({scoring_sql.linear_combination(kernel[:, k], exprs, bias[k])})"
        for k in range(kernel.shape[1])
    ]
    label = quote_ident(f"predicted_{trained.label}")
    if model.task == "regression":
        return [f"__z0 as {label}"], [[f"{z[0]} as __z0"]]
    classes = model.classes
    label_type = trained.parameters.get("label_type", "text")
    lit = lambda c: f"{scoring_sql.literal(c)}::{label_type}"  # noqa: E731
    if model.task == "binary":
        inner = [f"{z[0]} as __z0"]
        p1 = "case when __z0 >= 0 then 1 / (1 + exp(-__z0)) else exp(__z0) / (1 + exp(__z0)) end"
        outer = [
            f"case when __z0 > 0 then {lit(classes[1])} else {lit(classes[0])} end as {label}"
        ]
        if options.get("output_probabilities"):
            outer += [
                f"1 - ({p1}) as {quote_ident('probability_' + supervised.class_name(classes[0]))}",
                f"{p1} as {quote_ident('probability_' + supervised.class_name(classes[1]))}",
            ]
        return outer, [inner]
    inner = [f"{zk} as __z{k}" for k, zk in enumerate(z)]
    top = f"greatest({', '.join(f'__z{k}' for k in range(len(z)))})"
    cases = " ".join(f"when __z{k} = {top} then {lit(c)}" for k, c in enumerate(classes))
    outer = [f"case {cases} end as {label}"]
    if options.get("output_probabilities"):
        total = " + ".join(f"exp(__z{k} - {top})" for k in range(len(z)))
        outer += [
            f"exp(__z{k} - {top}) / ({total}) as {quote_ident('probability_' + supervised.class_name(c))}"
            for k, c in enumerate(classes)
        ]
    return outer, [inner]


def _normalized(trained, exprs: List[str]) -> List[str]:
    """The first layer of cluster scoring: every encoded feature, normalized, as __n<j>."""
    center, scale = FeatureEncoder.from_dict(trained.features).affine()
    lit = scoring_sql.literal
    return [
        f"(({e}) - {lit(c)}) / {lit(s)} as __n{j}"
        for j, (e, c, s) in enumerate(zip(exprs, center, scale))
    ]


def _distances(centers: np.ndarray) -> List[str]:
    lit = scoring_sql.literal
    return [
        f"sqrt({' + '.join(f'power(__n{j} - {lit(m)}, 2)' for j, m in enumerate(mu))}) as __d{k}"
        for k, mu in enumerate(centers)
    ]


def _kmeans_select(trained, exprs: List[str]) -> Tuple[List[str], List[List[str]]]:
    centers = np.asarray(trained.parameters["centers"], float)
    nearest = f"least({', '.join(f'__d{k}' for k in range(len(centers)))})"
    cases = " ".join(f"when __d{k} = {nearest} then {k}" for k in range(len(centers)))
    label = quote_ident(trained.options.get("label_column", "cluster_id"))
    return [f"case {cases} end as {label}", f"{nearest} as cluster_distance"], [
        _normalized(trained, exprs),
        _distances(centers),
    ]


def _em_log_densities(model) -> List[str]:
    """log(weight_k) + log N(x | mean_k, cov_k) per component, as scikit-learn computes it: with the
    precision Cholesky factor P, y = (x - mean) P and log N = log det P - (d log 2 pi + |y|^2) / 2."""
    from dbt.adapters.sqlflow.ml.clustering import _precision_cholesky

    lit = scoring_sql.literal
    means, d = model.centers, model.centers.shape[1]
    chol = _precision_cholesky(model.covariances, model.covariance_type)
    out = []
    for k, mu in enumerate(means):
        if model.covariance_type in ("diag", "spherical"):
            p = chol[k] if model.covariance_type == "diag" else np.full(d, chol[k])
            squares = [f"power((__n{j} - {lit(mu[j])}) * {lit(p[j])}, 2)" for j in range(d)]
            log_det = float(np.log(p).sum())
        else:
            P = chol if model.covariance_type == "tied" else chol[k]
            squares = [
                "power("
                + " + ".join(f"(__n{i} - {lit(mu[i])}) * {lit(P[i, j])}" for i in range(d))
                + ", 2)"
                for j in range(d)
            ]
            log_det = float(np.log(np.diag(P)).sum())
        constant = float(np.log(model.weights[k]) + log_det - 0.5 * d * np.log(2 * np.pi))
        out.append(f"{lit(constant)} - 0.5 * ({' + '.join(squares)}) as __l{k}")
    return out


def _em_select(trained, exprs: List[str], options: Dict) -> Tuple[List[str], List[List[str]]]:
    model = cluster.model_from(trained)
    k = model.k
    top = f"greatest({', '.join(f'__l{i}' for i in range(k))})"
    total = " + ".join(f"exp(__l{i} - {top})" for i in range(k))
    best = " ".join(f"when __l{i} = {top} then {i}" for i in range(k))
    label = quote_ident(trained.options.get("label_column", "cluster_id"))
    distance = " ".join(f"when __l{i} = {top} then __d{i}" for i in range(k))
    outer = [
        f"case {best} end as {label}",
        f"case {distance} end as cluster_distance",
        f"1 / ({total}) as cluster_probability",
    ]
    if options.get("output_probabilities"):
        outer += [f"exp(__l{i} - {top}) / ({total}) as probability_{i}" for i in range(k)]
    return outer, [
        _normalized(trained, exprs),
        _distances(model.centers) + _em_log_densities(model),
    ]


# markers of the stored scoring template (parameters.scoring_sql), filled in by the scoring package
INPUT, KEPT, VERSION = "/*sqlflow:input*/", "/*sqlflow:kept*/", "/*sqlflow:version*/"


def in_database_select(trained, options: Dict, sql: str, kept: str, version: str) -> str:
    """The SELECT that scores `sql` inside PostgreSQL: `kept` is the input columns' list (with a
    trailing comma) and `version` the model_version literal."""
    kinds = trained.features.get("kinds", {})
    exprs = scoring_sql.feature_expressions(trained.features, kinds, "__sqlflow_in")
    if trained.model_type == "kmeans":
        outer, layers = _kmeans_select(trained, exprs)
    elif trained.model_type == "em":
        outer, layers = _em_select(trained, exprs, options)
    else:
        outer, layers = _linear_select(trained, options, exprs)
    bad = f"{scoring_sql.non_finite(trained.features, kinds, '__sqlflow_in')} as __sqlflow_bad"
    source = scoring_sql.fenced(["__sqlflow_in.*", bad] + layers[0], sql, "__sqlflow_in")
    # each layer reads the one below, computed once per row
    for depth, layer in enumerate(layers[1:]):
        source = f"(select __sqlflow_l{depth}.*, {', '.join(layer)} from {source} as __sqlflow_l{depth} offset 0)"
    nulled = []  # NaN or Infinity in a feature: NULL predictions, as in Python
    for item in outer:
        expression, alias = item.rsplit(" as ", 1)
        nulled.append(
            f"case when __sqlflow_s.__sqlflow_bad then null else {expression} end as {alias}"
        )
    return f"select {kept}{', '.join(nulled)}, {version} as model_version from {source} as __sqlflow_s"


def output_names(trained, options: Dict) -> List[str]:
    """The prediction columns in-database scoring adds (before model_version)."""
    exprs = scoring_sql.feature_expressions(
        trained.features, trained.features.get("kinds", {}), "x"
    )
    if trained.model_type == "kmeans":
        outer = _kmeans_select(trained, exprs)[0]
    elif trained.model_type == "em":
        outer = _em_select(trained, exprs, options)[0]
    else:
        outer = _linear_select(trained, options, exprs)[0]
    return [a.rsplit(" as ", 1)[1].strip('"') for a in outer]


def scoring_templates(trained) -> Optional[Dict[str, str]]:
    """The in-database scoring of a version as SQL with markers for the input, the kept columns and
    the version, without and with output_probabilities: what plain dbt-postgres projects score
    with (the scoring package), so both paths run the same SQL."""
    if trained.model_type == "sql":
        return _sql_model_template(trained)
    if trained.model_type not in IN_DATABASE:
        return None
    return {
        key: in_database_select(trained, {"output_probabilities": flag}, INPUT, KEPT, VERSION)
        for key, flag in (("plain", False), ("probabilities", True))
    }


def _sql_model_template(trained) -> Optional[Dict[str, str]]:
    """A sql4ml model's prediction CTE over the weights as VALUES; None when the prediction reads
    more than one data relation (then ml_predict needs replaces=, which a template cannot know)."""
    from dbt.adapters.sqlflow.sql4ml.program import ProgramError
    from dbt.adapters.sqlflow.sql4ml.scoring import prediction_sql

    try:
        template = prediction_sql(trained.parameters, trained.options, INPUT, VERSION, None, None)
    except ProgramError:
        return None
    return {"plain": template, "probabilities": template}


def _score_in_database(conn, sql: str, trained, options: Dict, target: str) -> int:
    names = [c.name for c in describe(conn, sql)]
    _check_features(trained, names)
    kept_names = _kept_names(trained, options, names)
    inputs.check_outputs(kept_names, output_names(trained, options) + ["model_version"])
    kept = "".join(f"__sqlflow_s.{quote_ident(n)}, " for n in kept_names)
    select = in_database_select(trained, options, sql, kept, str(trained.version))
    with conn.cursor() as cur:
        cur.execute(
            "set local jit = off"
        )  # compiling the long generated expressions costs seconds
        cur.execute(f"create table {target} as {select}")
        return cur.rowcount


def _score_sql_model(ctx: JobContext, trained: registry.ModelVersion, sql: str) -> int:
    """A sql4ml model: its prediction CTE over the weights table (or, for an older version, the
    registry's copy of the weights), this node's SELECT in place of the data relation it reads."""
    from dbt.adapters.sqlflow.sql4ml.scoring import prediction_sql

    key = ctx.model_key(ctx.options["model"])
    with ctx.conn.cursor() as cur:
        cur.execute("select to_regclass(%s)", (key.render(),))
        source = key.render() if cur.fetchone()[0] is not None else None
        if source:
            cur.execute(f"select max(model_version) from {source}")
            source = source if cur.fetchone()[0] == trained.version else None
        sql = prediction_sql(
            trained.parameters,
            trained.options,
            sql,
            trained.version,
            source,
            ctx.options.get("replaces"),
        )
        cur.execute(f"create table {ctx.targets.main} as {sql}")
        return cur.rowcount


def _write_unscored(ctx: JobContext, columns) -> None:
    """The input's columns and model_version, no rows: what --empty can build without a model."""
    kept = ", ".join(f"{quote_ident(c.name)}" for c in columns)
    with ctx.conn.cursor() as cur:
        cur.execute(
            f"create table {ctx.targets.main} as select {kept + ', ' if kept else ''}"
            f"null::integer as model_version from (\n{ctx.sql.strip().rstrip(';')}\n) as __sqlflow_in where false"
        )


def load_trained(ctx: JobContext) -> registry.ModelVersion:
    """The version config(model=, version=) names: the live one by default."""
    version = ctx.options.get("version")
    return registry.load(
        ctx.conn,
        ctx.registry_table,
        ctx.model_key(ctx.options["model"]),
        None if version in (None, "latest") else version,
        model_name=ctx.options["model"],
        latest=version == "latest",
    )


class PredictJob:
    """ml_predict: the model is loaded and, for scoring in Python, the input read in the read phase;
    scoring in PostgreSQL is one CREATE TABLE AS in the write phase. An incremental run scores only
    the rows the table lacks or holds from another version; the materialization merges them in."""

    def read(self, ctx: JobContext):
        options = ctx.options
        try:
            trained = load_trained(ctx)
        except registry.RegistryError:
            if ctx.empty:  # dbt run --empty before the model was ever trained
                return None, describe(ctx.conn, ctx.sql), ctx.sql
            raise
        sql = prepare.scoring_sql(ctx.conn, ctx.sql, trained.options)
        if ctx.increment:
            sql = increment.new_or_stale(
                ctx.conn,
                sql,
                ctx.node.render(),
                options["unique_key"],
                trained.version,
                ctx.model_name,
            )
        if trained.model_type == "sql" or _in_database(options, trained.model_type):
            return trained, None, sql  # scored where its SQL runs, in the write phase
        return trained, self._stage(ctx, sql), sql

    def _stage(self, ctx: JobContext, sql: str):
        """The rows scored in Python: one frame, or a BatchReader over the memory budget."""
        if not inputs.should_stream(ctx.conn, sql, ctx.options):
            return read_frame(ctx.conn, sql)
        return BatchReader(ctx.conn, sql, ctx.options.get("sample_size") or 50_000)

    def fit_and_write(self, ctx: JobContext, state) -> Outcome:
        trained, read, sql = state
        if trained is None:
            _write_unscored(ctx, read)
            return Outcome(0, 0, "PREDICT 0 rows (--empty: the model is not trained yet)")
        target = ctx.targets.main
        try:
            if read is None and trained.model_type == "sql":
                where, rows = "in PostgreSQL", _score_sql_model(ctx, trained, sql)
            elif read is None:
                where = "in PostgreSQL"
                rows = _score_in_database(ctx.conn, sql, trained, ctx.options, target)
            else:
                where, rows = (
                    "in Python",
                    _write_scored(ctx.conn, read, _scorer(trained, ctx.options), target),
                )
        except ArtifactError:
            raise ArtifactError(trained.model_name, trained.version) from None
        _rename_prediction(ctx.conn, trained, ctx.options, target)
        if ctx.options.get("incremental"):
            increment.check_keys(ctx.conn, target, ctx.options["unique_key"], ctx.model_name)
        scored = f"{rows} rows"
        if ctx.increment:
            increment.check_columns(
                ctx.conn,
                target,
                ctx.node.render(),
                ctx.model_name,
                ctx.options["on_schema_change"],
            )
            scored = f"{rows} new or rescored rows"
        log.info(f"scored {scored} with {trained.model_name} v{trained.version} {where}")
        return Outcome(
            rows,
            trained.version,
            f"PREDICT {scored}, {trained.model_name} v{trained.version} {where}",
        )

    def close(self, state) -> None:
        if state and isinstance(state[1], BatchReader):
            steps.close_reader(state[1])
