import traceback
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional

import psycopg2
from dbt.adapters.base import BaseRelation, available
from dbt.adapters.contracts.connection import AdapterResponse
from dbt.adapters.contracts.relation import RelationType
from dbt.adapters.events.logging import AdapterLogger
from dbt.adapters.postgres.impl import PostgresAdapter, PostgresConfig
from dbt_common.exceptions import DbtDatabaseError, DbtRuntimeError

from dbt.adapters.sqlflow import log_bridge
from dbt.adapters.sqlflow.connections import SqlflowAdapterResponse, SqlflowConnectionManager

MAX_IDENTIFIER = 63
# the adapter_response code of each node kind
CODES = {
    "cluster": "CLUSTER",
    "ml_train": "TRAIN",
    "ml_predict": "PREDICT",
    "ml_explain": "EXPLAIN",
    "ml_evaluate": "EVALUATE",
    "table": "SELECT",
}
logger = AdapterLogger("Sqlflow")


@dataclass
class SqlflowConfig(PostgresConfig):
    """Adapter-specific model configs; the ML keys themselves are checked by options.resolve."""


class SqlflowAdapter(PostgresAdapter):
    ConnectionManager = SqlflowConnectionManager
    AdapterSpecificConfigs = SqlflowConfig
    connections: SqlflowConnectionManager

    @available
    def sqlflow_side_identifier(self, identifier: str, suffix: str) -> str:
        """`<identifier>__<suffix>`, shortened with a hash when PostgreSQL's 63 characters are exceeded."""
        name = f"{identifier}__{suffix}"
        if len(name) <= MAX_IDENTIFIER:
            return name
        import hashlib

        digest = hashlib.md5(identifier.encode()).hexdigest()[:8]
        keep = MAX_IDENTIFIER - len(suffix) - len(digest) - 3
        return f"{identifier[:keep]}_{digest}__{suffix}"

    @available
    def sqlflow_registry_schema(self) -> str:
        credentials = self.config.credentials
        return credentials.registry_schema or credentials.schema

    @available
    def sqlflow_options(self, materialization: str, config: Dict, model_name: str) -> Dict:
        """The node's ML options, validated, with defaults (fails the node on a bad key or value)."""
        from dbt.adapters.sqlflow import options

        try:
            return options.resolve(materialization, dict(config), model_name)
        except options.OptionError as exc:
            raise DbtRuntimeError(str(exc)) from exc

    @available
    def sqlflow_statement(self, model: Dict, sql: str, refs: Dict[str, Dict]) -> Dict:
        """materialized='sqlflow': the SELECT, the materialization its SQLFlow clause stands for,
        and that node's validated options (fails the node on a clause it cannot honour)."""
        from dbt.adapters.sqlflow import statements
        from dbt.adapters.sqlflow.errors import SqlflowError

        name = model["name"]
        try:
            found, config = statements.compile_statement(
                sql, name, model.get("alias"), dict(model["config"]), refs
            )
        except SqlflowError as exc:
            raise DbtRuntimeError(f"{name}: {exc}") from exc
        table = found.materialization == "table"
        return {
            "materialization": found.materialization,
            "sql": found.sql,
            "options": {} if table else self.sqlflow_options(found.materialization, config, name),
            "side_suffixes": found.side_suffixes,
        }

    def __init__(self, config, mp_context) -> None:
        super().__init__(config, mp_context)
        from dbt.adapters.sqlflow import interrupt

        interrupt.reset()  # a new invocation: an earlier Ctrl-C in this process is over

    @available
    def sqlflow_run(
        self,
        materialization: str,
        model: Dict,
        sql: str,
        targets: Dict[str, Optional[str]],
        relation: BaseRelation,
        refs: Optional[Dict[str, Dict]] = None,
        invocation_id: Optional[str] = None,
        relation_exists: bool = False,
        full_refresh: bool = False,
        empty: bool = False,
        increment: bool = False,
        statement: Optional[Dict] = None,
    ) -> AdapterResponse:
        """Train (or score) the node into the intermediate tables named by `targets`: the job's read
        phase, a commit (so no lock is held while it trains), then its fit-and-write phase, which the
        materialization swaps in and commits."""
        from dbt.adapters.sqlflow import jobs, registry
        from dbt.adapters.sqlflow.jobs.context import JobContext, Targets

        _keep_ctrl_c_for_the_main_thread()
        if statement:  # materialized='sqlflow': the clause's SELECT and options
            sql, options = statement["sql"], statement["options"]
        else:
            options = self.sqlflow_options(materialization, model["config"], model["name"])
        schema = self.sqlflow_registry_schema()
        connection = self.connections.get_thread_connection()
        # dbt's commit at the end expects the transaction it began
        if not connection.transaction_open:
            self.connections.begin()
        ctx = JobContext(
            conn=connection.handle,
            sql=sql,
            options=options,
            materialization=materialization,
            model_name=model["name"],
            unique_id=model.get("unique_id"),
            node=registry.ModelKey(relation.database, relation.schema, relation.identifier),
            registry_table=registry.table_name(schema, self.config.credentials.database),
            registry_schema=schema,
            targets=Targets(
                **{("global_table" if k == "global" else k): v for k, v in targets.items()}
            ),
            invocation_id=invocation_id,
            relation_exists=relation_exists,
            full_refresh=full_refresh,
            empty=empty,
            increment=increment,
            refs={
                name: registry.ModelKey(r["database"], r["schema"], r["identifier"])
                for name, r in (refs or {}).items()
            },
            artifact_dir=self._artifact_dir(),
            invoked_as=_invoked_as(),
        )
        if materialization in ("cluster", "ml_train") and not empty:
            _prefetch_card_imports()
        try:
            with self._user_facing_errors(model["name"]):
                job = jobs.for_node(
                    materialization,
                    options.get("model_type"),
                    self._engine(materialization, model, options),
                )
                ctx = jobs.prepared(ctx)
                state = job.read(ctx)
                try:
                    self.connections.commit_and_continue()  # the read phase (and in-tx pre-hooks) ends here
                    outcome = self._fit_and_write(job, ctx, state)
                finally:
                    job.close(state)
        except BaseException:
            self._unlock_after_failure(relation)
            raise
        code = CODES[materialization]
        code = "REJECTED" if outcome.rejected else "UNCHANGED" if outcome.unchanged else code
        model_key = ctx.model_key(options["model"]) if "model" in options else ctx.node
        return self._response(ctx, model_key, outcome, code)

    def _engine(self, materialization: str, model: Dict, options: Dict):
        """Where the node runs: its engine config, else the profile's default for the target."""
        from dbt.adapters.sqlflow import engines

        credentials = self.config.credentials
        defaults = {k: getattr(credentials, k, None) for k in engines.ENGINE_KEYS}
        where = f"model '{model['name']}' (materialized='{materialization}')"
        return engines.choose(where, materialization, options, defaults)

    def _response(self, ctx, model_key, outcome, code: str) -> AdapterResponse:
        """The outcome with the version's facts, for run_results.json's adapter_response."""
        from dbt.adapters.sqlflow import facts, registry

        found = (
            registry.summary(ctx.conn, ctx.registry_table, model_key, outcome.version)
            if outcome.version
            else None
        )
        if found is None:
            return SqlflowAdapterResponse(
                _message=outcome.message, code=code, rows_affected=outcome.rows
            )
        metrics = {
            name: float(value)
            for name, _, value, _ in facts.key_metrics(
                found["model_type"], found["parameters"], found["metrics"]
            )
        }
        return SqlflowAdapterResponse(
            _message=outcome.message,
            code=code,
            rows_affected=outcome.rows,
            model_name=found["model_name"],
            model_version=outcome.version,
            model_type=found["model_type"],
            trained_at=found["trained_at"].isoformat(),
            training_rows=found["row_count"],
            metrics=metrics,
        )

    def _fit_and_write(self, job, ctx, state):
        """The write phase. A candidate rejected by promote_if has written nothing but its registry
        row, which is committed alone; then the node fails or, with on_gate_fail='warn', keeps the
        live version's tables (the materialization swaps nothing)."""
        from dbt.adapters.sqlflow.errors import Rejected
        from dbt.adapters.sqlflow.jobs.context import Outcome

        try:
            return job.fit_and_write(ctx, state)
        except Rejected as rejected:
            self.connections.commit_and_continue()
            if ctx.options.get("on_gate_fail") != "warn":
                raise
            logger.warning(f"{ctx.model_name}: {rejected}")
            return Outcome(0, rejected.version, f"REJECTED v{rejected.version}", rejected=True)

    @available
    def sqlflow_lock(self, relation: BaseRelation) -> bool:
        """One build of an ML model at a time, across dbt processes: a session advisory lock on its
        relation, held until the swap commits (sqlflow_unlock). Returns whether it had to wait, in
        which case the relation cache may be stale (the other process may have created the table)."""
        from dbt.adapters.sqlflow import node_lock

        handle = self.connections.get_thread_connection().handle
        return node_lock.acquire(handle, relation.render(), relation.identifier, logger.info)

    @available
    def sqlflow_unlock(self, relation: BaseRelation) -> str:
        from dbt.adapters.sqlflow import node_lock

        node_lock.release(self.connections.get_thread_connection().handle, relation.render())
        return ""

    def _unlock_after_failure(self, relation: BaseRelation) -> None:
        from dbt.adapters.sqlflow import node_lock

        node_lock.release_after_failure(
            self.connections.get_thread_connection().handle, relation.render()
        )

    @available
    def sqlflow_current_relation(self, relation: BaseRelation) -> Optional[BaseRelation]:
        """The relation as the catalog has it now (not the run's cache), added to the cache."""
        from dbt.adapters.sqlflow.node_lock import relation_kind

        handle = self.connections.get_thread_connection().handle
        kind = relation_kind(handle, relation.schema, relation.identifier)
        if kind is None:
            return None
        found = self.Relation.create(
            database=relation.database,
            schema=relation.schema,
            identifier=relation.identifier,
            type=RelationType(kind),
        )
        self.cache_added(found)
        return found

    @available
    def sqlflow_promote(
        self, relation: BaseRelation, model_name: str, version, invocation_id: Optional[str]
    ) -> str:
        """`dbt run-operation sqlflow_promote`: make a registered version live, committed here."""
        from dbt.adapters.sqlflow import registry
        from dbt.adapters.sqlflow.jobs import promotion

        table, key = self._registry_of(relation)
        _check_version(model_name, version, "sqlflow_promote")
        connection = self.connections.get_thread_connection()
        with self._user_facing_errors(model_name):
            registry.ensure(connection.handle, table, self.sqlflow_registry_schema())
            previous = registry.promote(
                connection.handle, table, key, version, invocation_id, model_name
            )
            rewritten = previous != version and promotion.rewrite_weights(
                connection.handle,
                key,
                registry.load(connection.handle, table, key, version, model_name),
                registry.materialization_of(connection.handle, table, key, version) or "",
            )
            connection.handle.commit()
        if previous == version:
            return f"{model_name}: v{version} is already live."
        table_note = (
            f"its weights table holds v{version}'s weights"
            if rewritten
            else f"the {relation.identifier} relation keeps what its last build wrote until the next build"
        )
        return (
            f"{model_name}: v{version} is live (was v{previous}); {table_note}; ml_predict and "
            f"the scoring macros use it from their next run."
        )

    @available
    def sqlflow_drift_sql(
        self,
        relation: BaseRelation,
        model_relation: BaseRelation,
        model_name: str,
        threshold: float = 0.2,
        features: Optional[List[str]] = None,
    ) -> str:
        """The `sqlflow_drift` test's SELECT: features of `relation` whose PSI against the live
        version's training profile is above `threshold`."""
        from dbt.adapters.sqlflow import drift_sql, registry
        from dbt.adapters.sqlflow.data import describe

        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or threshold < 0:
            raise DbtRuntimeError(
                f"{model_name}: sqlflow_drift's threshold is a PSI >= 0 (0.1 a shift to watch, 0.2 a "
                f"changed population), got {threshold!r}."
            )
        table, key = self._registry_of(model_relation)
        handle = self.connections.get_thread_connection().handle
        with self._user_facing_errors(model_name):
            live = registry.load(handle, table, key, None, model_name=model_name)
            profiled = drift_sql.profiled(live.features, model_name, live.version, features)
            columns = [c.name for c in describe(handle, f"select * from {relation}")]
            kinds = live.features.get("kinds", {})
            return drift_sql.psi_select(str(relation), profiled, kinds, columns, threshold)

    @available
    def sqlflow_export(
        self,
        relation: BaseRelation,
        model_name: str,
        version=None,
        format: str = "onnx",
        path: Optional[str] = None,
        input: Optional[str] = None,
    ) -> str:
        """`dbt run-operation sqlflow_export`: write a version as ONNX or as a SQL view definition."""
        import os

        from dbt.adapters.sqlflow import export, registry
        from dbt.adapters.sqlflow.data import describe

        if format not in ("onnx", "sql"):
            raise DbtRuntimeError(f"{model_name}: format must be 'onnx' or 'sql', got {format!r}.")
        if format == "sql" and not input:
            raise DbtRuntimeError(
                f"{model_name}: format: sql scores a relation: add input: <schema.table> to --args."
            )
        if version is not None:
            _check_version(model_name, version, "sqlflow_export")
        table, key = self._registry_of(relation)
        handle = self.connections.get_thread_connection().handle
        with self._user_facing_errors(model_name):
            trained = registry.load(handle, table, key, version, model_name=model_name)
            name = f"{model_name}_v{trained.version}"
            path = path or os.path.join(
                self._artifact_dir() or "target", "exports", f"{name}.{format}"
            )
            if format == "onnx":
                data = export.onnx_bytes(trained)
            else:
                columns = [c.name for c in describe(handle, f"select * from {input}")]
                view = f"{relation.schema}.{name}_scoring"
                data = export.sql_view(trained, view, input, columns, {}).encode()
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
        return f"{model_name}: v{trained.version} written as {format} to {path}"

    @available
    def sqlflow_card(
        self,
        relation: BaseRelation,
        model_name: str,
        version=None,
        missing_only: bool = False,
        background: bool = False,
    ) -> str:
        """Write the model card of a version (default: the live one) and the index, from the registry.
        After a node's commit, in the `background` while the DAG goes on (cleanup_connections waits
        for it); a card that cannot be written is a warning, never a failed node."""
        import os

        from dbt.adapters.sqlflow import cards, registry

        directory = os.path.join(self._artifact_dir() or "target", "cards")
        path = os.path.join(directory, f"{model_name}.html")
        if missing_only and os.path.exists(path):
            return ""
        table, key = self._registry_of(relation)
        handle = self.connections.get_thread_connection().handle

        def failed(exc: Exception) -> None:
            logger.debug("".join(traceback.format_exception(exc)))
            logger.warning(f"{model_name}: no model card written ({type(exc).__name__}: {exc})")

        try:
            trained = registry.load(handle, table, key, version, model_name=model_name)
            versions = registry.versions(handle, table, key)
            handle.commit()  # the reads above opened a transaction
            if background:
                cards.write_card_later(directory, trained, versions, failed, logger.debug)
            else:
                cards.write_card(directory, trained, versions)
        except Exception as exc:  # the model is trained and stored either way
            handle.rollback()
            failed(exc)
            return ""
        return path

    def cleanup_connections(self) -> None:
        """The end of an invocation: model cards still being drawn are written first."""
        import sys

        cards = sys.modules.get("dbt.adapters.sqlflow.cards")  # not imported: none were written
        if cards is not None:
            cards.wait()
        super().cleanup_connections()

    @available
    def sqlflow_cards(self, nodes: List[Dict], model=None, version=None) -> str:
        """`dbt run-operation sqlflow_cards`: every ML model's card (or one model's, at `version`)
        rebuilt from the registry, and the index."""
        if version is not None:
            _check_version(model or "sqlflow_cards", version, "sqlflow_cards")
        written, missing = [], []
        for node in nodes:
            if model and node["name"] != model:
                continue
            relation = self.Relation.create(
                database=node["database"], schema=node["schema"], identifier=node["identifier"]
            )
            table, key = self._registry_of(relation)
            handle = self.connections.get_thread_connection().handle
            if not self._has_versions(handle, table, key):
                if node.get("trains", True):  # a sqlflow node may predict or explain instead
                    missing.append(node["name"])
                continue
            if self.sqlflow_card(relation, node["name"], version):
                written.append(node["name"])
        if model and not written and not missing:
            raise DbtRuntimeError(f"sqlflow_cards: no ML model named '{model}' in this project.")
        note = f"; not trained yet: {', '.join(missing)}" if missing else ""
        return f"sqlflow_cards: {len(written)} card(s) written{note}"

    def _has_versions(self, handle, table: str, key) -> bool:
        from dbt.adapters.sqlflow import registry

        found = bool(registry.versions(handle, table, key))
        handle.commit()
        return found

    @available
    def sqlflow_catalog_stats(self, table, database: str):
        """The catalog table of `dbt docs generate` with each ML node's model facts as table stats."""
        from dbt.adapters.sqlflow import catalog, registry

        handle = self.connections.get_thread_connection().handle
        registry_table = registry.table_name(self.sqlflow_registry_schema(), database)
        live = {
            (r["relation_schema"].lower(), r["relation_identifier"].lower()): r
            for r in registry.live_versions(handle, registry_table)
            if r["relation_database"].lower() == database.lower()
        }
        return catalog.with_model_stats(table, live)

    @classmethod
    def _catalog_filter_table(cls, table, used_schemas):
        """dbt-adapters' filter, with the ML stats kept as text: its type tester would read 'v3'
        as the number 3.0 and '19,374 rows' as 19374.0."""
        from dbt.adapters.base.impl import _catalog_filter_schemas
        from dbt_common.clients.agate_helper import table_from_rows

        text = [
            "table_database",
            "table_schema",
            "table_name",
            "table_type",
            "table_comment",
            "table_owner",
            "column_name",
            "column_type",
            "column_comment",
        ] + [c for c in table.column_names if c.startswith("stats:sqlflow") and "include" not in c]
        table = table_from_rows(table.rows, table.column_names, text_only_columns=text)
        return table.where(_catalog_filter_schemas(used_schemas))

    def _registry_of(self, relation: BaseRelation):
        """(the registry table, the key its rows of `relation` carry)."""
        from dbt.adapters.sqlflow import registry

        table = registry.table_name(
            self.sqlflow_registry_schema(), self.config.credentials.database
        )
        return table, registry.ModelKey(relation.database, relation.schema, relation.identifier)

    def _artifact_dir(self) -> Optional[str]:
        """`<project>/target/sqlflow`, where nodes write files beside dbt's own artifacts."""
        import os

        root, target = (
            getattr(self.config, "project_root", None),
            getattr(self.config, "target_path", None),
        )
        return os.path.join(root, target, "sqlflow") if root and target else None

    @available
    def sqlflow_stale_side_tables(
        self, relation: BaseRelation, suffixes: List[str]
    ) -> List[BaseRelation]:
        """Side tables a cluster build left beside a relation that is now built otherwise: the registry
        must say the relation was a cluster model, so a user's own `x__profile` table is never touched."""
        from dbt.adapters.sqlflow import registry

        found = [
            self.get_relation(
                relation.database,
                relation.schema,
                self.sqlflow_side_identifier(relation.identifier, s),
            )
            for s in suffixes
        ]
        found = [r for r in found if r is not None]
        if not found:
            return []
        table, key = self._registry_of(relation)
        handle = self.connections.get_thread_connection().handle
        return found if registry.trained_with_side_tables(handle, table, key) else []

    @contextmanager
    def _user_facing_errors(self, model_name: str) -> Iterator[None]:
        """Our errors become one dbt error line naming the model; a bug keeps its traceback in the log."""
        from dbt.adapters.sqlflow.errors import SqlflowError

        try:
            yield
        except SqlflowError as exc:  # Cancelled (Ctrl-C) included
            raise DbtRuntimeError(f"{model_name}: {exc}") from exc
        except psycopg2.Error as exc:
            raise DbtDatabaseError(f"{model_name}: {str(exc).strip()}") from exc
        except (DbtRuntimeError, KeyboardInterrupt):
            raise
        except (
            Exception
        ) as exc:  # a bug of ours: still one readable line, the traceback in the debug log
            logger.debug(traceback.format_exc())
            raise DbtRuntimeError(
                f"{model_name}: dbt-sqlflow failed with {type(exc).__name__}: {exc}. "
                f"This is a bug; the traceback is in logs/dbt.log."
            ) from exc


def _check_version(model_name: str, version, operation: str) -> None:
    if isinstance(version, bool) or not isinstance(version, int):
        raise DbtRuntimeError(
            f"{model_name}: version must be a version number (--args '{{model: {model_name}, "
            f"version: 3}}' for {operation}), got {version!r}."
        )


def _prefetch_card_imports() -> None:
    """Import matplotlib (for the model card written after the build) while the job reads and fits:
    its 0.4 s of imports then overlap with waiting on PostgreSQL and with numerical work."""
    import sys
    import threading

    if "matplotlib.figure" in sys.modules:
        return

    def load() -> None:
        try:
            import matplotlib.figure  # noqa: F401
        except Exception:  # the card reports it, if it is still missing then
            pass

    threading.Thread(target=load, name="sqlflow-card-imports", daemon=True).start()


def _invoked_as() -> Optional[str]:
    """The dbt command of this invocation (`dbt build -s +churn_model`), for the model card."""
    try:
        from dbt.flags import get_flags

        flags = get_flags()
        command = ["dbt", str(getattr(flags, "WHICH", "") or "")]
        for name, option in (("SELECT", "-s"), ("EXCLUDE", "--exclude")):
            values = getattr(flags, name, None)
            if values:
                command += [option, " ".join(values)]
        return " ".join(c for c in command if c)
    except Exception:  # not run by dbt-core's CLI
        return None


def _keep_ctrl_c_for_the_main_thread() -> None:
    """Block SIGINT in this worker thread, and so in the threads TensorFlow starts from it. Python
    handles signals in the main thread only; delivered to a thread that does not block it, Ctrl-C
    would leave dbt's main thread waiting on the node (seen once in CI: the first Ctrl-C ignored)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread() and hasattr(
        signal, "pthread_sigmask"
    ):
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})


log_bridge.install()
