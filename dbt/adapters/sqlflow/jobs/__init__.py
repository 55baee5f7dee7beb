"""What one ML node does, end to end, on a psycopg2 connection: SELECT -> arrays -> estimator -> tables.

The jobs know nothing of dbt either; the adapter hands them a `JobContext` and turns their errors into
dbt errors. Every job has two phases, and the adapter commits between them so that no lock is held
while a model trains: `read(ctx)` runs the SELECT (or stages it for batched reads) and returns a
state; `fit_and_write(ctx, state)` fits and writes the intermediate tables and the registry row, in
the transaction the materialization then swaps and commits; `close(state)` always runs last.
"""

from typing import Any, Callable, Dict, Protocol

from dbt.adapters.sqlflow.jobs.context import JobContext, Outcome


class Job(Protocol):
    def read(self, ctx: JobContext) -> Any: ...

    def fit_and_write(self, ctx: JobContext, state: Any) -> Outcome: ...

    def close(self, state: Any) -> None: ...


def family(materialization: str, model_type: str) -> str:
    """The row of `JOBS` a node runs."""
    from dbt.adapters.sqlflow.options import KERAS_TYPES

    if materialization == "ml_predict":
        return "predict"
    if model_type == "sql":
        return "sql"
    return "network" if model_type in KERAS_TYPES else "cluster"


def for_node(materialization: str, model_type: str) -> Job:
    # imported on use: the jobs pull in numpy and, when they run, scikit-learn or TensorFlow
    from dbt.adapters.sqlflow.jobs import cluster, predict, sql4ml, train

    jobs: Dict[str, Callable[[], Job]] = {
        "predict": predict.PredictJob,
        "network": train.TrainJob,
        "cluster": cluster.ClusterJob,
        "sql": sql4ml.Sql4mlJob,
    }
    return jobs[family(materialization, model_type)]()
