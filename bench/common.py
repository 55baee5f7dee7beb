"""What the benchmarks share: the machine line of a results table, and a throw-away embedded server."""
import os
import platform
import shutil
import tempfile
from contextlib import contextmanager


def machine() -> str:
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    return f"{platform.machine()}, {os.cpu_count()} cores, {cpu}, Python {platform.python_version()}"


@contextmanager
def temporary_server():
    """A fresh embedded PostgreSQL under /tmp: yields (data folder, libpq DSN); stopped and removed after."""
    from dbt.adapters.sqlflow import embedded

    root = tempfile.mkdtemp(prefix="sqlflow-bench-", dir="/tmp")
    path = os.path.join(root, "pgdata")
    info = embedded.ensure_running(path)
    try:
        yield path, f"host={info.host} port={info.port} user=postgres dbname=postgres"
    finally:
        embedded.stop(path)
        shutil.rmtree(root, ignore_errors=True)
