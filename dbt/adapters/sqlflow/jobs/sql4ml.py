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
from typing import Dict, List, Optional

import numpy as np

from dbt.adapters.sqlflow import interrupt, registry
from dbt.adapters.sqlflow.data import Column, Frame, read_frame, write_frame
from dbt.adapters.sqlflow.data.pgtypes import WIRE_TYPES, WireType
from dbt.adapters.sqlflow.errors import InputError
from dbt.adapters.sqlflow.jobs import inputs, steps
from dbt.adapters.sqlflow.jobs.context import JobContext, Outcome
from dbt.adapters.sqlflow.ml import params
from dbt.adapters.sqlflow.sql4ml.program import (
    Program,
    ProgramError,
    position,
    referenced_tables,
    weight_specs,
)

log = logging.getLogger("dbt_sqlflow.jobs")

SELF_CHECK_TOLERANCE = 1e-6  # relative: PostgreSQL and TensorFlow both compute in float64


@dataclass
class Read:
    program: Program
    translation: object  # sql4ml.translate.Translation
    frames: Dict[str, Frame]
    timings: Dict[str, float] = field(default_factory=dict)  # milliseconds


def _undeclared_weights(ctx: JobContext, program: Program) -> None:
    """A data CTE reading an unqualified name that is no CTE and no relation: a weight not declared."""
    from sqlglot import exp

    with ctx.conn.cursor() as cur:
        for name in program.data:
            for table in program.ctes[name].find_all(exp.Table):
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


def _read_data(ctx: JobContext, program: Program) -> Dict[str, Frame]:
    """The data CTEs the translated part reads, run in PostgreSQL; NULLs are refused, named."""
    read = set().union(*(referenced_tables(s) for _, s in program.scopes())) & set(program.data)
    frames = {}
    for name in [n for n in program.data if n in read]:
        frame = read_frame(ctx.conn, program.data_sql(name))
        for column in frame.columns:
            if column.nulls is not None:
                raise InputError(
                    f"data relation {name} has {int(column.nulls.sum())} NULL(s) in column "
                    f"{column.name}: the objective cannot read NULL; filter them in {name} (where "
                    f"{column.name} is not null) or replace them (coalesce)."
                )
        frames[name] = frame
        log.debug(f"read {name}: {frame.n_rows} rows x {len(frame.columns)} columns")
    return frames


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
    return ProgramError(f"{text} (Lines count in the compiled SQL, target/compiled/.../<model>.sql.)")


class Sql4mlJob:
    """ml_train of a model written in SQL."""

    def read(self, ctx: JobContext) -> Read:
        try:
            return self._read(ctx)
        except ProgramError as error:
            raise _located(error) from None

    def _read(self, ctx: JobContext) -> Read:
        from dbt.adapters.sqlflow.sql4ml.tensors import NumpyBackend
        from dbt.adapters.sqlflow.sql4ml.translate import Translation

        started = time.perf_counter()
        program = parse(ctx.sql, ctx.options)
        if program.unused:
            log.warning(
                f"{ctx.model_name}: declared weight(s) {', '.join(program.unused)} are never read by "
                f"the prediction or the objective; they are not trained. Remove them from "
                f"config(weights=...) or use them."
            )
        _check_prediction(program, ctx.options)
        parsed = time.perf_counter()
        _undeclared_weights(ctx, program)
        frames = _read_data(ctx, program)
        read_done = time.perf_counter()
        if ctx.empty or any(f.n_rows == 0 for f in frames.values()):
            return Read(program, None, frames)
        data = {n: {c.name: c.values for c in f.columns} for n, f in frames.items()}
        translation = Translation(program, data)
        translation.evaluate(NumpyBackend(), translation.zero_weights())  # every error, before TF
        analysed = time.perf_counter()
        timings = {
            "parse_ms": 1000 * (parsed - started),
            "analysis_ms": 1000 * (analysed - read_done),
            "read_ms": 1000 * (read_done - parsed),
        }
        log.info(
            f"translated {len(program.model)} CTE(s) and the objective; read "
            f"{sum(f.n_rows for f in frames.values())} rows of {len(frames)} data relation(s)"
        )
        return Read(program, translation, frames, timings)

    def fit_and_write(self, ctx: JobContext, state: Read) -> Outcome:
        if state.translation is None:
            return _empty(ctx, state)
        fingerprint = inputs.Fingerprint()
        for frame in state.frames.values():
            fingerprint.update(frame)
        rows = sum(f.n_rows for f in state.frames.values())
        kept = steps.unchanged(ctx, fingerprint.hexdigest(), "TRAIN", rows)
        if kept:
            return kept
        return _train(ctx, state, fingerprint.hexdigest(), rows)

    def close(self, state) -> None:
        pass


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
    trained = train.fit(translation, fitting, key)
    interrupt.check()
    if not np.isfinite(trained.final):
        raise InputError(
            f"the objective became {trained.final} after {trained.epochs_run} epochs: guard logs "
            f"and divisions (ln(greatest(p, 1e-12)), a smaller learning_rate) in the program."
        )
    in_postgresql = self_check(ctx, translation, trained)
    started = time.perf_counter()
    columns = index_columns(state.program)
    code = codegen.render(translation, ctx.model_name, fitting, key, columns)
    state.timings["codegen_ms"] = 1000 * (time.perf_counter() - started)
    version = _register(ctx, state, trained, in_postgresql, input_fingerprint, rows, code)
    write_frame(ctx.conn, ctx.targets.main, weights_frame(translation, trained, version, columns, state))
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


def self_check(ctx: JobContext, translation, trained) -> float:
    """The user's own objective SELECT, run in PostgreSQL with the learned weights as VALUES."""
    from dbt.adapters.sqlflow.sql4ml.train import with_weights

    with ctx.conn.cursor() as cur:
        cur.execute(with_weights(translation, trained.weights))
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
    for name, frame in state.frames.items():
        for c in frame.columns:
            if translation.classes.find((name, c.name)) == root and c.name in translation.keys.get(name, []):
                return c.type
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
            Column.of("model_version", np.full(len(values), version, np.int32), type=WIRE_TYPES["integer"]),
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
        "self_check": {"tensorflow": trained.final, "postgresql": in_postgresql},
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
