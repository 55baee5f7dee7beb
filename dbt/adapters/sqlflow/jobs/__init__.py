"""What one ML node does, end to end, on a psycopg2 connection: SELECT -> arrays -> estimator -> tables.

The jobs know nothing of dbt either; the adapter hands them a `JobContext` and turns their errors into
dbt errors. Every job has two phases, and the adapter commits between them so that no lock is held
while a model trains: `read(ctx)` runs the SELECT (or stages it for batched reads) and returns a
state; `fit_and_write(ctx, state)` fits and writes the intermediate tables and the registry row, in
the transaction the materialization then swaps and commits; `close(state)` always runs last.
"""

import threading
from typing import Any, Callable, Dict, Optional, Protocol

from dbt.adapters.sqlflow.jobs.context import JobContext, Outcome


class Job(Protocol):
    def read(self, ctx: JobContext) -> Any: ...

    def fit_and_write(self, ctx: JobContext, state: Any) -> Outcome: ...

    def close(self, state: Any) -> None: ...


def family(materialization: str, model_type: Optional[str]) -> str:
    """The row of `JOBS` a node runs."""
    from dbt.adapters.sqlflow.options import KERAS_TYPES

    scoring = {"ml_predict": "predict", "ml_explain": "explain", "ml_evaluate": "evaluate"}
    if materialization in scoring or materialization == "table":
        return scoring.get(materialization, "table")
    if model_type == "sql":
        return "sql"
    return "network" if model_type in KERAS_TYPES else "cluster"


_imports = threading.Lock()


def _import_scikit_learn() -> None:
    """scikit-learn's modules import one another: two threads importing different ones for the
    first time can deadlock on the module locks (Python raises _DeadlockError), so the first ML node
    imports the ones every job uses while the others wait."""
    with _imports:
        import sklearn.cluster  # noqa: F401
        import sklearn.metrics  # noqa: F401
        import sklearn.mixture  # noqa: F401
        import sklearn.preprocessing  # noqa: F401


def for_node(materialization: str, model_type: Optional[str], engine=None) -> Job:
    # imported on use: the jobs pull in numpy and, when they run, scikit-learn or TensorFlow
    from dbt.adapters.sqlflow.jobs import cluster, evaluate, explain, predict, sql4ml, table, train

    if materialization != "table":
        _import_scikit_learn()

    if engine is not None and engine.name == "dask" and materialization == "ml_predict":
        from dbt.adapters.sqlflow.jobs.dask_predict import DaskPredictJob

        return DaskPredictJob(engine)
    if engine is not None and engine.name == "dask":
        from dbt.adapters.sqlflow.jobs.dask_cluster import DaskClusterJob

        return DaskClusterJob(engine)
    if engine is not None and engine.name == "tf_multiworker":
        from dbt.adapters.sqlflow.jobs.multiworker import MultiWorkerTrainJob

        return MultiWorkerTrainJob(engine)

    jobs: Dict[str, Callable[[], Job]] = {
        "predict": predict.PredictJob,
        "explain": explain.ExplainJob,
        "evaluate": evaluate.EvaluateJob,
        "table": table.TableJob,
        "network": train.TrainJob,
        "cluster": cluster.ClusterJob,
        "sql": sql4ml.Sql4mlJob,
    }
    return jobs[family(materialization, model_type)]()


def prepared(ctx: JobContext) -> JobContext:
    """A training node's context with SQLFlow's feature columns and validation_select applied."""
    import dataclasses

    from dbt.adapters.sqlflow.jobs import prepare

    options = ctx.options
    if ctx.materialization not in ("cluster", "ml_train") or not (
        options.get("feature_columns") or options.get("validation_select")
    ):
        return ctx
    sql, options = prepare.training_sql(ctx.conn, ctx.sql, options)
    return dataclasses.replace(ctx, sql=sql, options=options)
