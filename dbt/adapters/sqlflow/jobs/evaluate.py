"""SQLFlow's `TO EVALUATE`: a trained version's metrics on the node's rows, as a one-row table
(model_version, rows, then one column per metric, in the order asked for)."""

from typing import Dict, List

import numpy as np

from dbt.adapters.sqlflow import registry
from dbt.adapters.sqlflow.data import Column, Frame, read_frame, write_frame
from dbt.adapters.sqlflow.data.pgtypes import WIRE_TYPES
from dbt.adapters.sqlflow.jobs import inputs, predict, prepare
from dbt.adapters.sqlflow.jobs.context import JobContext, Outcome
from dbt.adapters.sqlflow.ml import supervised
from dbt.adapters.sqlflow.ml.preprocess import FeatureEncoder
from dbt.adapters.sqlflow.options import SUPERVISED


def _target(trained, frame: Frame, label: str) -> np.ndarray:
    column = frame[label]
    if column.null_mask.any():
        raise inputs.InputError(
            f'label column "{label}" has {int(column.null_mask.sum())} NULL values; filter them '
            f"out in the SELECT."
        )
    classes = trained.parameters.get("classes")
    if classes is None:
        return column.values.astype(np.float64)
    index = {supervised.class_name(c): i for i, c in enumerate(classes)}
    names = [supervised.class_name(v) for v in column.values]
    unknown = sorted({n for n in names if n not in index})
    if unknown:
        raise inputs.InputError(
            f'label column "{label}" holds {", ".join(unknown[:5])}, which {trained.model_name} '
            f"v{trained.version} never saw (its classes: {', '.join(map(str, classes))})."
        )
    return np.array([index[n] for n in names], np.int64)


def _chosen(metrics: Dict[str, float], asked: List[str], model: str) -> List[tuple]:
    if not asked:
        return list(metrics.items())
    missing = [m for m in asked if m not in metrics]
    if missing and len(metrics):
        raise inputs.InputError(
            f"metric(s) {', '.join(missing)} do not apply to {model} on these rows (computed: "
            f"{', '.join(metrics)}); AUC needs every class present in the rows."
        )
    return [(m, metrics.get(m)) for m in asked]


class EvaluateJob:
    def read(self, ctx: JobContext):
        try:
            trained = predict.load_trained(ctx)
        except registry.RegistryError:
            if ctx.empty:  # dbt run --empty before the model was trained
                return None, None
            raise
        if trained.model_type not in SUPERVISED:
            raise inputs.InputError(
                f"TO EVALUATE scores a model that predicts a label; {trained.model_name} is a "
                f"{trained.model_type} model. Use its metrics in ml_versions(ref(...)) instead."
            )
        sql = prepare.scoring_sql(ctx.conn, ctx.sql, trained.options)
        return trained, read_frame(ctx.conn, sql)

    def fit_and_write(self, ctx: JobContext, state) -> Outcome:
        trained, frame = state
        if trained is None:
            with ctx.conn.cursor() as cur:
                cur.execute(
                    f"create table {ctx.targets.main} (model_version integer, rows bigint)"
                )
            return Outcome(0, 0, "EVALUATE 0 rows (--empty: the model is not trained yet)")
        label = ctx.options.get("label") or trained.label
        if label not in frame:
            raise inputs.InputError(
                f"TO EVALUATE compares predictions with label column '{label}', which the SELECT "
                f"does not return; select it, or name it with LABEL."
            )
        features = [f["name"] for f in trained.features["features"]]
        inputs.check_finite(frame, [f for f in features if f in frame])
        predict._check_features(trained, frame.names)
        X = FeatureEncoder.from_dict(trained.features).transform(
            inputs.raw_columns(frame, features)
        )
        model = predict.trained_model(trained)
        output = model.output(X) if frame.n_rows else np.empty((0, 1))
        metrics = supervised.metrics(model.task, _target(trained, frame, label), output)
        chosen = _chosen(metrics, ctx.options.get("metrics") or [], trained.model_name)
        columns = [
            Column.of(
                "model_version", np.array([trained.version], np.int32), type=WIRE_TYPES["integer"]
            ),
            Column.of("rows", np.array([frame.n_rows], np.int64), type=WIRE_TYPES["bigint"]),
        ] + [
            Column.of(name, np.array([0.0 if v is None else v], np.float64), nulls=[v is None])
            for name, v in chosen
        ]
        write_frame(ctx.conn, ctx.targets.main, Frame(columns))
        summary = ", ".join(f"{n} {v:.4g}" for n, v in chosen if v is not None)
        return Outcome(
            frame.n_rows,
            trained.version,
            f"EVALUATE {trained.model_name} v{trained.version} on {frame.n_rows} rows: {summary}",
        )

    def close(self, state) -> None:
        pass
