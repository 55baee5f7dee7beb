"""One worker of engine: tf_multiworker, started by the node (`python -m ... <phase>`), with its job
as JSON on stdin. It reads its own shard from PostgreSQL and reports on stdout, one line each:
`READY` (the strategy is up), `EPOCH {...}` (the chief's progress), `RESULT {...}`, `ERROR <text>`
(a problem the user can fix). Phases: `stats` (no TensorFlow: the shard's encoder and label
statistics) and `train` (the strategy, the loop, and the chief's trained model)."""

import base64
import json
import os
import sys
from typing import Dict, List

import numpy as np


def _say(kind: str, payload=None) -> None:
    line = kind if payload is None else f"{kind} {json.dumps(payload)}"
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def held_out(frame, options: Dict, shard_index: int, batch: int) -> np.ndarray:
    """Rows held out: a boolean split column, else a seeded fraction per (shard, batch)."""
    split = options.get("data_split", "random")
    if split not in ("random", "seq"):
        return frame[split].values & ~frame[split].null_mask
    fraction = options.get("validation_split") or 0.0
    rng = np.random.default_rng([options.get("seed", 0), shard_index, batch])
    return rng.random(frame.n_rows) < fraction


def _frames(job: Dict):
    from dbt.adapters.sqlflow.data.shards import Shard

    shard = Shard.from_json(job["shard"])
    for batch, frame in enumerate(shard.frames()):
        yield frame, held_out(frame, job["options"], shard.index, batch)


def statistics(job: Dict) -> Dict:
    """The shard's rows, digest, encoder statistics of its training rows, and label statistics."""
    from dbt.adapters.sqlflow.jobs import inputs
    from dbt.adapters.sqlflow.ml.preprocess import column_statistics

    features, label = job["features"], job["label"]
    fingerprint = inputs.Fingerprint()
    counts: Dict = {"rows": 0, "train": 0, "held": 0, "sum": 0.0, "sum_sq": 0.0, "classes": {}}

    def training_columns():
        for frame, held in _frames(job):
            fingerprint.update(frame)
            inputs.check_finite(frame, features)
            counts["rows"] += frame.n_rows
            counts["held"] += int(held.sum())
            part = frame.take(~held)
            counts["train"] += part.n_rows
            if label:
                _label_statistics(part[label], label, job["classification"], counts)
            yield inputs.raw_columns(part, features)

    stats = column_statistics(training_columns(), seed=job["shard"]["index"])
    counts["classes"] = [[value, n] for value, n in counts["classes"].items()]
    return {
        **counts,
        "digest": fingerprint.hexdigest(),
        "stats": {name: s.to_dict() for name, s in stats.items()},
    }


def _label_statistics(column, label: str, classification: bool, counts: Dict) -> None:
    from dbt.adapters.sqlflow.errors import TargetError

    if column.nulls is not None and column.nulls.any():
        raise TargetError(
            f'label column "{label}" has NULL values; filter them out in the SELECT '
            f"(where {label} is not null)."
        )
    if classification:  # by the value itself: classes sort as the local engine sorts them
        for value, n in zip(*np.unique(column.values, return_counts=True)):
            key = value.item() if isinstance(value, np.generic) else value
            counts["classes"][key] = counts["classes"].get(key, 0) + int(n)
    else:
        values = column.values.astype(np.float64)
        counts["sum"] += float(values.sum())
        counts["sum_sq"] += float((values**2).sum())


def _arrays(job: Dict):
    """The shard encoded: X, the numeric target, the held-out mask and per-row class weights."""
    from dbt.adapters.sqlflow.jobs import inputs
    from dbt.adapters.sqlflow.ml.preprocess import FeatureEncoder
    from dbt.adapters.sqlflow.ml.supervised import class_name

    encoder = FeatureEncoder.from_dict(job["encoder"])
    spec = job["spec"]
    Xs: List[np.ndarray] = []
    ys: List[np.ndarray] = []
    helds: List[np.ndarray] = []
    for frame, held in _frames(job):
        X = encoder.transform(inputs.raw_columns(frame, job["features"]))
        Xs.append(X.astype(np.float32))
        helds.append(held)
        if spec["task"] == "autoencoder":
            ys.append(X.astype(np.float32))
        elif spec["task"] == "regression":
            values = frame[job["label"]].values.astype(np.float64)
            ys.append(((values - spec["shift"]) / spec["spread"]).astype(np.float32)[:, None])
        else:
            index = {c: i for i, c in enumerate(spec["class_names"])}
            names = [class_name(v) for v in frame[job["label"]].values.tolist()]
            y = np.array([index.get(n, 0) for n in names], np.int64)
            ys.append(y if spec["task"] == "multiclass" else y.astype(np.float32)[:, None])
    X, y, held = np.vstack(Xs), np.concatenate(ys), np.concatenate(helds)
    weights = None
    if spec.get("class_weights") is not None and spec["task"] in ("binary", "multiclass"):
        weights = np.asarray(spec["class_weights"], np.float32)[y.ravel().astype(int)]
    return X, y, held, weights


def _progress(worker: int, epoch: int, logs: Dict) -> None:
    if worker == 0:  # the chief speaks for the cluster: every worker has the same losses
        _say("EPOCH", {"epoch": epoch, **logs})


def _sample(X: np.ndarray, y: np.ndarray, rows: int):
    return X[:rows], y[:rows]


def train(job: Dict) -> Dict:
    """Runs under MultiWorkerMirroredStrategy; TF_CONFIG is set before TensorFlow is imported."""
    os.environ["TF_CONFIG"] = job["tf_config"]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf

    strategy = tf.distribute.MultiWorkerMirroredStrategy()  # first: before any other TF op
    _say("READY")
    from dbt.adapters.sqlflow.engines import process_usage
    from dbt.adapters.sqlflow.jobs.train import _network
    from dbt.adapters.sqlflow.ml import keras_models, multiworker, params, supervised
    from dbt.adapters.sqlflow.ml.preprocess import FeatureEncoder

    options, spec, worker = job["options"], job["spec"], job["worker"]
    X, y, held, weights = _arrays(job)
    network = _network(options, FeatureEncoder.from_dict(job["encoder"]))
    fitting = params.from_options(params.Fitting, options)
    task = spec["task"]
    n_out = 1 if task in ("regression", "binary") else len(spec["class_names"] or [])
    activation = {"regression": None, "binary": "sigmoid", "multiclass": "softmax"}.get(task)
    loss = {"binary": "binary_crossentropy", "multiclass": "sparse_categorical_crossentropy"}.get(
        task, "mse"
    )
    with keras_models.tensorflow_session(fitting.seed) as keras:
        build = lambda: supervised._build(keras, network, X.shape[1], n_out, activation)  # noqa: E731
        validation = (X[held], y[held]) if spec["held_rows"] else None
        model, history = multiworker.train(
            keras,
            tf,
            strategy,
            build,
            X[~held],
            y[~held],
            None if weights is None else weights[~held],
            validation,
            loss,
            fitting,
            spec["train_rows"],
            worker,
            lambda epoch, logs: _progress(worker, epoch, logs),
        )
        plain = build()  # the weights on a model outside the strategy, to save and score
        plain.set_weights(model.get_weights())
        artifact = keras_models.to_bytes(plain)
        finished = supervised._finish(
            plain,
            options["model_type"],
            task,
            spec["classes"],
            history,
            spec["shift"],
            spec["spread"],
        )
    rows = job["metric_rows"]
    out: Dict = {"history": history.__dict__, "rows": int(len(X)), **process_usage()}
    for side, mask in (("train", ~held), ("held", held)):
        Xs, ys = _sample(X[mask], y[mask], rows)
        out[side] = {"y": ys.tolist(), "output": np.asarray(finished.output(Xs)).tolist()}
    if worker == 0:
        out["artifact"] = base64.b64encode(artifact).decode()
    return out


def main(argv: List[str]) -> int:
    phase = argv[0]
    job = json.loads(sys.stdin.read())
    from dbt.adapters.sqlflow.errors import SqlflowError

    try:
        result = statistics(job) if phase == "stats" else train(job)
    except SqlflowError as exc:
        _say("ERROR", str(exc))
        return 2
    _say("RESULT", result)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
