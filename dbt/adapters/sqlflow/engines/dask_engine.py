"""engine: dask. A client of a running Dask cluster (`tcp://host:8786`) or of a LocalCluster of N
worker processes (`local[N]`) started for the node. Shards are pinned to workers (shard i on worker
i mod N), so a worker reads its own page ranges and keeps what it encoded between passes; a worker
that leaves mid-job fails the node, naming it."""

import logging
import os
import re
import threading
from typing import Any, Callable, Dict, List, Optional, Sequence

from dbt.adapters.sqlflow import interrupt
from dbt.adapters.sqlflow.engines import process_usage
from dbt.adapters.sqlflow.errors import EngineError

log = logging.getLogger("dbt_sqlflow.engines")

_LOCAL = re.compile(r"^local\[(\d+)\]$")
CONNECT_TIMEOUT = 10  # seconds: an unreachable scheduler fails the node this fast
# Dask's client and local cluster keep per-process event-loop state: nodes of `dbt run --threads N`
# take turns on the engine (each still spreads its own work over every worker)
_turn = threading.Lock()


def _import_distributed():
    # Dask's own INFO lines (scheduler, nanny, every worker start) would flood dbt's console; its
    # warnings and errors still show. Worker processes started for local[N] read the variable.
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "error")
    logging.getLogger("distributed").setLevel(logging.ERROR)
    try:
        import distributed
    except ImportError:
        raise EngineError(
            "engine='dask' needs dask and distributed: pip install 'dbt-sqlflow[dask]'."
        ) from None
    return distributed


class DaskEngine:
    name = "dask"

    def __init__(self, scheduler: str):
        distributed = _import_distributed()
        self.scheduler, self.cluster, self.client = scheduler, None, None
        _turn.acquire()
        self._holding = True
        local = _LOCAL.match(scheduler.strip())
        try:
            if local:
                n = max(1, int(local.group(1)))
                self.cluster = distributed.LocalCluster(
                    n_workers=n,
                    threads_per_worker=1,
                    processes=True,
                    dashboard_address=None,
                    silence_logs=logging.ERROR,
                )
                self.client = distributed.Client(self.cluster, timeout=CONNECT_TIMEOUT)
            else:
                self.client = distributed.Client(scheduler, timeout=CONNECT_TIMEOUT)
        except (OSError, TimeoutError) as exc:
            self.close()
            raise EngineError(
                f"engine 'dask': the scheduler at {scheduler} cannot be reached within "
                f"{CONNECT_TIMEOUT} s ({type(exc).__name__}); start it, or fix dask_scheduler."
            ) from None
        self.workers = sorted(self.client.scheduler_info()["workers"])
        if not self.workers:
            self.close()
            raise EngineError(
                f"engine 'dask': the scheduler at {scheduler} has no workers; start some "
                f"(dask worker {scheduler})."
            )
        self.started = self.client.run(process_usage, workers=self.workers)
        log.info(f"engine dask: {len(self.workers)} worker(s) at {self.client.scheduler.address}")

    def map(self, fn: Callable, shards: Sequence, *args: Any, what: str = "a pass") -> List:
        """fn(shard, *args) on each shard's own worker; the results in shard order."""
        import distributed

        futures = [
            self.client.submit(
                fn,
                shard,
                *args,
                workers=[self.workers[i % len(self.workers)]],
                allow_other_workers=False,
                pure=False,
                retries=0,
            )
            for i, shard in enumerate(shards)
        ]
        try:
            while True:
                try:
                    distributed.wait(futures, timeout=1.0)
                    return self.client.gather(futures)
                except TimeoutError:
                    if any(f.status == "error" for f in futures):
                        return self.client.gather(futures)  # raises the task's own error
                    self._check_workers(what)
                    interrupt.check()
        except distributed.client.FutureCancelledError:
            self._check_workers(what)
            raise
        except distributed.KilledWorker as exc:
            raise EngineError(
                f"engine 'dask': a worker died running {what} ({exc}); the node stops and its "
                f"previous tables stay. Check the workers' logs (memory limits) and run it again."
            ) from None
        finally:
            self.client.cancel([f for f in futures if not f.done()])

    def _check_workers(self, what: str) -> None:
        alive = set(self.client.scheduler_info()["workers"])
        lost = [w for w in self.workers if w not in alive]
        if lost:
            raise EngineError(
                f"engine 'dask': worker {lost[0]} left the cluster during {what}; the node stops "
                f"and its previous tables stay. Check that worker's log (memory limits, a killed "
                f"process) and run the node again."
            )

    def usage(self) -> Dict[str, Dict]:
        """CPU seconds and peak memory of each worker process, since this engine started."""
        now = self.client.run(process_usage, workers=self.workers)
        return {
            w: {
                "cpu_seconds": round(now[w]["cpu_seconds"] - self.started[w]["cpu_seconds"], 2),
                "peak_rss_mb": now[w]["peak_rss_mb"],
            }
            for w in self.workers
            if w in now and w in self.started
        }

    def run_on_workers(self, fn: Callable, *args: Any) -> None:
        try:  # only the workers still there: a run on one that left would wait for it
            alive = set(self.client.scheduler_info()["workers"])
            self.client.run(fn, *args, workers=[w for w in self.workers if w in alive])
        except Exception as exc:  # a worker that is gone has nothing to clean
            log.debug(f"engine dask: cleanup on workers failed: {exc}")

    def close(self) -> None:
        for part in ("client", "cluster"):
            obj: Optional[Any] = getattr(self, part, None)
            if obj is not None:
                try:
                    obj.close()
                except Exception as exc:
                    log.debug(f"engine dask: closing the {part}: {exc}")
        self.client = self.cluster = None
        if self._holding:
            self._holding = False
            _turn.release()
