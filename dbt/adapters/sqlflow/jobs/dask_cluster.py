"""k-means and EM on engine: dask. The input is sharded once (data/shards.py); every pass is a map
over the shards on their workers and a sum in this process: encoder statistics, Lloyd or EM
statistics per iteration, then the assignments, which each worker COPYs into a committed staging
table that the node's transaction renames into place. Only statistics, a sample and the model
cross the wire; the rows go from PostgreSQL to a worker and back.

The module-level functions run on the workers (Dask imports this module there)."""

import logging
import time
import uuid
from typing import Any, Dict, Iterator, List, Optional, Tuple

import numpy as np

from dbt.adapters.sqlflow import interrupt, registry
from dbt.adapters.sqlflow.data import Frame, copy_in, create_table
from dbt.adapters.sqlflow.data.pgtypes import quote_ident
from dbt.adapters.sqlflow.data.shards import (
    Shard,
    ShardedTable,
    connect,
    drop_tables,
    split_relation,
)
from dbt.adapters.sqlflow.engines import worker_facts
from dbt.adapters.sqlflow.jobs import cluster, inputs, steps
from dbt.adapters.sqlflow.jobs.context import JobContext, Outcome
from dbt.adapters.sqlflow.ml import clustering
from dbt.adapters.sqlflow.ml.preprocess import (
    FeatureEncoder,
    column_statistics,
    merge_statistics,
)

log = logging.getLogger("dbt_sqlflow.jobs")

# ---------------------------------------------------------------- on the workers

_CACHE: Dict[Tuple[str, int], Dict] = {}  # (job, shard) -> encoded rows and last labels


def shard_statistics(
    shard: Shard, features: List[str], sample_rows: int, seed: int, job: str, cache_mb: float
) -> Dict:
    """Pass 1 on a worker: rows, a digest, the encoder's column statistics and a uniform sample
    (the rows with the smallest seeded keys, in their order). The feature columns stay in the
    worker's memory when they fit cache_mb, so that prepare() encodes them without a second read."""
    fingerprint = inputs.Fingerprint()
    raw: Optional[List[Dict]] = []
    held = 0
    rng = np.random.default_rng([seed, shard.index])
    kept: Optional[Frame] = None
    kept_keys = kept_positions = np.empty(0)
    n_rows = 0

    def columns() -> Iterator:
        nonlocal kept, kept_keys, kept_positions, n_rows, raw, held
        for frame in shard.frames():
            fingerprint.update(frame)
            inputs.check_finite(frame, features)
            keys = rng.random(frame.n_rows)
            positions = np.arange(n_rows, n_rows + frame.n_rows, dtype=float)
            n_rows += frame.n_rows
            both = frame if kept is None else Frame.concat([kept, frame])
            kept_keys = np.concatenate([kept_keys, keys])
            kept_positions = np.concatenate([kept_positions, positions])
            if len(kept_keys) > sample_rows:
                pick = np.sort(np.argpartition(kept_keys, sample_rows)[:sample_rows])
                both, kept_keys, kept_positions = (
                    both.take(pick),
                    kept_keys[pick],
                    kept_positions[pick],
                )
            kept = both
            batch = inputs.raw_columns(frame, features)
            if raw is not None:
                held += sum(c.values.nbytes for c in batch.values())
                if held <= cache_mb * 2**20:
                    raw.append(batch)
                else:
                    raw = None
            yield batch

    stats = column_statistics(columns(), seed=shard.index)
    if raw is not None:
        _CACHE[(job, shard.index)] = {"raw": raw}
    return {
        "n_rows": n_rows,
        "digest": fingerprint.hexdigest(),
        "stats": stats,
        "sample": kept,
        "keys": kept_keys,
    }


def _blocks(shard: Shard, job: str, encoder: Dict, features: List[str]) -> Iterator[np.ndarray]:
    """The shard's encoded rows: from the worker's cache when prepare() kept them, else read again."""
    entry = _CACHE.get((job, shard.index), {})
    if "X" in entry:
        yield entry["X"]
        return
    encode = FeatureEncoder.from_dict(encoder)
    for frame in shard.frames():
        yield encode.transform(inputs.raw_columns(frame, features))


def prepare(shard: Shard, job: str, encoder: Dict, features: List[str], cache_mb: float) -> Dict:
    """Encode the shard once; keep it in the worker's memory when it fits cache_mb. Returns the
    sums the k-means tolerance is computed from."""
    raw = _CACHE.pop((job, shard.index), {}).get("raw")
    _CACHE[(job, shard.index)] = {}
    if raw is None:  # too large to keep from the statistics pass: read again
        blocks = list(_blocks(shard, job, encoder, features))
    else:
        encode = FeatureEncoder.from_dict(encoder)
        blocks = [encode.transform(batch) for batch in raw]
    X = np.vstack(blocks)
    if X.nbytes <= cache_mb * 2**20:
        _CACHE[(job, shard.index)]["X"] = X
    _CACHE[(job, shard.index)]["labels"] = np.full(len(X), -1, np.int64)
    return {"n": len(X), "sum": X.sum(axis=0), "sum_sq": (X**2).sum(axis=0)}


def kmeans_step(
    shard: Shard, job: str, encoder: Dict, features: List[str], centers: np.ndarray
) -> Dict:
    entry = _CACHE.setdefault((job, shard.index), {})
    labels, parts, start = [], [], 0
    previous = entry.get("labels")
    changed = 0
    for X in _blocks(shard, job, encoder, features):
        block_labels, part = clustering.kmeans_batch_statistics(X, centers)
        if previous is not None and len(previous) >= start + len(X):
            changed += int((previous[start : start + len(X)] != block_labels).sum())
        else:
            changed += len(X)
        start += len(X)
        labels.append(block_labels)
        parts.append(part)
    entry["labels"] = np.concatenate(labels) if labels else np.empty(0, np.int64)
    total = clustering.add_statistics(parts)
    total["changed"] = changed
    return total


def contingency(
    shard: Shard, job: str, encoder: Dict, features: List[str], a: np.ndarray, b: np.ndarray
) -> np.ndarray:
    """Rows per (cluster under centres a, cluster under centres b): two runs found the same
    clustering when every row of this matrix, summed over the shards, has one non-zero cell."""
    counts = np.zeros((len(a), len(b)), np.int64)
    for X in _blocks(shard, job, encoder, features):
        np.add.at(counts, (clustering._nearest(X, a), clustering._nearest(X, b)), 1)
    return counts


def em_step(
    shard: Shard, job: str, encoder: Dict, features: List[str], model: clustering.ClusterModel
) -> Dict:
    gm = model._mixture()
    return clustering.add_statistics(
        clustering.em_batch_statistics(model, X, gm)
        for X in _blocks(shard, job, encoder, features)
        if len(X)
    )


def cluster_sizes(shard: Shard, job: str, encoder: Dict, features: List[str], model) -> np.ndarray:
    sizes = np.zeros(model.k, np.int64)
    for X in _blocks(shard, job, encoder, features):
        if len(X):
            sizes += np.bincount(model.assign(X)[0], minlength=model.k)
    return sizes


def write_assignments(
    shard: Shard,
    encoder: Dict,
    roles: inputs.Roles,
    options: Dict,
    model,
    staging: Optional[str],
    numeric: List[str],
    shape_only: bool = False,
) -> Dict:
    """Assign the shard's rows and COPY them (pass-through columns and the assignment) into the
    staging table (staging=None: only count). Returns the card's counts: rows per cluster,
    per-cluster sums of the numeric features, the probability histogram; shape_only returns the
    output's columns, from the first batch."""
    encode = FeatureEncoder.from_dict(encoder)
    k = model.k
    facts: Dict[str, Any] = {
        "sizes": np.zeros(k, np.int64),
        "sums": np.zeros((k, len(numeric))),
        "counts": np.zeros((k, len(numeric))),
        "bins": np.zeros(20, np.int64),
        "inertia": 0.0,
        "written": 0,
    }
    conn = None if staging is None or shape_only else connect(shard.params, "dbt-sqlflow writer")
    try:
        for frame in shard.frames():
            if frame.n_rows == 0:
                continue
            X = encode.transform(inputs.raw_columns(frame, roles.features))
            columns = cluster.assignment_columns(model, X, options)
            output = Frame(cluster._passed_through(frame, roles, options) + columns)
            if shape_only:
                return {"shape": output.take(slice(0, 0))}
            facts["written"] += copy_in(conn, staging, output) if conn else frame.n_rows
            _add_facts(facts, frame, columns, numeric, k)
        return facts
    finally:
        if conn is not None:
            conn.close()


def _add_facts(facts: Dict, frame: Frame, columns, numeric: List[str], k: int) -> None:
    assigned = columns[0].values.astype(np.int64)
    facts["sizes"] += np.bincount(assigned, minlength=k)
    facts["inertia"] += float((columns[1].values ** 2).sum())
    for j, name in enumerate(numeric):
        present = ~frame[name].null_mask
        values = np.where(present, frame[name].values.astype(np.float64), 0.0)
        facts["sums"][:, j] += np.bincount(assigned, weights=values, minlength=k)
        facts["counts"][:, j] += np.bincount(assigned, weights=present, minlength=k)
    if len(columns) > 2 and columns[2].name == "cluster_probability":
        facts["bins"] += np.histogram(columns[2].values, bins=20, range=(0.0, 1.0))[0]


def forget(job: str) -> None:
    for key in [k for k in _CACHE if k[0] == job]:
        del _CACHE[key]


# ---------------------------------------------------------------- in the dbt process


class DaskState:
    def __init__(self, table: ShardedTable, first: Frame):
        self.table, self.first = table, first
        self.engine: Optional[Any] = None
        self.job = uuid.uuid4().hex[:12]
        self.staging: Optional[str] = None
        self.renamed = False


class DaskClusterJob:
    """cluster and ml_train of kmeans and em with engine='dask'."""

    def __init__(self, choice):
        self.choice = choice

    def read(self, ctx: JobContext) -> DaskState:
        table = ShardedTable(
            ctx.conn, ctx.sql, ctx.node.schema, ctx.options["sample_size"] or 50_000
        )
        first = table.empty_frame()
        log.info(f"sharded {table.n_rows} rows x {len(table.columns)} columns for engine dask")
        return DaskState(table, first)

    def close(self, state: DaskState) -> None:
        if state.engine is not None:
            state.engine.run_on_workers(forget, state.job)
            state.engine.close()
        if state.staging and not state.renamed:
            drop_tables(state.table.params, [state.staging])
        state.table.close()

    def fit_and_write(self, ctx: JobContext, state: DaskState) -> Outcome:
        from dbt.adapters.sqlflow.engines.dask_engine import DaskEngine

        options = ctx.options
        verb = "CLUSTER" if ctx.materialization == "cluster" else "TRAIN"
        roles = cluster.checked_roles(ctx, state.first)
        n_rows = state.table.n_rows
        if n_rows == 0 and ctx.empty:
            empty = _Empty(state.first)
            return cluster.ClusterJob._write_empty(ctx, empty, roles)  # type: ignore[arg-type]
        if n_rows == 0:
            raise inputs.InputError("the SELECT returned no rows; there is nothing to cluster.")
        state.engine = engine = DaskEngine(self.choice.dask_scheduler)
        shards = state.table.shards(len(engine.workers))
        sample_rows = options["sample_size"] or 50_000
        parts = engine.map(
            shard_statistics,
            shards,
            roles.features,
            sample_rows,
            options["seed"],
            state.job,
            options.get("memory_budget_mb", 1024) or 1024,
            what="the statistics pass",
        )
        encoder = inputs.new_encoder(options).fit_statistics(
            merge_statistics([p["stats"] for p in parts])
        )
        digest = inputs.Fingerprint()
        digest._digest.update("".join(p["digest"] for p in parts).encode())
        kept = steps.unchanged(ctx, digest.hexdigest(), verb, n_rows)
        if kept:
            return kept
        inputs.report_dropped(encoder)
        sample = _merged_sample(parts, sample_rows)
        state_dict, features = encoder.to_dict(), roles.features
        budget = options.get("memory_budget_mb", 1024) or 1024
        sums = engine.map(
            prepare, shards, state.job, state_dict, features, budget, what="encoding the shards"
        )
        started = time.perf_counter()
        model, sweep = self._fit(engine, shards, state, encoder, features, sample, sums, options)
        if options.get("minimum_support", 1) > 1:
            sizes = sum(engine.map(cluster_sizes, shards, state.job, state_dict, features, model))
            model = clustering.drop_small_clusters(model, sizes, options["minimum_support"])
        fit_seconds = time.perf_counter() - started
        encode = cluster._encoder_for(encoder, features)
        model, matching = cluster._stable_ids(ctx, model, encoder, sample, encode)
        interrupt.check()
        kinds = {n: state.first[n].type.kind for n in features}
        numeric = [n for n in features if kinds[n] in ("integer", "float")]
        X = encode(sample)
        metrics = clustering.metrics(X, model.assign(X)[0], model, options["seed"])
        metrics["metrics_sample_rows"] = len(X)
        # cluster: the workers write the assignments before the version is registered (the card's
        # counts come back with them); ml_train: they only count
        largest = int(np.argmax([p["n_rows"] for p in parts]))
        facts = self._assign(ctx, state, shards, largest, encoder, roles, model, numeric)
        metrics["inertia"] = facts.pop("inertia")
        version = steps.register(
            ctx,
            registry.ModelVersion(
                model_name=ctx.model_name,
                version=0,
                model_type=options["model_type"],
                options=dict(options),
                features={**state_dict, "kinds": kinds, "dropped": encoder.dropped_},
                label=None,
                parameters=cluster.parameters(model),
                metrics=metrics,
                training_info={
                    "k_sweep": sweep,
                    "stable_ids": matching,
                    "engine": _engine_facts(engine, parts),
                    "dropped_clusters": model.info.get("dropped_clusters", 0),
                    **{k: v for k, v in model.info.items() if k != "dropped_clusters"},
                    "history": cluster._history(model, options, fit_seconds, metrics),
                    **facts,
                },
                row_count=n_rows,
                input_fingerprint=digest.hexdigest(),
                sql_fingerprint=steps.sql_fingerprint(ctx.sql),
            ),
        )
        self._write_tables(ctx, state, encoder, roles, model, version)
        return Outcome(
            n_rows, version, f"{verb} {n_rows} rows, k={model.k}, v{version}", k=model.k
        )

    def _fit(self, engine, shards, state, encoder, features, sample, sums, options):
        encode = cluster._encoder_for(encoder, features)
        X_sample = encode(sample)
        k, seed, sweep = options["n_clusters"], options["seed"], []
        if k == 0:
            k, sweep = clustering.choose_k(
                X_sample,
                options["model_type"],
                options["k_range"],
                seed,
                **cluster._fit_options(options),
            )
            log.info(
                f"chose k={k} in k_range {options['k_range']} on a {len(X_sample)}-row sample"
            )
        state_dict = encoder.to_dict()
        if options["model_type"] == "kmeans":
            n = sum(s["n"] for s in sums)
            mean = sum(s["sum"] for s in sums) / n
            variance = sum(s["sum_sq"] for s in sums) / n - mean**2
            tol = 1e-4 if options.get("tol") is None else options["tol"]

            def lloyd(centers):
                return clustering.add_statistics(
                    engine.map(
                        kmeans_step,
                        shards,
                        state.job,
                        state_dict,
                        features,
                        centers,
                        what="a k-means iteration",
                    )
                )

            def same(a, b) -> bool:
                counts = sum(
                    engine.map(contingency, shards, state.job, state_dict, features, a, b)
                )
                return bool(((counts > 0).sum(axis=1) <= 1).all())

            tolerance = float(np.mean(variance) * tol)
            return self._restarts(lloyd, same, X_sample, k, options, tolerance), sweep

        def e_step(current):
            return clustering.add_statistics(
                engine.map(
                    em_step, shards, state.job, state_dict, features, current, what="an EM pass"
                )
            )

        covariance = options.get("covariance_type", "diag")
        init = clustering.fit(X_sample, "em", k, seed, covariance_type=covariance)
        passes = options.get("max_iter") or clustering.STREAM_PASSES["em"]
        tol = 1e-3 if options.get("tol") is None else options["tol"]
        return clustering.em_map_reduce(e_step, init, passes, tol), sweep

    @staticmethod
    def _restarts(lloyd, same, X_sample: np.ndarray, k: int, options: Dict, tolerance: float):
        """n_init runs from successive k-means++ seedings of one RandomState, as KMeans draws
        them. As in KMeans, a run replaces the best so far when its inertia (one more pass) is
        lower and its clustering is not the same one relabeled (`same`: one more pass)."""
        draws = np.random.RandomState(options["seed"])
        best, best_inertia = None, np.inf
        for attempt in range(options.get("n_init") or 1):
            model = clustering.kmeans_map_reduce(
                lloyd,
                clustering.initial_centers(X_sample, k, draws),
                tolerance,
                options.get("max_iter") or 300,
            )
            if (options.get("n_init") or 1) == 1:
                return model
            inertia = lloyd(model.centers)["inertia"]
            log.debug(f"k-means restart {attempt + 1}: inertia {inertia:.6g}")
            if best is None or (inertia < best_inertia and not same(model.centers, best.centers)):
                best, best_inertia = model, inertia
        return best

    def _assign(self, ctx, state, shards, largest, encoder, roles, model, numeric) -> Dict:
        """cluster: each worker COPYs its rows' assignments into a committed staging table, renamed
        to the intermediate table in the node's transaction. ml_train: the same pass, counting only.
        Returns the card's facts, summed over the shards."""
        options, state_dict = ctx.options, encoder.to_dict()
        staging = None
        if ctx.materialization == "cluster":
            shape = state.engine.map(
                write_assignments,
                [shards[largest]],
                state_dict,
                roles,
                options,
                model,
                None,
                numeric,
                True,
            )[0]["shape"]
            prefix, _ = split_relation(ctx.targets.main)
            name = quote_ident(f"__sqlflow_out_{state.job}")
            state.staging = staging = f"{prefix}.{name}" if prefix else name
            own = connect(state.table.params, "dbt-sqlflow staging")
            try:
                create_table(own, staging, shape)
            finally:
                own.close()
        parts = state.engine.map(
            write_assignments,
            shards,
            state_dict,
            roles,
            options,
            model,
            staging,
            numeric,
            what="writing the assignments" if staging else "counting the clusters",
        )
        sums = sum(p["sums"] for p in parts)
        counts = sum(p["counts"] for p in parts)
        facts = {
            "inertia": float(sum(p["inertia"] for p in parts)),
            "sizes": sum(p["sizes"] for p in parts).tolist(),
            "profile": {
                "features": numeric,
                "means": (sums / np.maximum(counts, 1)).tolist(),
                "overall": (sums.sum(axis=0) / np.maximum(counts.sum(axis=0), 1)).tolist(),
            },
        }
        if model.model_type == "em":
            facts["probability_histogram"] = sum(p["bins"] for p in parts).tolist()
        if staging:
            log.info(f"the workers wrote {sum(p['written'] for p in parts)} rows")
        return facts

    def _write_tables(self, ctx, state, encoder, roles, model, version: int) -> None:
        """ml_train: the weights table. cluster: the staged assignments renamed into place, then
        the centroids and the profile."""
        from dbt.adapters.sqlflow.data import write_frame
        from dbt.adapters.sqlflow.jobs import weights

        conn, options, targets = ctx.conn, ctx.options, ctx.targets
        if ctx.materialization != "cluster":
            write_frame(conn, targets.main, weights.cluster_weights_frame(model, encoder, version))
            return
        write_frame(conn, targets.centroids, cluster.centroid_frame(model, encoder))
        columns, categorical = cluster._profile_columns(
            conn, state.staging, state.first, roles, encoder, options["max_states"]
        )
        label = options["label_column"]
        with conn.cursor() as cur:
            cur.execute(
                f"create table {targets.profile} as "
                f"{cluster.profile_sql(state.staging, label, columns, categorical)}"
            )
            # last: from here the node's transaction owns the table (a rollback renames it back,
            # and close() must not wait on its lock to drop it)
            cur.execute(
                f"alter table {state.staging} rename to {quote_ident(split_relation(targets.main)[1])}"
            )
        state.renamed = True


def _engine_facts(engine, parts: List[Dict]) -> Dict:
    """Where the work ran: rows each worker read, its CPU seconds and peak memory."""
    usage = engine.usage()
    rows: Dict[str, int] = {}
    for i, part in enumerate(parts):
        worker = engine.workers[i % len(engine.workers)]
        rows[worker] = rows.get(worker, 0) + part["n_rows"]
    workers = [{"worker": w, "rows": rows.get(w, 0), **usage.get(w, {})} for w in engine.workers]
    return worker_facts("dask", workers)


class _Empty:
    """What ClusterJob._write_empty reads of a Source."""

    def __init__(self, first: Frame):
        self.first = first


def _merged_sample(parts: List[Dict], rows: int) -> Frame:
    """The shards' samples as one: the `rows` smallest keys overall, in shard order."""
    frames = [p["sample"] for p in parts if p["sample"] is not None and p["sample"].n_rows]
    keys = np.concatenate([p["keys"] for p in parts if p["sample"] is not None and len(p["keys"])])
    merged = Frame.concat(frames)
    if merged.n_rows > rows:
        merged = merged.take(np.sort(np.argpartition(keys, rows)[:rows]))
    return merged
