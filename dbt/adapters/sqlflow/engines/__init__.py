"""Where an ML node's work runs: `local` (the dbt process), `dask` (k-means, EM and scoring as
map-reduce over shards on a Dask cluster) or `tf_multiworker` (TensorFlow models trained with
MultiWorkerMirroredStrategy on worker processes). Each engine is behind a small class, imported on
use; workers read their own shard of the input from PostgreSQL (data/shards.py)."""

import logging
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

from dbt.adapters.sqlflow.errors import OptionError

log = logging.getLogger("dbt_sqlflow.engines")

ENGINES = ("local", "dask", "tf_multiworker")
ENGINE_KEYS = ("engine", "dask_scheduler", "tf_cluster", "tf_launcher")
DASK_TYPES = ("kmeans", "em")


@dataclass(frozen=True)
class EngineChoice:
    name: str  # local | dask | tf_multiworker
    dask_scheduler: Optional[str] = None
    tf_cluster: Any = None
    tf_launcher: Optional[str] = None  # e.g. 'ssh {host}': how workers start on other machines

    @property
    def local(self) -> bool:
        return self.name == "local"


def _runs(engine: str, materialization: str, model_type: Optional[str]) -> bool:
    from dbt.adapters.sqlflow.options import KERAS_TYPES

    if engine == "local":
        return True
    if engine == "dask":  # ml_predict: any model scored in Python
        return materialization == "ml_predict" or (
            model_type in DASK_TYPES and materialization in ("cluster", "ml_train")
        )
    return model_type in KERAS_TYPES and materialization == "ml_train"


def _what_runs(engine: str) -> str:
    if engine == "dask":
        return "engine 'dask' fits kmeans and em (cluster and ml_train) and scores (ml_predict)"
    return (
        "engine 'tf_multiworker' trains the TensorFlow model types (linear_regression, "
        "logistic_regression, factorization_machine, dnn_classifier, dnn_regressor, autoencoder)"
    )


def choose(
    where: str, materialization: str, options: Dict, defaults: Optional[Dict] = None
) -> EngineChoice:
    """The node's engine: its own config, else the profile's default where that engine runs the
    node's model (a profile set to dask still trains a DNN locally), else local."""
    defaults = {k: v for k, v in (defaults or {}).items() if v is not None}
    model_type = options.get("model_type")
    own = options.get("engine")
    engine = own or defaults.get("engine") or "local"
    if engine not in ENGINES:
        raise OptionError(f"{where}: engine={engine!r} is not one of {', '.join(ENGINES)}.")
    if not _runs(engine, materialization, model_type):
        if own:
            raise OptionError(
                f"{where}: {_what_runs(engine)}, not {model_type or materialization}; "
                f"remove engine (or set engine='local')."
            )
        engine = "local"
    pick = lambda key: options.get(key) or defaults.get(key)  # noqa: E731
    choice = EngineChoice(engine, pick("dask_scheduler"), pick("tf_cluster"), pick("tf_launcher"))
    if engine == "dask" and not choice.dask_scheduler:
        raise OptionError(
            f"{where}: engine='dask' needs dask_scheduler: 'tcp://host:8786' for a running "
            f"cluster, or 'local[N]' for N worker processes on this machine."
        )
    if engine == "tf_multiworker":
        from dbt.adapters.sqlflow.engines.tf_cluster import cluster_spec

        try:
            cluster_spec(choice.tf_cluster)
        except OptionError as exc:
            raise OptionError(f"{where}: {exc}") from None
    return choice


def worker_facts(name: str, workers: List[Dict]) -> Dict:
    """The run's facts for training_info (rows, CPU seconds and peak memory of each worker), with
    one summary line at info and a line per worker in the debug log."""
    for w in workers:
        log.debug(
            f"{name} worker {w['worker']}: {w['rows']} rows, {w.get('cpu_seconds', 0):.1f} CPU s, "
            f"peak {w.get('peak_rss_mb', 0):.0f} MB"
        )
    rows = [w["rows"] for w in workers]
    log.info(
        f"engine {name}: {len(workers)} worker(s) read {min(rows)}..{max(rows)} rows each, "
        f"{sum(w.get('cpu_seconds', 0) for w in workers):.1f} CPU s in all, peak "
        f"{max(w.get('peak_rss_mb', 0) for w in workers):.0f} MB per worker"
    )
    return {"name": name, "workers": workers}


def process_usage() -> Dict[str, float]:
    """This process's CPU seconds (user + system) and peak resident memory, for the run's facts."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 2),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
    }
