"""What a job is given and what it gives back: a frozen context and an Outcome."""

from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional

from dbt.adapters.sqlflow.registry import ModelKey


@dataclass(frozen=True)
class Targets:
    """Quoted names the job writes (intermediate tables, swapped in by the materialization)."""

    main: str
    centroids: Optional[str] = None
    profile: Optional[str] = None
    global_table: Optional[str] = None  # ml_explain's <node>__global


@dataclass(frozen=True)
class JobContext:
    """Everything a job may use; the adapter builds it once per node."""

    conn: Any  # the thread's psycopg2 connection; the adapter owns its transactions
    sql: str  # the node's compiled SELECT
    options: Dict[str, Any]  # resolved by options.resolve: every key present, defaults filled in
    materialization: str
    model_name: str
    node: ModelKey  # the node's own relation: its versions are registered under it
    registry_table: str
    registry_schema: str
    targets: Targets
    unique_id: Optional[str] = None
    invocation_id: Optional[str] = None
    relation_exists: bool = False
    full_refresh: bool = False
    increment: bool = (
        False  # ml_predict merges new rows into its existing table (incremental=true)
    )
    empty: bool = False  # `dbt run --empty`: the SELECT has no rows; build the relations' shape, train nothing
    refs: Mapping[str, ModelKey] = field(default_factory=dict)  # ref'd models by node name
    artifact_dir: Optional[str] = None  # target/sqlflow: files a node writes beside dbt's own
    invoked_as: Optional[str] = None  # the dbt command that trains (for the model card)

    def model_key(self, name: str) -> ModelKey:
        """The relation of a model named in config (model=, pretrained_model=): the ref'd node's, or
        a relation of that name beside this node."""
        return self.refs.get(name) or ModelKey(self.node.database, self.node.schema, name)


@dataclass
class Outcome:
    rows: int
    version: int
    message: str
    k: int = 0
    unchanged: bool = (
        False  # the retrain policy kept the live version: the existing relations stay
    )
    rejected: bool = (
        False  # promote_if rejected the candidate (on_gate_fail='warn'): relations stay
    )
    info: Dict = field(default_factory=dict)
