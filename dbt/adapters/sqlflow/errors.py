"""The errors a user can fix. Every layer raises these (none imports dbt); `impl.py` maps them to a
dbt error that names the model, so a node ends with one readable line and never a traceback."""


class SqlflowError(Exception):
    """A problem with the node's config, data or stored model: the message says what to change."""


class OptionError(SqlflowError, ValueError):
    """A config key or value is wrong; the message names the key and what to write instead."""


class InputError(SqlflowError, ValueError):
    """The SELECT's columns or rows do not fit the node's config."""


class EncodingError(SqlflowError, ValueError):
    """A feature column cannot be encoded (NULLs with null_handling='error', NaN, too many states)."""


class ClusteringError(SqlflowError, ValueError):
    """k and the data disagree (more clusters than rows, no cluster left after minimum_support)."""


class TargetError(SqlflowError, ValueError):
    """The label column cannot be learned (NULLs, one class, a type the model cannot predict)."""


class RegistryError(SqlflowError, LookupError):
    """The model or version asked for is not in the registry."""


class ArtifactError(SqlflowError):
    """A stored artifact cannot be read safely; the model must be retrained."""

    def __init__(self, model_name: str = "the model", version: object = "?", reason: str = ""):
        self.model_name, self.version, self.reason = model_name, version, reason
        super().__init__(
            f"the stored artifact of {model_name} v{version} is unreadable or unsafe"
            f"{' (' + reason + ')' if reason else ''}; retrain it "
            f"(dbt run -s {model_name} --full-refresh), or promote another version."
        )


class Rejected(SqlflowError):
    """A trained candidate failed a promote_if gate: it is registered as rejected, nothing swapped."""

    def __init__(self, version: int, live: object, failures: list):
        self.version, self.live, self.failures = version, live, failures
        kept = f"v{live} stays live" if live else "no version is live"
        super().__init__(
            f"v{version} was not promoted ({'; '.join(failures)}), so it is registered as rejected "
            f"and {kept} with its tables. Review it with ml_versions(ref(...)); promote it anyway "
            f"with dbt run-operation sqlflow_promote, or change promote_if."
        )


class Cancelled(SqlflowError):
    """dbt was interrupted (Ctrl-C): the job stopped between steps and wrote nothing."""


class EngineError(SqlflowError):
    """A distributed engine cannot be reached, or lost a worker mid-job: the message names the
    engine, the address or worker, and what to check."""
