from dataclasses import dataclass
from typing import Any, Dict, Optional

from dbt.adapters.contracts.connection import AdapterResponse
from dbt.adapters.events.logging import AdapterLogger
from dbt.adapters.postgres.connections import PostgresConnectionManager, PostgresCredentials

from dbt.adapters.sqlflow import environments, interrupt

logger = AdapterLogger("Sqlflow")

# With `embedded: true` the server is ours: these keys describe it, so a profile may omit them.
_EMBEDDED_DEFAULTS: Dict[str, Any] = {
    "host": "",
    "port": 5432,
    "user": "postgres",
    "password": "",
    "database": "postgres",
    "embedded_path": environments.DEFAULT_EMBEDDED_PATH,
}


@dataclass
class SqlflowAdapterResponse(AdapterResponse):
    """An ML node's outcome in run_results.json (`adapter_response`), where orchestrators read it as
    metadata: the model version trained or used, its type, when it was trained, and its key metrics."""

    model_name: Optional[str] = None
    model_version: Optional[int] = None
    model_type: Optional[str] = None
    trained_at: Optional[str] = None
    training_rows: Optional[int] = None
    metrics: Optional[Dict[str, float]] = None


@dataclass
class SqlflowCredentials(PostgresCredentials):
    embedded: bool = False
    embedded_path: Optional[str] = None
    registry_schema: Optional[str] = None
    # the target's default engine for the models it can run (a node's config overrides it)
    engine: Optional[str] = None
    dask_scheduler: Optional[str] = None
    tf_cluster: Optional[Any] = None
    tf_launcher: Optional[str] = None

    @property
    def type(self):
        return "sqlflow"

    @property
    def unique_field(self):
        return self.embedded_path if self.embedded else self.host

    @classmethod
    def translate_aliases(cls, kwargs: Dict[str, Any], recurse: bool = False) -> Dict[str, Any]:
        # dbt validates the profile right after this hook, so the embedded defaults go in here.
        data = super().translate_aliases(kwargs, recurse)
        if data.get("embedded"):
            data = {**_EMBEDDED_DEFAULTS, **data}
        return data

    def _connection_keys(self):
        keys = super()._connection_keys()
        if self.embedded:
            keys = tuple(k for k in keys if k not in ("host", "port"))
        return keys + ("embedded", "embedded_path", "registry_schema", "engine", "dask_scheduler")


class SqlflowConnectionManager(PostgresConnectionManager):
    TYPE = "sqlflow"

    def __init__(self, profile, mp_context):
        super().__init__(profile, mp_context)
        credentials = profile.credentials
        if credentials.embedded:
            # Resolve the data folder once, beside dbt_project.yml, before any thread connects.
            project_root = getattr(profile, "project_root", None)
            credentials.embedded_path = environments.resolve_embedded_path(
                credentials.embedded_path, project_root
            )

    def commit_and_continue(self) -> None:
        """Commit the thread's transaction and carry on in a new one. dbt-postgres sends COMMIT as
        SQL and has no BEGIN (psycopg2 begins implicitly), so after its commit() the next statements
        would run outside any transaction; psycopg2's own commit() begins anew with the next one."""
        connection = self.get_thread_connection()
        logger.debug(f"On {connection.name}: COMMIT (end of the read phase)")
        connection.handle.commit()
        connection.transaction_open = True

    def cancel_open(self):
        # Ctrl-C: dbt cancels the other threads' queries; a thread inside a fit learns it from this flag
        interrupt.request()
        return super().cancel_open()

    @classmethod
    def get_credentials(cls, credentials):
        return environments.create(credentials).connect_credentials()
