"""The `ml_predict` node: score the SELECT with a registered model version and write the predictions."""
import logging
from typing import Dict

import numpy as np

from dbt.adapters.sqlflow import registry
from dbt.adapters.sqlflow.data import Column, Frame, read_frame, write_frame
from dbt.adapters.sqlflow.data.pgtypes import WIRE_TYPES
from dbt.adapters.sqlflow.jobs import cluster, inputs
from dbt.adapters.sqlflow.ml.preprocess import FeatureEncoder

log = logging.getLogger("dbt_sqlflow.jobs")

CLUSTER_TYPES = ("kmeans", "em")


def run(conn, sql: str, options: Dict, target: str, registry_table: str) -> cluster.Outcome:
    version = options.get("version")
    trained = registry.load(conn, registry_table, options["model"], None if version in (None, "latest") else version)
    if trained.model_type not in CLUSTER_TYPES:
        raise inputs.InputError(f"model '{trained.model_name}' is a {trained.model_type} model, which "
                                f"ml_predict cannot score yet.")
    frame = read_frame(conn, sql)
    conn.commit()  # release the input's locks while scoring
    encoder = FeatureEncoder.from_dict(trained.features)
    features = [f["name"] for f in encoder.features_]
    absent = [n for n in features if n not in frame]
    if absent:
        raise inputs.InputError(f"model '{trained.model_name}' v{trained.version} was trained on "
                                f"{', '.join(repr(a) for a in absent)}, which the SELECT does not return; "
                                f"its columns are: {', '.join(frame.names)}.")
    X = encoder.transform(inputs.raw_columns(frame, features))
    model = cluster.model_from(trained)
    scoring = {**trained.options, "output_probabilities": options.get("output_probabilities", False)}
    if options.get("pass_through", True):
        kept = list(frame.columns)
    else:
        key = trained.options.get("key") or []
        kept = [frame[n] for n in key if n in frame]
    columns = kept + cluster.assignment_columns(model, X, scoring)
    columns.append(Column.of("model_version", np.full(frame.n_rows, trained.version, np.int32),
                             type=WIRE_TYPES["integer"]))
    write_frame(conn, target, Frame(columns))
    log.info(f"scored {frame.n_rows} rows with {trained.model_name} v{trained.version}")
    return cluster.Outcome(frame.n_rows, model.k, trained.version,
                           f"PREDICT {frame.n_rows} rows, {trained.model_name} v{trained.version}")
