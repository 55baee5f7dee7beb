"""After sqlflow_promote: the model's weights table is rewritten from the registry, so what users
query (`ml_weights`, their own joins on the weights) follows the live version. Rows are replaced in
place (delete + insert in the promote's transaction), so grants, indexes, comments and dependent
views stay. Only relations that the registry alone defines are rewritten: a `cluster` node's table
holds its training rows' assignments, and a sql4ml model's weights have the user's own shape."""

import logging
from typing import Optional

from dbt.adapters.sqlflow import registry
from dbt.adapters.sqlflow.data import Frame, write_frame
from dbt.adapters.sqlflow.data.pgtypes import quote_ident
from dbt.adapters.sqlflow.jobs import cluster, predict, weights
from dbt.adapters.sqlflow.ml.preprocess import FeatureEncoder

log = logging.getLogger("dbt_sqlflow.jobs")


def _frame(trained: registry.ModelVersion) -> Optional[Frame]:
    encoder = FeatureEncoder.from_dict(trained.features)
    if trained.model_type in predict.LINEAR_TYPES:
        return weights.linear_weights_frame(
            predict.trained_model(trained), encoder, trained.version
        )
    if trained.model_type in ("kmeans", "em"):
        return weights.cluster_weights_frame(cluster.model_from(trained), encoder, trained.version)
    if trained.model_type in ("sql", "dec") or trained.artifact is None:
        return None
    from dbt.adapters.sqlflow.ml import keras_models, networks

    model = predict.trained_model(trained)
    with keras_models.tensorflow_session(0) as keras:
        networks.register_layers(keras)
        model.weights = networks.layer_weights(keras_models.from_bytes(keras, trained.artifact))
    return weights.network_weights_frame(model, encoder, trained.version)


def rewrite_weights(
    conn, key: registry.ModelKey, trained: registry.ModelVersion, materialization: str
) -> bool:
    """Replace the rows of the weights table at `key` by the promoted version's; False when the
    relation is not one the registry defines (or is gone, or has other columns)."""
    frame = None if materialization != "ml_train" else _frame(trained)
    if frame is None:
        return False
    target, staged = (
        key.render(),
        f"pg_temp.{quote_ident(f'__sqlflow_promoted_{trained.version}')}",
    )
    with conn.cursor() as cur:
        cur.execute(
            "select array_agg(attname::text) from pg_attribute where attrelid = to_regclass(%s) "
            "and attnum > 0 and not attisdropped",
            (target,),
        )
        existing = cur.fetchone()[0]
    if sorted(existing or []) != sorted(frame.names):
        log.info(f"{target} is not v{trained.version}'s weights table shape: left as built")
        return False
    write_frame(conn, staged, frame)  # a temporary table, then the rows moved in one transaction
    names = ", ".join(quote_ident(c) for c in frame.names)
    with conn.cursor() as cur:
        cur.execute(f"delete from {target}")
        cur.execute(f"insert into {target} ({names}) select {names} from {staged}")
        cur.execute(f"drop table {staged}")
    return True
