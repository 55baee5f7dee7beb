"""The `ml_train` node of `model_type='sql'` (sql4ml, design section 8): the node's SQL is the model.

Read phase: parse the program, run its data CTEs in PostgreSQL (COPY path), translate the rest.
Write phase: minimize the objective in TensorFlow, evaluate the user's own objective in PostgreSQL
with the learned weights (the self-check), write the weights table, the registry row and the
generated program `target/sqlflow/<model>.py`.
"""

import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import numpy as np

from dbt.adapters.sqlflow import interrupt, registry
from dbt.adapters.sqlflow.data import Column, Frame, describe, read_frame, write_frame
from dbt.adapters.sqlflow.data.pgtypes import WIRE_TYPES, WireType, quote_ident
from dbt.adapters.sqlflow.errors import InputError
from dbt.adapters.sqlflow.jobs import inputs, steps
from dbt.adapters.sqlflow.jobs.context import JobContext, Outcome
from dbt.adapters.sqlflow.ml import history, params
from dbt.adapters.sqlflow.sql4ml.program import (
    Program,
    ProgramError,
    named_tables,
    position,
    referenced_tables,
    weight_specs,
)

log = logging.getLogger("dbt_sqlflow.jobs")

SELF_CHECK_TOLERANCE = 1e-6  # relative: PostgreSQL and TensorFlow both compute in float64
SELF_CHECK_SAMPLE = 10_000  # observations the self-check covers when mini-batches are streamed


@dataclass
class Read:
    program: Program
    translation: (
        Any  # sql4ml.translate.Translation (imported when a node runs), None under --empty
    )
    frames: Dict[str, Frame]
    timings: Dict[str, float] = field(default_factory=dict)  # milliseconds
    stream: Optional["Stream"] = (
        None  # mini-batches read from the database (over memory_budget_mb)
    )
    sparse: List[str] = field(default_factory=list)  # data relations held sparse (full batch)


class Stream:
    """Mini-batches along `key` read from PostgreSQL when they are due: the data relations that have
    the key column are run once into temporary tables indexed on it; a batch reads its keys' rows
    through COPY. The others are read whole. Memory holds one batch (and the self-check's sample)."""

    def __init__(self, conn, program: Program, key: str, names: List[str]):
        self.conn, self.program, self.key = conn, program, key
        self.staged: Dict[str, str] = {}
        self.frames: Dict[str, Frame] = {}
        self.probes: Dict[str, Dict[str, np.ndarray]] = {}
        self.types: Dict[tuple, WireType] = {}  # the staged relations' column types
        self.rows = 0
        with conn.cursor() as cur:
            for name in names:
                sql = program.data_sql(name)
                columns = describe(conn, sql)
                if key not in [c.name for c in columns]:
                    self.frames[name] = _checked(name, read_frame(conn, sql))
                    continue
                table = quote_ident(f"__sqlflow_sql4ml_{name}")
                cur.execute(f"drop table if exists {table}")
                cur.execute(f"create temporary table {table} as {sql}")
                cur.execute(f"create index on {table} ({quote_ident(key)})")
                cur.execute(f"analyze {table}")
                self.staged[name] = table
                self.probes[name] = self._probe(cur, name, table, columns)

    def _probe(self, cur, name: str, table: str, columns) -> Dict[str, np.ndarray]:
        """What the translation needs of a staged relation: each column's distinct values (the keys'
        domains) or, for floats, only its type; NULLs are refused as when read whole."""
        counts = ", ".join(f"count(*) - count({quote_ident(c.name)})" for c in columns)
        cur.execute(f"select count(*), {counts} from {table}")
        total, *nulls = cur.fetchone()
        self.rows += total
        for c, n in zip(columns, nulls):
            if n:
                raise InputError(_null_message(name, c.name, n))
        probe = {}
        for c in columns:
            self.types[(name, c.name)] = c.plan.type
            if c.plan.type.kind == "float":
                probe[c.name] = np.zeros(0, np.float64)
                continue
            frame = read_frame(self.conn, f"select distinct {quote_ident(c.name)} from {table}")
            probe[c.name] = frame.columns[0].values
        return probe

    def data(self) -> Dict[str, Dict[str, np.ndarray]]:
        whole = {n: {c.name: c.values for c in f.columns} for n, f in self.frames.items()}
        return {**whole, **self.probes}

    def attach(self, translation, sample_keys: int) -> None:
        self.translation = translation
        root = translation.classes.find((next(iter(self.staged)), self.key))
        self.domain = translation.domains[root]
        self.sample = self.domain[:sample_keys]  # the self-check's observations

    def static(self, backend) -> Dict:
        keys = self.translation.data_keys()
        return {
            n: self.translation.scatter(backend, n, {c.name: c.values for c in f.columns})
            for n, f in self.frames.items()
            if n in keys
        }

    def _rows_of(self, table: str, keys: np.ndarray) -> Frame:
        with self.conn.cursor() as cur:
            sql = cur.mogrify(
                f"select * from {table} where {quote_ident(self.key)} = any(%s)", (keys.tolist(),)
            ).decode()
        return read_frame(self.conn, sql)

    def batch(self, backend, keys: np.ndarray) -> Dict:
        out = {}
        for name, table in self.staged.items():
            frame = self._rows_of(table, keys)
            columns = {c.name: c.values for c in frame.columns}
            out[name] = self.translation.scatter(backend, name, columns, batch=(self.key, keys))
        return out

    def sample_filters(self) -> Dict[str, str]:
        """The staged relations cut to the sample's keys, as CTE bodies for the self-check SQL."""
        out = {}
        with self.conn.cursor() as cur:
            for name in self.staged:
                out[name] = cur.mogrify(
                    f"select * from ({self.program.data_sql(name)}) as __sqlflow_s "
                    f"where __sqlflow_s.{quote_ident(self.key)} = any(%s)",
                    (self.sample.tolist(),),
                ).decode()
        return out

    def fingerprint(self) -> str:
        digest = inputs.Fingerprint()
        for frame in self.frames.values():
            digest.update(frame)
        with self.conn.cursor() as cur:
            for table in self.staged.values():
                cur.execute(f"select count(*), sum(hashtext(t::text)) from {table} as t")
                digest.update(Frame([Column.of("h", np.array([str(cur.fetchone())], object))]))
        return digest.hexdigest()

    def close(self) -> None:
        try:
            with self.conn.cursor() as cur:
                for table in self.staged.values():
                    cur.execute(f"drop table if exists {table}")
        except Exception:  # after a failed statement; temporary tables end with the session
            log.debug("left the staged tables to the end of the session")


def _null_message(name: str, column: str, count: int) -> str:
    return (
        f"data relation {name} has {int(count)} NULL(s) in column {column}: the objective cannot "
        f"read NULL; filter them in {name} (where {column} is not null) or replace them (coalesce)."
    )


def _checked(name: str, frame: Frame) -> Frame:
    for column in frame.columns:
        if column.nulls is not None:
            raise InputError(_null_message(name, column.name, column.nulls.sum()))
    return frame


def _undeclared_weights(ctx: JobContext, program: Program) -> None:
    """A data CTE reading an unqualified name that is no CTE and no relation: a weight not declared."""

    with ctx.conn.cursor() as cur:
        for name in program.data:
            for table in named_tables(program.ctes[name]):
                if table.db or table.name.lower() in program.ctes:
                    continue
                cur.execute("select to_regclass(%s)", (table.name,))
                if cur.fetchone()[0] is None:
                    raise ProgramError(
                        f"{name} ({position(program.text, table)}) reads '{table.name}', which is "
                        f"neither a CTE, a relation in the database, nor a declared weight: declare "
                        f"it in config(weights={{'{table.name}': [...index columns]}}) or ref() the "
                        f"model it is."
                    )


def _read_names(program: Program) -> List[str]:
    """The data CTEs the translated part reads (the rest only feed them, inside PostgreSQL)."""
    read = set().union(*(referenced_tables(s) for _, s in program.scopes())) & set(program.data)
    return [n for n in program.data if n in read]


def _read_data(ctx: JobContext, program: Program) -> Dict[str, Frame]:
    """The data CTEs the translated part reads, run in PostgreSQL; NULLs are refused, named."""
    frames = {}
    for name in _read_names(program):
        frames[name] = _checked(name, read_frame(ctx.conn, program.data_sql(name)))
        log.debug(f"read {name}: {frames[name].n_rows} rows x {len(frames[name].columns)} columns")
    return frames


def _streams(ctx: JobContext, size: float, what: str) -> bool:
    """Mini-batches are read from the database when the data is over memory_budget_mb; a full batch
    is always held (it is the whole data), with a warning when that is over the budget."""
    budget = ctx.options.get("memory_budget_mb", 1024)
    if size <= budget * 2**20 and budget != 0:
        return False
    if not ctx.options.get("batch_size"):
        log.warning(
            f"{ctx.model_name}: {what} about {size / 2**20:.0f} MB, over memory_budget_mb, and "
            f"full-batch descent holds all of it; set batch_size (and key) to read mini-batches."
        )
        return False
    return True


def _check_prediction(program: Program, options: Dict) -> None:
    name = options["prediction"]
    if name not in program.model:
        where = "is a data CTE (it reads no weight)" if name in program.ctes else "is not a CTE"
        raise ProgramError(
            f"prediction='{name}' {where} of the program; name the CTE that computes the "
            f"prediction from the weights (weight-dependent CTEs: {', '.join(program.model) or 'none'})."
        )


def parse(sql: str, options: Dict) -> Program:
    """The program, with positions in messages counted in the compiled SQL, as the user can open it."""
    return Program.parse(sql.rstrip().rstrip(";"), weight_specs(options["weights"]))


def _located(error: ProgramError) -> ProgramError:
    text = str(error)
    if "line " not in text:
        return error
    return ProgramError(
        f"{text} (Lines count in the compiled SQL, target/compiled/.../<model>.sql.)"
    )


def _timings(started, parsed, read_done, analysed) -> Dict[str, float]:
    return {
        "parse_ms": 1000 * (parsed - started),
        "read_ms": 1000 * (read_done - parsed),
        "analysis_ms": 1000 * (analysed - read_done),
    }


def _program(ctx: JobContext) -> Program:
    program = parse(ctx.sql, ctx.options)
    if program.unused:
        log.warning(
            f"{ctx.model_name}: declared weight(s) {', '.join(program.unused)} are never read by "
            f"the prediction or the objective; they are not trained. Remove them from "
            f"config(weights=...) or use them."
        )
    _check_prediction(program, ctx.options)
    _undeclared_weights(ctx, program)
    return program


def _data(ctx: JobContext, program: Program, stream: bool):
    """(frames read whole, the columns the translation is built on, the Stream or None)."""
    if not stream:
        frames = _read_data(ctx, program)
        return frames, {n: {c.name: c.values for c in f.columns} for n, f in frames.items()}, None
    key = (ctx.options.get("key") or [None])[0]
    staged = Stream(ctx.conn, program, key, _read_names(program))
    if not staged.staged:
        staged.close()
        raise InputError(
            f"batch_size > 0 reads mini-batches along key={key!r}, but no data relation the "
            f"objective reads has that column; name the observations' id column in key."
        )
    return staged.frames, staged.data(), staged


def _planned_bytes(ctx: JobContext, program: Program) -> float:
    return sum(inputs.estimated_bytes(ctx.conn, program.data_sql(n)) for n in _read_names(program))


class Sql4mlJob:
    """ml_train of a model written in SQL."""

    def read(self, ctx: JobContext) -> Read:
        try:
            return self._read(ctx)
        except ProgramError as error:
            raise _located(error) from None

    def _read(self, ctx: JobContext) -> Read:
        from dbt.adapters.sqlflow.sql4ml import codegen
        from dbt.adapters.sqlflow.sql4ml.translate import Translation

        started = time.perf_counter()
        program = _program(ctx)
        parsed = time.perf_counter()
        streamed = not ctx.empty and _streams(ctx, _planned_bytes(ctx, program), "the data is")
        frames, data, stream = _data(ctx, program, streamed)
        read_done = time.perf_counter()
        try:
            if ctx.empty or (stream is None and any(f.n_rows == 0 for f in frames.values())):
                return Read(program, None, frames, stream=stream)
            translation = Translation(program, data)
            full_batch = not ctx.options.get("batch_size")
            sparse = translation.sparse_names(ctx.options.get("sparse")) if full_batch else []
            dense = translation.dense_bytes(sparse)
            if not stream and _streams(ctx, dense, "its tensors would take"):
                log.info(
                    f"the data tensors would take {dense / 2**20:.0f} MB: reading mini-batches"
                )
                frames, data, stream = _data(ctx, program, True)
                translation = Translation(program, data)
            if ctx.options.get("batch_size"):  # the key axis exists; no weight is indexed by it
                translation.batch_axes((ctx.options.get("key") or [None])[0])
            if stream:
                stream.attach(translation, SELF_CHECK_SAMPLE)
            codegen.trace(translation, {})  # every mistake is found here, before TensorFlow starts
        except BaseException:
            if stream:
                stream.close()
            raise
        timings = _timings(started, parsed, read_done, time.perf_counter())
        rows = stream.rows if stream else sum(f.n_rows for f in frames.values())
        held = f" ({', '.join(sparse)} sparse)" if sparse and not stream else ""
        log.info(
            f"translated {len(program.model)} CTE(s) and the objective; "
            f"{'staged' if stream else 'read'} {rows} rows of {len(data)} data relation(s){held}"
        )
        return Read(program, translation, frames, timings, stream, [] if stream else sparse)

    def fit_and_write(self, ctx: JobContext, state: Read) -> Outcome:
        if state.translation is None:
            return _empty(ctx, state)
        if state.stream:
            digest = state.stream.fingerprint()
            rows = state.stream.rows + sum(f.n_rows for f in state.frames.values())
        else:
            fingerprint = inputs.Fingerprint()
            for frame in state.frames.values():
                fingerprint.update(frame)
            digest, rows = fingerprint.hexdigest(), sum(f.n_rows for f in state.frames.values())
        kept = steps.unchanged(ctx, digest, "TRAIN", rows)
        if kept:
            return kept
        return _train(ctx, state, digest, rows)

    def close(self, state) -> None:
        if isinstance(state, Read) and state.stream:
            state.stream.close()


def _empty(ctx: JobContext, state: Read) -> Outcome:
    if not ctx.empty:
        empty = [n for n, f in state.frames.items() if f.n_rows == 0]
        raise InputError(
            f"data relation(s) {', '.join(empty)} returned no rows; there is nothing to train on."
        )
    columns = index_columns(state.program)
    frame = Frame(
        [Column.of("model_version", np.zeros(0, np.int32), type=WIRE_TYPES["integer"])]
        + [Column.of("tensor", np.zeros(0, object), type=WIRE_TYPES["text"])]
        + [Column.of(c, np.zeros(0, object), type=WIRE_TYPES["text"]) for c in columns]
        + [Column.of("value", np.zeros(0, np.float64))]
    )
    write_frame(ctx.conn, ctx.targets.main, frame)
    return Outcome(0, 0, "TRAIN 0 rows (--empty: not trained)")


def _fitting(options: Dict) -> params.Fitting:
    return params.from_options(params.Fitting, options)


def _train(ctx: JobContext, state: Read, input_fingerprint: str, rows: int) -> Outcome:
    from dbt.adapters.sqlflow.sql4ml import codegen, train

    translation, options = state.translation, ctx.options
    fitting = _fitting(options)
    key = (options.get("key") or [None])[0]
    trained = train.fit(translation, fitting, key, state.stream, state.sparse)
    interrupt.check()
    if not np.isfinite(trained.final):
        raise InputError(
            f"the objective became {trained.final} after {trained.epochs_run} epochs: guard logs "
            f"and divisions (ln(greatest(p, 1e-12)), a smaller learning_rate) in the program."
        )
    in_postgresql = self_check(ctx, translation, trained, state.stream)
    started = time.perf_counter()
    columns = index_columns(state.program)
    code = codegen.render(translation, ctx.model_name, fitting, key, columns)
    state.timings["codegen_ms"] = 1000 * (time.perf_counter() - started)
    version = _register(ctx, state, trained, in_postgresql, input_fingerprint, rows, code)
    write_frame(
        ctx.conn, ctx.targets.main, weights_frame(translation, trained, version, columns, state)
    )
    path = _write_program(ctx, code)
    log.info(
        f"trained the SQL model: objective {trained.final:.6g} after {trained.epochs_run} epochs, "
        f"{in_postgresql:.6g} in PostgreSQL" + (f"; program {path}" if path else "")
    )
    return Outcome(
        rows,
        version,
        f"TRAIN {rows} rows, v{version}, objective {trained.final:.4g}",
        info={"program": path},
    )


def self_check(ctx: JobContext, translation, trained, stream: Optional[Stream] = None) -> float:
    """The user's own objective SELECT, run in PostgreSQL with the learned weights as VALUES (read
    in mini-batches: on the sample of observations TensorFlow's final objective was computed on)."""
    from dbt.adapters.sqlflow.sql4ml.train import with_weights

    replaced = stream.sample_filters() if stream else None
    with ctx.conn.cursor() as cur:
        cur.execute(with_weights(translation, trained.weights, replaced))
        row = cur.fetchone()
    value = None if row is None or row[0] is None else float(row[0])
    if value is None or abs(value - trained.final) > SELF_CHECK_TOLERANCE * max(
        abs(value), abs(trained.final), 1e-300
    ):
        raise InputError(
            f"self-check failed: the objective is {trained.final!r} in TensorFlow but {value!r} "
            f"when PostgreSQL runs the program with the learned weights, so the weights are not "
            f"stored. The translation does not mean what PostgreSQL means here: please report it "
            f"with the program (target/compiled/...)."
        )
    return value


def index_columns(program: Program) -> List[str]:
    """The weights table's index columns: every index name of the declared weights, in order."""
    names: List[str] = []
    for spec in program.weights.values():
        names += [c for c in spec.index if c not in names]
    return names


def _index_type(translation, state: Read, weight: str, column: str) -> WireType:
    """An index column is typed like the data column it is equated with (integer for a size)."""
    root = translation.classes.find((weight, column))
    types = {(n, c.name): c.type for n, f in state.frames.items() for c in f.columns}
    types.update(state.stream.types if state.stream else {})
    for (name, c), wire in types.items():
        if c in translation.keys.get(name, []) and translation.classes.find((name, c)) == root:
            return wire
    return WIRE_TYPES["integer"]


def weights_frame(translation, trained, version: int, columns: List[str], state: Read) -> Frame:
    from dbt.adapters.sqlflow.sql4ml.train import weight_rows

    tensors: List[str] = []
    index: Dict[str, List] = {c: [] for c in columns}
    values: List[float] = []
    types: Dict[str, WireType] = {}
    for name, spec in translation.program.weights.items():
        for c in spec.index:
            types.setdefault(c, _index_type(translation, state, name, c))
        for row in weight_rows(translation, name, trained.weights[name]):
            tensors.append(name)
            labels = dict(zip(spec.index, row[:-1]))
            for c in columns:
                index[c].append(labels.get(c))
            values.append(row[-1])
    return Frame(
        [
            Column.of(
                "model_version",
                np.full(len(values), version, np.int32),
                type=WIRE_TYPES["integer"],
            ),
            Column.of("tensor", np.array(tensors, object), type=WIRE_TYPES["text"]),
        ]
        + [_typed(c, index[c], types[c]) for c in columns]
        + [Column.of("value", np.array(values, np.float64))]
    )


def _typed(name: str, values: List, wire: WireType) -> Column:
    nulls = np.array([v is None for v in values], bool)
    if wire.kind == "text":
        data = np.array(["" if v is None else str(v) for v in values], object)
    else:
        filler = np.zeros((), wire.numpy_dtype).item()
        data = np.array([filler if v is None else v for v in values], wire.numpy_dtype)
    return Column.of(name, data, nulls=nulls, type=wire)


def _register(ctx, state: Read, trained, in_postgresql: float, fingerprint, rows, code) -> int:
    from dbt.adapters.sqlflow.sql4ml.train import weight_rows

    translation, program = state.translation, state.program
    prediction = ctx.options["prediction"]
    parameters = {
        "program": program.text,
        "prediction": prediction,
        "prediction_keys": translation.keys.get(prediction, []),
        "data_relations": list(translation.data_keys()),
        "weights": {
            n: {"index": list(s.index), "rows": weight_rows(translation, n, trained.weights[n])}
            for n, s in program.weights.items()
        },
        "generated_program": code,
    }
    info = {
        "objective": trained.objective,
        "epochs": trained.epochs_run,
        "epoch_seconds": trained.epoch_seconds,
        **state.timings,
        "self_check": {
            "tensorflow": trained.final,
            "postgresql": in_postgresql,
            "observations": len(state.stream.sample) if state.stream else "all",
        },
        "streamed": bool(state.stream),
        "sparse": state.sparse,
        "history": history.epochs(
            trained.objective,
            seconds=trained.epoch_seconds,
            learning_rate=ctx.options.get("learning_rate"),
        ),
    }
    features = {
        "data": {n: [c.name for c in f.columns] for n, f in state.frames.items()},
        "keys": translation.data_keys(),
    }
    return steps.register(
        ctx,
        registry.ModelVersion(
            model_name=ctx.model_name,
            version=0,
            model_type="sql",
            options=ctx.options,
            features=features,
            label=None,
            parameters=parameters,
            metrics={"objective": trained.final, "objective_in_postgresql": in_postgresql},
            training_info=info,
            row_count=rows,
            input_fingerprint=fingerprint,
            sql_fingerprint=steps.sql_fingerprint(ctx.sql),
        ),
    )


def _write_program(ctx: JobContext, code: str) -> Optional[str]:
    if not ctx.artifact_dir:
        return None
    os.makedirs(ctx.artifact_dir, exist_ok=True)
    path = os.path.join(ctx.artifact_dir, f"{ctx.model_name}.py")
    with open(path, "w") as f:
        f.write(code)
    return path
