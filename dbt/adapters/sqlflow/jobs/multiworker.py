"""ml_train of the TensorFlow model types on engine: tf_multiworker.

The input is sharded once (data/shards.py). A first round of workers (no TensorFlow) reports each
shard's encoder and label statistics, merged here exactly; then the training cluster runs the
synchronous loop (ml/multiworker.py), the chief returns the trained model, and every worker returns
its share of the rows the metrics are computed on. The version is registered and the weights table
written here, inside the node's transaction, so the swap stays atomic as on the local engine."""

import base64
import logging
from typing import Dict, List, Optional

import numpy as np

from dbt.adapters.sqlflow.data import Frame, write_frame
from dbt.adapters.sqlflow.data.shards import ShardedTable
from dbt.adapters.sqlflow.engines import worker_facts
from dbt.adapters.sqlflow.engines.tf_cluster import cluster_spec
from dbt.adapters.sqlflow.engines.tf_multiworker import MultiWorkerLauncher
from dbt.adapters.sqlflow.errors import InputError
from dbt.adapters.sqlflow.jobs import inputs, steps, train, weights
from dbt.adapters.sqlflow.jobs.context import JobContext, Outcome
from dbt.adapters.sqlflow.ml import keras_models, supervised
from dbt.adapters.sqlflow.ml.preprocess import _ColumnStats, merge_statistics
from dbt.adapters.sqlflow.options import CLASSIFIERS
from dbt.adapters.sqlflow.progress import Progress

log = logging.getLogger("dbt_sqlflow.jobs")


class MultiWorkerState:
    def __init__(self, table: ShardedTable, first: Frame):
        self.table, self.first = table, first
        self.launcher: Optional[MultiWorkerLauncher] = None


def _classification(options: Dict, first: Frame) -> bool:
    label = options.get("label")
    if not label:
        return False
    return options["model_type"] in CLASSIFIERS and (
        options["model_type"] != "factorization_machine"
        or first[label].type.kind in ("text", "boolean")
    )


def _spec(parts: List[Dict], options: Dict, classification: bool) -> Dict:
    """Task, classes, target scaling and row counts from the shards' label statistics."""
    train_rows = sum(p["train"] for p in parts)
    held_rows = sum(p["held"] for p in parts)
    spec: Dict = {"train_rows": train_rows, "held_rows": held_rows, "shift": 0.0, "spread": 1.0}
    spec.update({"classes": None, "class_names": None, "class_weights": None})
    if not options.get("label"):
        spec["task"] = "autoencoder"
    elif classification:
        counts: Dict = {}
        for p in parts:
            for value, n in p["classes"]:
                counts[value] = counts.get(value, 0) + n
        classes = sorted(counts)
        if len(classes) < 2:
            raise supervised.TargetError(
                f'label column "{options["label"]}" has a single class; a classifier needs two.'
            )
        train._check_n_classes(classes, options)
        spec["task"] = "binary" if len(classes) == 2 else "multiclass"
        if options["model_type"] == "factorization_machine" and spec["task"] == "multiclass":
            raise supervised.TargetError(
                f'label column "{options["label"]}" has {len(classes)} classes; '
                f"factorization_machine does regression and binary classification."
            )
        spec["classes"], spec["class_names"] = classes, [supervised.class_name(c) for c in classes]
        per_class = supervised.per_class_weights(
            np.array([counts[c] for c in classes]), options.get("class_weight"), classes
        )
        spec["class_weights"] = None if per_class is None else per_class.tolist()
    else:
        spec["task"] = "regression"
        shift = sum(p["sum"] for p in parts) / max(train_rows, 1)
        square = sum(p["sum_sq"] for p in parts) / max(train_rows, 1)
        spec["shift"] = shift
        spec["spread"] = float(np.sqrt(max(square - shift**2, 0.0))) or 1.0
    return spec


def _metrics(results: List[Dict], spec: Dict):
    """Metrics of each side on the workers' samples, and the card's evaluation (held-out side)."""
    out: Dict = {}
    evaluated: Dict = {}
    for side, prefix in (("train", "train"), ("held", "eval")):
        ys = [np.asarray(r[side]["y"]) for r in results if len(r[side]["y"])]
        if not ys:
            continue
        y = np.concatenate(ys)
        output = np.concatenate(
            [np.asarray(r[side]["output"]) for r in results if len(r[side]["y"])]
        )
        if spec["task"] == "autoencoder":
            out[f"{prefix}_mse"] = float(((output - y) ** 2).mean())
            continue
        if spec["task"] == "regression":
            y = y.ravel() * spec["spread"] + spec["shift"]
        else:
            y = y.ravel().astype(np.int64)
        for name, value in supervised.metrics(spec["task"], y, output).items():
            out[f"{prefix}_{name}"] = value
        evaluated = supervised.evaluation(spec["task"], y, output)
    return out, evaluated


def _model(result: Dict, options: Dict, spec: Dict):
    history = keras_models.History(**result["history"])
    artifact = base64.b64decode(result["artifact"])
    with keras_models.tensorflow_session(0) as keras:
        from dbt.adapters.sqlflow.ml import networks

        networks.register_layers(keras)
        model = keras_models.from_bytes(keras, artifact)
        task = spec["task"]
        return supervised._finish(
            model,
            options["model_type"],
            task,
            spec["classes"],
            history,
            spec["shift"],
            spec["spread"],
        )


def _engine_facts(addresses: List[str], results: List[Dict]) -> Dict:
    """Where the training ran: rows each worker held, its CPU seconds and peak memory."""
    workers = [
        {
            "worker": address,
            "rows": r["rows"],
            "cpu_seconds": r["cpu_seconds"],
            "peak_rss_mb": r["peak_rss_mb"],
        }
        for address, r in zip(addresses, results)
    ]
    return worker_facts("tf_multiworker", workers)


def _show(progress: Progress, epoch: int, detail: str) -> None:
    progress.step(epoch, detail)


class MultiWorkerTrainJob:
    def __init__(self, choice):
        self.choice = choice

    def read(self, ctx: JobContext) -> MultiWorkerState:
        table = ShardedTable(
            ctx.conn, ctx.sql, ctx.node.schema, ctx.options["sample_size"] or 50_000
        )
        first = table.empty_frame()
        log.info(f"sharded {table.n_rows} rows x {len(table.columns)} columns for tf_multiworker")
        return MultiWorkerState(table, first)

    def close(self, state: MultiWorkerState) -> None:
        if state.launcher is not None:
            state.launcher.close()
        state.table.close()

    def fit_and_write(self, ctx: JobContext, state: MultiWorkerState) -> Outcome:
        options = dict(ctx.options)
        if options.get("data_split") == "seq":
            raise InputError(
                "data_split='seq' holds out the last rows in key order, which no shard knows; on "
                "engine 'tf_multiworker' use 'random' or a boolean split column."
            )
        first = state.first
        split = train._split_column(first, options)
        options = train._with_split_excluded(options, split)
        roles = inputs.roles(first, options)
        n_rows = state.table.n_rows
        if n_rows == 0 and ctx.empty:
            write_frame(ctx.conn, ctx.targets.main, weights.empty_weights_frame())
            return Outcome(0, 0, "TRAIN 0 rows (--empty: not trained)")
        if n_rows == 0:
            raise InputError("the SELECT returned no rows; there is nothing to train on.")
        spec = cluster_spec(self.choice.tf_cluster)
        launcher = state.launcher = MultiWorkerLauncher(spec, self.choice.tf_launcher)
        shards = state.table.shards(len(spec.workers))
        classification = _classification(options, first)
        base = {"options": options, "features": roles.features, "label": options.get("label")}
        parts = launcher.run(
            "stats",
            [{**base, "shard": s.to_json(), "classification": classification} for s in shards],
        )
        stats = merge_statistics(
            [{n: _ColumnStats.from_dict(d) for n, d in p["stats"].items()} for p in parts]
        )
        encoder = inputs.new_encoder(options).fit_statistics(stats)
        fingerprint = inputs.Fingerprint()
        fingerprint._digest.update("".join(p["digest"] for p in parts).encode())
        kept = steps.unchanged(ctx, fingerprint.hexdigest(), "TRAIN", n_rows)
        if kept:
            return kept
        inputs.report_dropped(encoder)
        task = _spec(parts, options, classification)
        log.info(
            f"engine tf_multiworker: {len(spec.workers)} workers train on {task['train_rows']} rows "
            f"({task['held_rows']} held out)"
        )
        progress = Progress(log, "epoch", options["epochs"])
        results = launcher.run(
            "train",
            [
                {
                    **base,
                    "shard": s.to_json(),
                    "encoder": encoder.to_dict(),
                    "spec": task,
                    "metric_rows": train.METRIC_ROWS // len(shards),
                }
                for s in shards
            ],
            lambda line: _show(
                progress,
                line["epoch"],
                f"loss {line['loss']:.6g}"
                + (
                    f", val loss {line['val_loss']:.6g}"
                    if line.get("val_loss") is not None
                    else ""
                ),
            ),
        )
        model = _model(results[0], options, task)
        metrics, evaluated = _metrics(results, task)
        kinds = {n: first[n].type.kind for n in roles.features}
        return train._register_and_write(
            ctx,
            options,
            model,
            encoder,
            kinds,
            first,
            metrics,
            n_rows,
            fingerprint,
            task["train_rows"],
            task["held_rows"],
            evaluation=evaluated,
            extra_info={"engine": _engine_facts(spec.workers, results)},
        )
