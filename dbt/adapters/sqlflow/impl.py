import traceback
from dataclasses import dataclass
from typing import Dict, Optional

import psycopg2
from dbt.adapters.base import available
from dbt.adapters.contracts.connection import AdapterResponse
from dbt.adapters.events.logging import AdapterLogger
from dbt.adapters.postgres.impl import PostgresAdapter, PostgresConfig
from dbt_common.exceptions import DbtDatabaseError, DbtRuntimeError

from dbt.adapters.sqlflow import log_bridge
from dbt.adapters.sqlflow.connections import SqlflowConnectionManager

MAX_IDENTIFIER = 63
logger = AdapterLogger("Sqlflow")


@dataclass
class SqlflowConfig(PostgresConfig):
    """Adapter-specific model configs; the ML keys themselves are checked by options.resolve."""


def _user_errors():
    # the dbt-free layers raise these for bad config or data; imported lazily with them
    from dbt.adapters.sqlflow.data import DuplicateColumnError, UnsupportedTypeError
    from dbt.adapters.sqlflow.jobs.inputs import InputError
    from dbt.adapters.sqlflow.ml.clustering import ClusteringError
    from dbt.adapters.sqlflow.ml.preprocess import EncodingError
    from dbt.adapters.sqlflow.ml.supervised import TargetError
    from dbt.adapters.sqlflow.options import OptionError
    from dbt.adapters.sqlflow.registry import RegistryError

    return (DuplicateColumnError, UnsupportedTypeError, InputError, ClusteringError, EncodingError,
            OptionError, RegistryError, TargetError)


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
    def sqlflow_run(self, materialization: str, model: Dict, sql: str, targets: Dict[str, Optional[str]],
                    relation: str, invocation_id: Optional[str] = None,
                    relation_exists: bool = False) -> AdapterResponse:
        """Train (or score) the node into the intermediate tables named by `targets`."""
        from dbt.adapters.sqlflow import registry
        from dbt.adapters.sqlflow.jobs import cluster, predict, train
        from dbt.adapters.sqlflow.options import KERAS_TYPES

        options = self.sqlflow_options(materialization, model["config"], model["name"])
        schema = self.sqlflow_registry_schema()
        table = registry.table_name(schema, self.config.credentials.database)
        connection = self.connections.get_thread_connection()
        if not connection.transaction_open:  # dbt's commit at the end expects the transaction it began
            self.connections.begin()
        conn = connection.handle
        try:
            if materialization == "ml_predict":
                outcome = predict.run(conn, sql, options, targets["main"], table)
            elif options["model_type"] in KERAS_TYPES:
                outcome = train.run(conn, sql, options, targets["main"], model["name"], table, schema,
                                    relation, invocation_id, relation_exists)
            else:
                outcome = cluster.run(conn, sql, options, cluster.Targets(**targets), model["name"],
                                      materialization, table, schema, relation, invocation_id, relation_exists)
        except _user_errors() as exc:
            raise DbtRuntimeError(f"{model['name']}: {exc}") from exc
        except psycopg2.Error as exc:
            raise DbtDatabaseError(f"{model['name']}: {str(exc).strip()}") from exc
        except (DbtRuntimeError, KeyboardInterrupt):
            raise
        except Exception as exc:  # a bug of ours: still one readable line, the traceback in the debug log
            logger.debug(traceback.format_exc())
            raise DbtRuntimeError(f"{model['name']}: dbt-sqlflow failed with {type(exc).__name__}: {exc}. "
                                  f"This is a bug; the traceback is in logs/dbt.log.") from exc
        code = {"cluster": "CLUSTER", "ml_train": "TRAIN", "ml_predict": "PREDICT"}[materialization]
        code = "UNCHANGED" if getattr(outcome, "unchanged", False) else code
        return AdapterResponse(_message=outcome.message, code=code, rows_affected=outcome.rows)


log_bridge.install()
