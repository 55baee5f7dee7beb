"""ml_predict in Python on engine: dask. The SELECT is sharded once; each worker scores its own
shard with the version (loaded once per shard) and COPYs its rows into a committed staging table,
which the node's transaction renames to the intermediate table. Models PostgreSQL can score (linear,
logistic, k-means, EM, sql) are still scored there, in one CREATE TABLE AS: no rows move at all."""

import logging
import uuid
from typing import Dict, Optional

from dbt.adapters.sqlflow import registry
from dbt.adapters.sqlflow.data import copy_in, create_table
from dbt.adapters.sqlflow.data.pgtypes import quote_ident
from dbt.adapters.sqlflow.data.shards import (
    Shard,
    ShardedTable,
    connect,
    drop_tables,
    split_relation,
)
from dbt.adapters.sqlflow.errors import ArtifactError
from dbt.adapters.sqlflow.jobs import predict
from dbt.adapters.sqlflow.jobs.context import JobContext, Outcome

log = logging.getLogger("dbt_sqlflow.jobs")


def score_shard(
    shard: Shard, trained: registry.ModelVersion, options: Dict, staging: Optional[str]
) -> Dict:
    """On a worker: score the shard and COPY it into staging (None: return the output's columns
    from the shard's first non-empty batch, or None when the shard has no rows)."""
    score = predict._scorer(trained, options)
    conn = connect(shard.params, "dbt-sqlflow scorer") if staging else None
    written = 0
    try:
        for frame in shard.frames():
            if frame.n_rows == 0:
                continue
            scored = score(frame)
            if conn is None:
                return {"shape": scored.take(slice(0, 0))}
            written += copy_in(conn, staging, scored)
        return {"shape": None, "written": written}
    finally:
        if conn is not None:
            conn.close()


class DaskPredictJob(predict.PredictJob):
    def __init__(self, choice):
        self.choice = choice
        self.table: Optional[ShardedTable] = None
        self.engine = None
        self.staging: Optional[str] = None
        self.renamed = False

    def read(self, ctx: JobContext):
        trained, read, sql = super().read(ctx)
        if trained is not None and read is None:
            log.info("scored in PostgreSQL, where the rows are: engine dask is not needed")
        return trained, read, sql

    def _stage(self, ctx: JobContext, sql: str):
        self.table = ShardedTable(
            ctx.conn, sql, ctx.node.schema, ctx.options.get("sample_size") or 50_000
        )
        return self.table

    def fit_and_write(self, ctx: JobContext, state) -> Outcome:
        trained, read, sql = state
        if not isinstance(read, ShardedTable):
            return super().fit_and_write(ctx, state)
        if read.n_rows == 0:  # nothing to spread: the local path writes the empty table
            from dbt.adapters.sqlflow.data.reader import ReadLayout, copy_out

            empty = ReadLayout(read.columns).frame(
                copy_out(ctx.conn, f"select * from {read.table} where false")
            )
            return super().fit_and_write(ctx, (trained, empty, sql))
        from dbt.adapters.sqlflow.engines.dask_engine import DaskEngine

        self.engine = engine = DaskEngine(self.choice.dask_scheduler)
        shards = read.shards(len(engine.workers))
        try:
            shape = next(
                r["shape"]
                for r in engine.map(score_shard, shards, trained, ctx.options, None)
                if r["shape"] is not None
            )
        except ArtifactError:
            raise ArtifactError(trained.model_name, trained.version) from None
        prefix, bare = split_relation(ctx.targets.main)
        name = quote_ident(f"__sqlflow_out_{uuid.uuid4().hex[:12]}")
        self.staging = f"{prefix}.{name}" if prefix else name
        own = connect(read.params, "dbt-sqlflow staging")
        try:
            create_table(own, self.staging, shape)
        finally:
            own.close()
        parts = engine.map(
            score_shard, shards, trained, ctx.options, self.staging, what="scoring the shards"
        )
        rows = sum(p["written"] for p in parts)
        with ctx.conn.cursor() as cur:
            cur.execute(f"alter table {self.staging} rename to {quote_ident(bare)}")
        self.renamed = True
        predict._rename_prediction(ctx.conn, trained, ctx.options, ctx.targets.main)
        if ctx.options.get("incremental"):
            predict.increment.check_keys(
                ctx.conn, ctx.targets.main, ctx.options["unique_key"], ctx.model_name
            )
        where = f"on {len(engine.workers)} dask worker(s)"
        log.info(f"scored {rows} rows with {trained.model_name} v{trained.version} {where}")
        return Outcome(
            rows,
            trained.version,
            f"PREDICT {rows} rows, {trained.model_name} v{trained.version} {where}",
        )

    def close(self, state) -> None:
        if self.engine is not None:
            self.engine.close()
        if self.table is not None:
            if self.staging and not self.renamed:
                drop_tables(self.table.params, [self.staging])
            self.table.close()
        elif state:
            super().close(state)
