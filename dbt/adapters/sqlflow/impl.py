from dataclasses import dataclass

from dbt.adapters.postgres.impl import PostgresAdapter, PostgresConfig

from dbt.adapters.sqlflow import log_bridge
from dbt.adapters.sqlflow.connections import SqlflowConnectionManager


@dataclass
class SqlflowConfig(PostgresConfig):
    """Adapter-specific model configs; the ML keys join here as the materializations land."""


class SqlflowAdapter(PostgresAdapter):
    ConnectionManager = SqlflowConnectionManager
    AdapterSpecificConfigs = SqlflowConfig
    connections: SqlflowConnectionManager


log_bridge.install()
