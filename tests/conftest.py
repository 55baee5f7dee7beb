"""Test PostgreSQL: a fresh embedded server per session, or the server named by SQLFLOW_TEST_HOST.

    SQLFLOW_TEST_HOST=localhost SQLFLOW_TEST_PORT=5432 SQLFLOW_TEST_USER=postgres \
    SQLFLOW_TEST_PASSWORD=secret SQLFLOW_TEST_DATABASE=postgres pytest tests
"""
import os
import shutil
import tempfile

import psycopg2
import pytest

pytest_plugins = ["dbt.tests.fixtures.project"]

TEST_USERS = ["dbt_test_user_1", "dbt_test_user_2", "dbt_test_user_3"]
for i, user in enumerate(TEST_USERS, start=1):  # read by dbt-tests-adapter's grants suites
    os.environ.setdefault(f"DBT_TEST_USER_{i}", user)


def _external_server():
    host = os.environ.get("SQLFLOW_TEST_HOST")
    if not host:
        return None
    return {
        "host": host,
        "port": int(os.environ.get("SQLFLOW_TEST_PORT", "5432")),
        "user": os.environ.get("SQLFLOW_TEST_USER", "postgres"),
        "password": os.environ.get("SQLFLOW_TEST_PASSWORD", ""),
        "dbname": os.environ.get("SQLFLOW_TEST_DATABASE", "postgres"),
    }


def _create_test_roles(dsn: dict) -> None:
    conn = psycopg2.connect(**dsn)
    conn.autocommit = True
    with conn.cursor() as cur:
        for user in TEST_USERS:
            cur.execute("select 1 from pg_roles where rolname = %s", (user,))
            if not cur.fetchone():
                cur.execute(f'create role "{user}"')
    conn.close()


@pytest.fixture(scope="session")
def postgres_server():
    """Connection keywords (psycopg2) of the test server, and the dbt profile keys that reach it."""
    external = _external_server()
    if external:
        _create_test_roles(external)
        profile = {k: v for k, v in external.items() if k != "dbname"}
        yield {"dsn": external, "profile": {**profile, "dbname": external["dbname"]}}
        return

    from dbt.adapters.sqlflow import embedded

    # Not under the root user's home: the embedded server runs as another OS user.
    root = tempfile.mkdtemp(prefix="sqlflow-tests-", dir=os.environ.get("SQLFLOW_TEST_TMP", "/tmp"))
    path = os.path.join(root, "pgdata")
    info = embedded.ensure_running(path)
    dsn = {"host": info.host, "port": info.port, "user": "postgres", "password": "", "dbname": "postgres"}
    _create_test_roles(dsn)
    profile = {"embedded": True, "embedded_path": path, "user": "postgres", "dbname": "postgres"}
    yield {"dsn": dsn, "profile": profile, "path": path}
    embedded.stop(path)
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="class")
def dbt_profile_target(postgres_server):
    return {"type": "sqlflow", "threads": 4, "schema": "dbt_sqlflow_test", **postgres_server["profile"]}


@pytest.fixture
def pg_conn(postgres_server):
    """A plain psycopg2 connection in a fresh schema, rolled back and dropped afterwards."""
    conn = psycopg2.connect(**postgres_server["dsn"])
    schema = f"sqlflow_io_{os.getpid()}_{id(conn) % 100000}"
    with conn.cursor() as cur:
        cur.execute(f'create schema "{schema}"')
        cur.execute(f'set search_path to "{schema}"')
    yield conn
    conn.rollback()
    with conn.cursor() as cur:
        cur.execute(f'drop schema if exists "{schema}" cascade')
    conn.commit()
    conn.close()
