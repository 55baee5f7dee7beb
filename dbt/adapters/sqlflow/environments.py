"""Where the PostgreSQL server comes from: one given in the profile, or an embedded one we run."""

from dbt.adapters.sqlflow import embedded
from dbt.adapters.sqlflow.embedded import DEFAULT_EMBEDDED_PATH, resolve_embedded_path

__all__ = ["DEFAULT_EMBEDDED_PATH", "Environment", "create", "resolve_embedded_path"]


class Environment:
    """Turns profile credentials into the credentials a connection is opened with."""

    def __init__(self, credentials):
        self.credentials = credentials

    def connect_credentials(self):
        raise NotImplementedError


class ServerEnvironment(Environment):
    def connect_credentials(self):
        return self.credentials


class EmbeddedEnvironment(Environment):
    def connect_credentials(self):
        path = resolve_embedded_path(self.credentials.embedded_path, None)
        server = embedded.ensure_running(path)
        return self.credentials.replace(host=server.host, port=server.port)


def create(credentials) -> Environment:
    if credentials.embedded:
        return EmbeddedEnvironment(credentials)
    return ServerEnvironment(credentials)
