"""The `ml_train` node for models trained by gradient descent (TensorFlow): linear and logistic
regression, factorization machines, DNNs and autoencoders."""

import logging
from typing import Dict, List, Optional, Tuple

import numpy as np

from dbt.adapters.sqlflow import interrupt, registry
from dbt.adapters.sqlflow.data import BatchReader, Frame, read_frame, write_frame
from dbt.adapters.sqlflow.jobs import inputs, steps, weights
from dbt.adapters.sqlflow.jobs.context import JobContext, Outcome
from dbt.adapters.sqlflow.ml import history, params, supervised
from dbt.adapters.sqlflow.ml.preprocess import FeatureEncoder, feature_groups

log = logging.getLogger("dbt_sqlflow.jobs")


def _split_column(frame: Frame, options: Dict) -> Optional[str]:
    split = options.get("data_split", "random")
    if split in ("random", "seq"):
        return None
    if split not in frame:
        raise inputs.InputError(
            f"data_split names column '{split}', which the SELECT does not return; use "
            f"'random', 'seq' or a boolean column (true = held out)."
        )
    if frame[split].type.kind != "boolean":
        raise inputs.InputError(
            f"data_split column '{split}' is {frame[split].type.name}, not boolean."
        )
    return split


def _held_out(
    frame: Frame, options: Dict, roles: inputs.Roles, split: Optional[str]
) -> np.ndarray:
    if split:
        return frame[split].values & ~frame[split].null_mask
    order = None
    if options.get("data_split") == "seq" and roles.key:
        order = np.lexsort([frame[k].values for k in reversed(roles.key)])
        order = np.argsort(order)  # each row's rank in key order
    return supervised.held_out_mask(
        frame.n_rows, params.from_options(params.Split, options), order
    )


def _metrics(model, X, target, held) -> Tuple[Dict, Dict]:
    """The metrics on each side, and the card's evaluation of the held-out rows (else all rows)."""
    out = {}
    output = model.output(X)
    for prefix, rows in (("train", ~held), ("eval", held)):
        if target is None:  # autoencoder: reconstruction error
            if rows.any():
                out[f"{prefix}_mse"] = float(((output[rows] - X[rows]) ** 2).mean())
            continue
        for name, value in supervised.metrics(target.task, target.y[rows], output[rows]).items():
            out[f"{prefix}_{name}"] = value
    if target is None:
        return out, {}
    rows = held if held.any() else ~held
    return out, supervised.evaluation(target.task, target.y[rows], output[rows])


def _target(frame: Frame, options: Dict):
    if options["model_type"] == "autoencoder":
        return None
    label = frame[options["label"]]
    classification = options["model_type"] in ("logistic_regression", "dnn_classifier") or (
        options["model_type"] == "factorization_machine" and label.type.kind in ("text", "boolean")
    )
    target = supervised.Target.of(label.values, label.nulls, classification, options["label"])
    _check_n_classes(target.classes, options)
    if options["model_type"] == "factorization_machine" and target.task == "multiclass":
        raise supervised.TargetError(
            f'label column "{options["label"]}" has {len(target.classes)} classes; '
            f"factorization_machine does regression and binary classification."
        )
    return target


def _network(options: Dict, encoder: FeatureEncoder) -> params.Network:
    """The layers, with SQLFlow's EMBEDDING columns located among the encoded inputs."""
    from dbt.adapters.sqlflow.statements.columns import embedding_blocks

    blocks = embedding_blocks(options.get("feature_columns") or [])
    if not blocks:
        return params.from_options(params.Network, options)
    if options["model_type"] not in ("dnn_classifier", "dnn_regressor"):
        raise inputs.InputError(
            f"EMBEDDING columns feed a DNN's first layer; {options['model_type']} has none. Use "
            f"the CATEGORY_ID(...) inside them."
        )
    columns = dict(feature_groups(encoder.to_dict()))
    embeddings = [
        (sorted(j for name in names for j in columns[name]), dim) for names, dim in blocks
    ]
    return params.from_options(params.Network, options, embeddings=embeddings)


def _check_n_classes(classes, options: Dict) -> None:
    """n_classes (SQLFlow's model.n_classes) states what the label holds; a mismatch is an error."""
    expected = options.get("n_classes")
    if expected and classes is not None and len(classes) != expected:
        raise supervised.TargetError(
            f'n_classes={expected}, but label column "{options["label"]}" has {len(classes)} '
            f"classes ({', '.join(map(str, classes[:10]))}); fix n_classes or the SELECT."
        )


def _feature_weights(model, encoder: FeatureEncoder) -> List[Dict]:
    """The per-feature weights a card charts: a linear or logistic model's in original units (per
    class), a factorization machine's linear terms per unit of the raw column; none for networks."""
    names = encoder.feature_names
    if isinstance(model, supervised.LinearModel):  # the weights table's own numbers
        return [
            {"feature": f, "class": None if c is None else supervised.class_name(c), "weight": w}
            for _, _, f, c, w in weights.feature_weights(model, encoder)
        ]
    linear = [
        a for layer, name, a, per_feature in model.weights if layer == "linear" and per_feature
    ]
    if not linear:
        return []
    _, scale = encoder.affine()
    # a regression FM learns standardized targets: y = shift + spread * output
    terms = np.asarray(linear[0], np.float64).reshape(len(names), -1)[:, 0] * model.spread / scale
    return [{"feature": n, "class": None, "weight": float(w)} for n, w in zip(names, terms)]


def _with_split_excluded(options: Dict, split: Optional[str]) -> Dict:
    if split and split not in (options.get("exclude") or []):
        return {**options, "exclude": list(options.get("exclude") or []) + [split]}
    return dict(options)


def _fit_in_memory(ctx: JobContext, frame: Frame) -> Outcome:
    if frame.n_rows == 0 and ctx.empty:  # dbt run --empty: the weights table's shape, no training
        write_frame(ctx.conn, ctx.targets.main, weights.empty_weights_frame())
        return Outcome(0, 0, "TRAIN 0 rows (--empty: not trained)")
    if frame.n_rows == 0:
        raise inputs.InputError("the SELECT returned no rows; there is nothing to train on.")
    split = _split_column(frame, ctx.options)
    options = _with_split_excluded(ctx.options, split)
    roles = inputs.roles(frame, options)
    fingerprint = inputs.Fingerprint()
    fingerprint.update(frame)
    kept = steps.unchanged(ctx, fingerprint.hexdigest(), "TRAIN", frame.n_rows)
    if kept:
        return kept
    inputs.check_finite(frame, roles.features)
    target = _target(frame, options)
    held = _held_out(frame, options, roles, split)
    encoder = inputs.new_encoder(options)
    encoder.fit(list(inputs.raw_columns(frame.take(~held), roles.features).values()))
    inputs.report_dropped(encoder)
    X = encoder.transform(inputs.raw_columns(frame, roles.features))
    model = supervised.train(
        X,
        target,
        held,
        _network(options, encoder),
        params.from_options(params.Fitting, options),
        options.get("class_weight"),
    )
    interrupt.check()
    metrics, evaluated = _metrics(model, X, target, held)
    log.info(
        f"trained {options['model_type']} on {int((~held).sum())} rows ({int(held.sum())} held out): "
        + ", ".join(f"{k} {v:.4g}" for k, v in metrics.items() if isinstance(v, float))
    )
    kinds = {n: frame[n].type.kind for n in roles.features}
    return _register_and_write(
        ctx,
        options,
        model,
        encoder,
        kinds,
        frame,
        metrics,
        frame.n_rows,
        fingerprint,
        int((~held).sum()),
        int(held.sum()),
        _live_evaluator(frame, held, target, options),
        evaluated,
    )


def _live_evaluator(frame: Frame, held: np.ndarray, target, options: Dict):
    """For promote_if's '<= live': the live version's metrics on this run's held-out rows, so the
    candidate and the live model are judged on the same split. None where the live version cannot
    score them (another model type, other classes, a feature the SELECT no longer returns)."""
    if target is None or not held.any():
        return None

    def evaluate(live: registry.ModelVersion) -> Optional[Dict]:
        from dbt.adapters.sqlflow.jobs import predict

        names = [f["name"] for f in live.features["features"]]
        same_classes = registry.dumps(live.parameters.get("classes")) == registry.dumps(
            target.classes
        )
        if live.model_type != options["model_type"] or not same_classes:
            return None
        if any(n not in frame for n in names):
            return None
        X = FeatureEncoder.from_dict(live.features).transform(
            inputs.raw_columns(frame.take(held), names)
        )
        model = predict.trained_model(live)
        scored = supervised.metrics(target.task, target.y[held], model.output(X))
        return {f"eval_{k}": v for k, v in scored.items()}

    return evaluate


class TrainJob:
    """ml_train of the TensorFlow model types; over memory_budget_mb the input is read in batches."""

    def read(self, ctx: JobContext):
        if inputs.should_stream(ctx.conn, ctx.sql, ctx.options):
            return _Stream(ctx.conn, ctx.sql, ctx.options)
        frame = read_frame(ctx.conn, ctx.sql)
        log.info(f"read {frame.n_rows} rows x {len(frame.columns)} columns")
        return frame

    def fit_and_write(self, ctx: JobContext, state) -> Outcome:
        if isinstance(state, _Stream):
            return _fit_streamed(ctx, state)
        return _fit_in_memory(ctx, state)

    def close(self, state) -> None:
        if isinstance(state, _Stream):
            steps.close_reader(state.reader)


def _register_and_write(
    ctx: JobContext,
    options: Dict,
    model,
    encoder,
    kinds,
    sample: Frame,
    metrics,
    n_rows,
    fingerprint,
    train_rows,
    held_rows,
    live_metrics=None,
    evaluation: Optional[Dict] = None,
    extra_info: Optional[Dict] = None,
) -> Outcome:
    """Register the version (in the same transaction as the swap) and write the weights table."""
    linear = isinstance(model, supervised.LinearModel)
    parameters = {
        "task": model.task,
        "classes": model.classes,
        "label_type": sample[options["label"]].type.name if options.get("label") else None,
    }
    parameters.update(
        {"kernel": model.kernel, "bias": model.bias}
        if linear
        else {"shift": model.shift, "spread": model.spread}
    )
    info = {
        "loss": model.history.loss,
        "val_loss": model.history.val_loss,
        "epochs": model.history.epochs_run,
        "epoch_seconds": model.history.epoch_seconds,
        "train_rows": train_rows,
        "held_out_rows": held_rows,
        "history": history.epochs(
            model.history.loss,
            model.history.val_loss,
            model.history.epoch_seconds,
            options.get("learning_rate"),
        ),
        "evaluation": evaluation or {},
        "feature_weights": _feature_weights(model, encoder),
        **(extra_info or {}),
    }
    version = steps.register(
        ctx,
        registry.ModelVersion(
            model_name=ctx.model_name,
            version=0,
            model_type=options["model_type"],
            options=options,
            features={**encoder.to_dict(), "kinds": kinds, "dropped": encoder.dropped_},
            label=options.get("label"),
            parameters=parameters,
            metrics=metrics,
            training_info=info,
            row_count=n_rows,
            input_fingerprint=fingerprint.hexdigest(),
            sql_fingerprint=steps.sql_fingerprint(ctx.sql),
            artifact=None if linear else model.artifact,
        ),
        live_metrics,
    )
    frame = (weights.linear_weights_frame if linear else weights.network_weights_frame)(
        model, encoder, version
    )
    write_frame(ctx.conn, ctx.targets.main, frame)
    return Outcome(n_rows, version, f"TRAIN {n_rows} rows, {options['model_type']}, v{version}")


# ---------------------------------------------------------------- inputs larger than the memory budget

METRIC_ROWS = (
    500_000  # metrics of a streamed fit come from the first rows of each side, up to this many
)


class _Stream:
    """The node's rows in batches, with which rows are held out and the label made numeric."""

    def __init__(self, conn, sql: str, options: Dict):
        self.options = options
        key = options.get("key") or []
        if options.get("data_split") == "seq":  # held out: the last rows in key order
            if not key:
                raise inputs.InputError(
                    "data_split='seq' needs config(key=...) to order the rows by."
                )
            sql = f"select * from (\n{sql}\n) as __sqlflow_q order by {', '.join(quote(k) for k in key)}"
        self.reader = BatchReader(conn, sql, options["sample_size"] or 50_000)
        self.n_rows = self.reader.n_rows
        self.split_column: Optional[str] = None
        n_held = int(round(self.n_rows * (options.get("validation_split") or 0.0)))
        self.first_held_row = self.n_rows - n_held

    def frames(self):
        """(frame, held-out mask) per batch, the same every pass."""
        offset, seed = 0, self.options.get("seed", 0)
        split = self.split_column
        for index, frame in enumerate(self.reader):
            if split:
                held = frame[split].values & ~frame[split].null_mask
            elif self.options.get("data_split") == "seq":
                held = np.arange(offset, offset + frame.n_rows) >= self.first_held_row
            else:
                held = np.random.default_rng([seed, index]).random(frame.n_rows) < (
                    self.options.get("validation_split") or 0.0
                )
            offset += frame.n_rows
            yield frame, held


def quote(name: str) -> str:
    from dbt.adapters.sqlflow.data.pgtypes import quote_ident

    return quote_ident(name)


def _stream_spec(stream: _Stream, roles, encoder: FeatureEncoder, fingerprint, options: Dict):
    """One pass: fingerprint, encoder statistics and label statistics of the training rows, step counts."""
    label, task = options.get("label"), None
    states: Dict = {}
    total = total_sq = 0.0
    n_train = 0
    steps = {"train": 0, "held": 0}
    size = options["batch_size"]

    def training_columns():
        nonlocal total, total_sq, n_train
        for frame, held in stream.frames():
            fingerprint.update(frame)
            inputs.check_finite(frame, roles.features)
            steps["train"] += -(-int((~held).sum()) // size)
            steps["held"] += -(-int(held.sum()) // size)
            part = frame.take(~held)
            if label:
                y = part[label]
                if y.nulls is not None:
                    raise supervised.TargetError(
                        f'label column "{label}" has NULL values; filter them out '
                        f"in the SELECT (where {label} is not null)."
                    )
                if classification:
                    for value, count in zip(*np.unique(y.values, return_counts=True)):
                        states[value] = states.get(value, 0) + int(count)
                else:
                    total, total_sq = (
                        total + float(y.values.sum()),
                        total_sq + float((y.values.astype(float) ** 2).sum()),
                    )
            n_train += part.n_rows
            yield inputs.raw_columns(part, roles.features)

    first = stream.reader.layout
    label_kind = None
    if label:
        label_kind = next(c for c in first.columns if c.name == label).plan.type.kind
    classification = options["model_type"] in ("logistic_regression", "dnn_classifier") or (
        options["model_type"] == "factorization_machine" and label_kind in ("text", "boolean")
    )
    encoder.fit_batches(training_columns())
    classes, counts, shift, spread = None, None, 0.0, 1.0
    if not label:
        task = "autoencoder"
    elif classification:
        classes = sorted(states)
        counts = np.array([states[c] for c in classes])
        task = "binary" if len(classes) == 2 else "multiclass"
        classes = [c.item() if isinstance(c, np.generic) else c for c in classes]
    else:
        task = "regression"
        shift = total / n_train
        spread = float(np.sqrt(max(total_sq / n_train - shift**2, 0.0))) or 1.0
    return supervised.StreamSpec(
        task,
        classes,
        shift,
        spread,
        counts,
        steps["train"],
        steps["held"],
        n_train,
        stream.n_rows - n_train,
    )


def _stream_metrics(model, stream: _Stream, encode, numeric_label) -> Tuple[Dict, Dict]:
    kept: Dict[bool, tuple] = {False: ([], []), True: ([], [])}
    for frame, held in stream.frames():
        for side in (False, True):
            rows = held if side else ~held
            if rows.any() and sum(len(x) for x in kept[side][0]) < METRIC_ROWS:
                X = encode(frame.take(rows))
                kept[side][0].append(X)
                kept[side][1].append(numeric_label(frame.take(rows), X))
    out: Dict = {}
    evaluated: Dict = {}
    for side, prefix in ((False, "train"), (True, "eval")):
        if not kept[side][0]:
            continue
        X, y = np.vstack(kept[side][0]), np.concatenate(kept[side][1])
        output = model.output(X)
        if model.task == "autoencoder":
            out[f"{prefix}_mse"] = float(((output - X) ** 2).mean())
            continue
        for name, value in supervised.metrics(model.task, y, output).items():
            out[f"{prefix}_{name}"] = value
        evaluated = supervised.evaluation(model.task, y, output)  # held-out side when there is one
    return out, evaluated


def _fit_streamed(ctx: JobContext, stream: "_Stream") -> Outcome:
    """For inputs over the memory budget: the SELECT ran once into a temporary table (the read phase)
    and every pass (statistics, each epoch, metrics) reads it back a batch at a time."""
    options = dict(ctx.options)
    if stream.n_rows == 0:
        raise inputs.InputError("the SELECT returned no rows; there is nothing to train on.")
    first = next(iter(stream.reader))
    stream.split_column = _split_column(first, options)
    options = _with_split_excluded(options, stream.split_column)
    stream.options = options
    roles = inputs.roles(first, options)
    encoder = inputs.new_encoder(options)
    fingerprint = inputs.Fingerprint()
    spec = _stream_spec(stream, roles, encoder, fingerprint, options)
    kept = steps.unchanged(ctx, fingerprint.hexdigest(), "TRAIN", stream.n_rows)
    if kept:
        return kept
    inputs.report_dropped(encoder)
    log.info(
        f"streaming {stream.n_rows} rows in batches: {spec.train_steps} training steps per epoch"
    )
    encode = lambda frame: encoder.transform(inputs.raw_columns(frame, roles.features))  # noqa: E731
    label = options.get("label")

    def numeric_label(frame, X):
        if spec.task == "autoencoder":
            return X
        values = frame[label].values
        if spec.task == "regression":
            return values.astype(np.float64)
        return np.searchsorted(np.array(spec.classes, dtype=values.dtype), values)

    def batches(held_side: bool):
        for frame, held in stream.frames():
            rows = held if held_side else ~held
            if rows.any():
                part = frame.take(rows)
                X = encode(part)
                y = numeric_label(part, X)
                if spec.task == "regression":
                    y = (y - spec.shift) / spec.spread
                yield X, y.astype(np.int64 if spec.task == "multiclass" else np.float32)

    model = supervised.train_streaming(
        batches,
        len(encoder.feature_names),
        spec,
        _network(options, encoder),
        params.from_options(params.Fitting, options),
        options.get("class_weight"),
    )
    _check_n_classes(model.classes, options)
    metrics, evaluated = _stream_metrics(model, stream, encode, numeric_label)
    kinds = {n: first[n].type.kind for n in roles.features}
    return _register_and_write(
        ctx,
        options,
        model,
        encoder,
        kinds,
        first,
        metrics,
        stream.n_rows,
        fingerprint,
        spec.train_rows,
        spec.held_rows,
        evaluation=evaluated,
    )
