"""The `ml_explain` node (and SQLFlow's `TO EXPLAIN`): attributions of a trained version's output
for the node's rows, written long (key, feature, value, attribution, baseline, prediction,
explained_output, model_version), and `<node>__global` with each feature's mean |attribution|.

- linear and logistic regression: exact, weight x (value - training mean) in the link's units (the
  logit of a classifier), computed inside PostgreSQL by one CREATE TABLE AS;
- factorization machines, DNNs, autoencoders (reconstruction error) and DEC (distance to the
  assigned centre): SHAP values from the `shap` library on a seeded background sample of the rows;
- k-means and EM: the cluster discrimination table (cluster_id, feature, state_or_bin,
  cluster_share, rest_share, score) instead of per-row attributions.
"""

import logging
from typing import Dict, List

import numpy as np

from dbt.adapters.sqlflow import interrupt, registry, scoring_sql
from dbt.adapters.sqlflow.data import Column, Frame, describe, read_frame, write_frame
from dbt.adapters.sqlflow.data.pgtypes import WIRE_TYPES, quote_ident
from dbt.adapters.sqlflow.jobs import cluster, inputs, predict, prepare
from dbt.adapters.sqlflow.jobs.context import JobContext, Outcome
from dbt.adapters.sqlflow.jobs.weights import original_units
from dbt.adapters.sqlflow.ml import explain, keras_models, supervised
from dbt.adapters.sqlflow.ml.preprocess import FeatureEncoder
from dbt.adapters.sqlflow.progress import Progress

log = logging.getLogger("dbt_sqlflow.jobs")
ROW_ID = "row_id"
CHUNK = 500  # rows explained per call of the explainer
LINEAR = ("linear_regression", "logistic_regression")
SHAP_TYPES = ("factorization_machine", "dnn_regressor", "dnn_classifier", "autoencoder", "dec")


def _keys(trained, options: Dict, names: List[str]) -> List[str]:
    """The columns that identify a row: config key, else the model's key when the SELECT has it;
    none means a row_id numbering the SELECT's rows."""
    key = options.get("key")
    if key:
        absent = [k for k in key if k not in names]
        if absent:
            raise inputs.InputError(
                f"key column(s) {', '.join(absent)} are not in the SELECT; its columns are: "
                f"{', '.join(names)}."
            )
        return list(key)
    trained_key = trained.options.get("key") or []
    return list(trained_key) if trained_key and all(k in names for k in trained_key) else []


def _global_sql(main: str, target: str, value: str, name: str) -> str:
    return (
        f"create table {target} as select feature, avg(abs({value})) as {name}, "
        f"rank() over (order by avg(abs({value})) desc) as rank from {main} group by feature"
    )


# ---------------------------------------------------------------- linear: exact, in PostgreSQL


def _linear_sql(trained, sql: str, keys: List[str]) -> str:
    state = trained.features
    model = predict.trained_model(trained)
    kernel, bias = original_units(model, FeatureEncoder.from_dict(state))
    means = explain.encoded_means(state)
    exprs = scoring_sql.feature_expressions(state, state.get("kinds", {}), "__sqlflow_in")
    lit = scoring_sql.literal
    n_out = kernel.shape[1]
    z = [
        f"{scoring_sql.linear_combination(kernel[:, k], [f'__e{j}' for j in range(len(exprs))], bias[k])} as __z{k}"
        for k in range(n_out)
    ]
    base = [float(bias[k] + kernel[:, k] @ means) for k in range(n_out)]
    if n_out > 1:  # multiclass: the predicted class's logit is explained
        top = f"greatest({', '.join(f'__z{k}' for k in range(n_out))})"
        chosen = f"case {' '.join(f'when __z{k} = {top} then {k}' for k in range(n_out))} end"
    else:
        chosen = "0"

    def per_class(values: List[str]) -> str:
        if n_out == 1:
            return values[0]
        return f"case __c {' '.join(f'when {k} then {v}' for k, v in enumerate(values))} end"

    classes = model.classes or []
    if model.task == "regression":
        names = [f"predicted_{trained.label}"]
    elif model.task == "binary":
        names = [f"logit({trained.label}={supervised.class_name(classes[1])})"]
    else:
        names = [f"logit({trained.label}={supervised.class_name(c)})" for c in classes]
    rows = []
    for feature, idx in explain.feature_groups(state):
        terms = [
            " + ".join(f"{lit(kernel[j, k])} * (__e{j} - {lit(means[j])})" for j in idx) or "0"
            for k in range(n_out)
        ]
        rows.append(
            f"({lit(feature)}, __s.{quote_ident(feature)}::text, {per_class(terms)}::float8)"
        )
    # the row number under an internal name: the SELECT may have a row_id of its own
    key_list = [f"__s.{quote_ident(k)}" for k in keys] or [f"__s.__sqlflow_row as {ROW_ID}"]
    inner = scoring_sql.fenced(
        ["__sqlflow_in.*", "row_number() over () as __sqlflow_row"]
        + [f"{e} as __e{j}" for j, e in enumerate(exprs)],
        sql,
        "__sqlflow_in",
    )
    scored = f"(select __l0.*, {', '.join(z)} from {inner} as __l0 offset 0)"
    chosen_layer = f"(select __l1.*, {chosen} as __c from {scored} as __l1 offset 0)"
    return (
        f"select {', '.join(key_list)}, __f.feature, __f.value, __f.attribution, "
        f"{per_class([lit(b) for b in base])} as baseline, "
        f"{per_class([f'__z{k}' for k in range(n_out)])} as prediction, "
        f"{per_class([lit(n) for n in names])} as explained_output, "
        f"{trained.version} as model_version "
        f"from {chosen_layer} as __s cross join lateral (values {', '.join(rows)}) "
        f"as __f(feature, value, attribution)"
    )


# ---------------------------------------------------------------- networks: SHAP, in Python


def _scalar_outputs(trained, keras, X: np.ndarray):
    """(row groups, f per group, name per group): the scalar each row's explanation is about."""
    if trained.model_type == "dec":
        model = cluster.model_from(trained)
        labels = model.assign(X)[0]
        centers = model.centers

        def distance(c: int):
            return lambda A: np.linalg.norm(model.embedding(A) - centers[c], axis=1)

        groups = [labels == c for c in range(model.k)]
        return (
            groups,
            [distance(c) for c in range(model.k)],
            [f"distance_to_cluster_{c}" for c in range(model.k)],
        )
    task = trained.parameters["task"]
    output = predict.trained_model(trained).predictor(keras)  # loaded once: shap calls it often
    if task == "autoencoder":
        return (
            [np.ones(len(X), bool)],
            [lambda A: ((output(A) - A) ** 2).mean(axis=1)],
            ["reconstruction_error"],
        )
    if task == "regression":
        return [np.ones(len(X), bool)], [output], [f"predicted_{trained.label}"]
    classes = trained.parameters["classes"]
    name = lambda c: f"probability({trained.label}={supervised.class_name(classes[c])})"  # noqa: E731
    if task == "binary":
        return [np.ones(len(X), bool)], [lambda A: output(A)[:, 1]], [name(1)]
    predicted = output(X).argmax(axis=1)  # multiclass: the predicted class's probability
    groups = [predicted == c for c in range(len(classes))]
    return (
        groups,
        [lambda A, c=c: output(A)[:, c] for c in range(len(classes))],
        [name(c) for c in range(len(classes))],
    )


def _shap_frame(trained, options: Dict, frame: Frame, keys: List[str]) -> Frame:
    state = trained.features
    features = predict._check_features(trained, frame.names)
    inputs.check_finite(frame, features)
    X = FeatureEncoder.from_dict(state).transform(inputs.raw_columns(frame, features))
    if len(X) == 0:  # nothing to explain: the table's columns, no rows
        groups = explain.feature_groups(state)
        empty = np.empty((0, len(groups)))
        return _long_frame(trained, frame, keys, groups, empty, *(np.empty(0),) * 3)
    seed = options.get("seed", 0)
    background = explain.background_rows(X, options["background"], seed)
    groups = explain.feature_groups(state)
    n, m = len(X), len(groups)
    attributions, base = np.zeros((n, m)), np.zeros(n)
    prediction, explained = np.zeros(n), np.empty(n, dtype=object)
    explainer = "permutation" if options["explainer"] == "auto" else options["explainer"]
    progress, done = Progress(log, "explained rows", n), 0
    with keras_models.tensorflow_session(seed) as keras:
        rows, functions, names = _scalar_outputs(trained, keras, X)
        for rows_of, f, name in zip(rows, functions, names):
            if not rows_of.any():
                continue
            # a chunk at a time: progress lines, and Ctrl-C is honoured between chunks
            for chunk in np.array_split(np.flatnonzero(rows_of), -(-int(rows_of.sum()) // CHUNK)):
                values, base_values = explain.shap_values(
                    f, X[chunk], background, explainer, seed, options.get("max_evals", 0)
                )
                attributions[chunk] = explain.grouped(values, groups)
                base[chunk], prediction[chunk], explained[chunk] = base_values, f(X[chunk]), name
                done += len(chunk)
                progress.step(done)
                interrupt.check()
    return _long_frame(trained, frame, keys, groups, attributions, base, prediction, explained)


def _long_frame(trained, frame, keys, groups, attributions, base, prediction, explained) -> Frame:
    n, m = attributions.shape
    repeat = lambda a: np.repeat(a, m)  # noqa: E731
    key_columns = [
        Column(k, repeat(frame[k].values), frame[k].type, repeat(frame[k].null_mask)) for k in keys
    ] or [
        Column.of(ROW_ID, repeat(np.arange(1, n + 1, dtype=np.int64)), type=WIRE_TYPES["bigint"])
    ]
    names = [g for g, _ in groups]
    values = np.empty((n, m), dtype=object)
    nulls = np.zeros((n, m), bool)
    for i, name in enumerate(names):
        column = frame[name]
        values[:, i] = [str(v) for v in column.values]
        nulls[:, i] = column.null_mask
    return Frame(
        key_columns
        + [
            Column.of(
                "feature", np.tile(np.array(names, dtype=object), n), type=WIRE_TYPES["text"]
            ),
            Column.of("value", values.ravel(), nulls=nulls.ravel(), type=WIRE_TYPES["text"]),
            Column.of("attribution", attributions.ravel()),
            Column.of("baseline", repeat(base)),
            Column.of("prediction", repeat(prediction)),
            Column.of("explained_output", repeat(explained), type=WIRE_TYPES["text"]),
            Column.of(
                "model_version",
                np.full(n * m, trained.version, np.int32),
                type=WIRE_TYPES["integer"],
            ),
        ]
    )


# ---------------------------------------------------------------- k-means and EM


def _discrimination_frame(trained, frame: Frame) -> Frame:
    state = trained.features
    features = predict._check_features(trained, frame.names)
    X = FeatureEncoder.from_dict(state).transform(inputs.raw_columns(frame, features))
    bad = inputs.non_finite_rows(frame, features)
    X[bad] = 0.0
    model = cluster.model_from(trained)
    labels = np.where(bad, -1, model.assign(X)[0]) if len(X) else np.empty(0, int)
    states = {
        f["name"]: explain.bin_labels(frame[f["name"]].values, frame[f["name"]].null_mask, f)
        for f in state["features"]
    }
    rows = explain.discrimination(labels, model.k, states)
    columns: List[tuple] = list(zip(*rows)) if rows else [()] * 6
    return Frame(
        [
            Column.of("cluster_id", np.array(columns[0], np.int32), type=WIRE_TYPES["integer"]),
            Column.of("feature", np.array(columns[1], dtype=object), type=WIRE_TYPES["text"]),
            Column.of("state_or_bin", np.array(columns[2], dtype=object), type=WIRE_TYPES["text"]),
            Column.of("cluster_share", np.array(columns[3], np.float64)),
            Column.of("rest_share", np.array(columns[4], np.float64)),
            Column.of("score", np.array(columns[5], np.float64)),
            Column.of(
                "model_version",
                np.full(len(rows), trained.version, np.int32),
                type=WIRE_TYPES["integer"],
            ),
        ]
    )


def _write_empty(ctx: JobContext) -> Outcome:
    """`dbt run --empty` before the model was trained: the tables' columns, no rows."""
    with ctx.conn.cursor() as cur:
        cur.execute(
            f"create table {ctx.targets.main} (row_id bigint, feature text, value text, "
            f"attribution float8, baseline float8, prediction float8, explained_output text, "
            f"model_version integer)"
        )
        cur.execute(
            f"create table {ctx.targets.global_table} (feature text, mean_abs_attribution float8, "
            f"rank bigint)"
        )
    return Outcome(0, 0, "EXPLAIN 0 rows (--empty: the model is not trained yet)")


class ExplainJob:
    def read(self, ctx: JobContext):
        try:
            trained = predict.load_trained(ctx)
        except registry.RegistryError:
            if ctx.empty:
                return None, ctx.sql, None
            raise
        sql = prepare.scoring_sql(ctx.conn, ctx.sql, trained.options)
        if trained.model_type in LINEAR:
            return trained, sql, None
        if trained.model_type not in SHAP_TYPES + ("kmeans", "em"):
            raise inputs.InputError(
                f"{trained.model_name} is a {trained.model_type} model, which ml_explain cannot "
                f"explain yet; it explains linear, logistic, FM, DNN, autoencoder, DEC, k-means "
                f"and EM models."
            )
        return trained, sql, read_frame(ctx.conn, sql)

    def fit_and_write(self, ctx: JobContext, state) -> Outcome:
        trained, sql, frame = state
        if trained is None:
            return _write_empty(ctx)
        names = [c.name for c in describe(ctx.conn, sql)] if frame is None else frame.names
        target, side = ctx.targets.main, ctx.targets.global_table
        if trained.model_type in ("kmeans", "em"):
            rows = write_frame(ctx.conn, target, _discrimination_frame(trained, frame))
            how, value, name = "cluster discrimination", "score", "mean_abs_score"
        else:
            keys = _keys(trained, ctx.options, names)
            predict._check_features(trained, names)
            if frame is None:
                with ctx.conn.cursor() as cur:
                    cur.execute("set local jit = off")
                    cur.execute(f"create table {target} as {_linear_sql(trained, sql, keys)}")
                    rows = cur.rowcount
                how = "exact, in PostgreSQL"
            else:
                long = _shap_frame(trained, ctx.options, frame, keys)
                rows = write_frame(ctx.conn, target, long)
                how = f"SHAP ({ctx.options['explainer'].replace('auto', 'permutation')})"
            value, name = "attribution", "mean_abs_attribution"
        with ctx.conn.cursor() as cur:
            cur.execute(_global_sql(target, side, value, name))
        log.info(f"explained {trained.model_name} v{trained.version}: {how}, {rows} rows")
        return Outcome(
            rows, trained.version, f"EXPLAIN {rows} rows, {trained.model_name} v{trained.version}"
        )

    def close(self, state) -> None:
        pass
