from dbt.adapters.base import AdapterPlugin

from dbt.adapters.sqlflow.connections import SqlflowConnectionManager, SqlflowCredentials  # noqa: F401
from dbt.adapters.sqlflow.impl import SqlflowAdapter
from dbt.include import sqlflow

Plugin = AdapterPlugin(
    adapter=SqlflowAdapter,  # type: ignore[arg-type]
    credentials=SqlflowCredentials,
    include_path=sqlflow.PACKAGE_PATH,
    dependencies=["postgres"],
)
