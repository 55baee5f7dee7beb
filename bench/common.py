"""What the benchmarks share: the machine line of a results table, and a throw-away embedded server."""
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
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


def write_project(root: str, data_path: str, models: dict) -> str:
    """A dbt project on the embedded server at data_path, with the given models plus `startup`, a one-row
    view whose `dbt run` measures dbt's own start-up."""
    project = os.path.join(root, "project")
    os.makedirs(os.path.join(project, "models"))
    with open(os.path.join(project, "dbt_project.yml"), "w") as f:
        f.write("name: bench\nversion: '1.0'\nconfig-version: 2\nprofile: bench\n")
    with open(os.path.join(project, "profiles.yml"), "w") as f:
        f.write(textwrap.dedent(f"""\
            bench:
              target: dev
              outputs:
                dev: {{type: sqlflow, embedded: true, embedded_path: "{data_path}", schema: public, threads: 1}}
            """))
    for name, sql in {"startup": "{{ config(materialized='view') }} select 1 as one", **models}.items():
        with open(os.path.join(project, "models", f"{name}.sql"), "w") as f:
            f.write(sql)
    return project


def run_child(script: str, *args):
    """(seconds, stdout) of `CHILDREN[args[0]](*args[1:])` of bench/<script>.py in a fresh process, which
    also prints its peak RSS as `MAXRSS <kB>`."""
    here = os.path.dirname(os.path.abspath(__file__))
    code = (f"import resource, sys; sys.path.insert(0, {here!r}); import {script}; "
            f"{script}.CHILDREN[sys.argv[1]](*sys.argv[2:]); "
            "print('MAXRSS', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if out.returncode:
        raise SystemExit(out.stdout[-3000:] + out.stderr[-3000:])
    return seconds, out.stdout


def peak_rss_mb(stdout: str) -> float:
    return int([line for line in stdout.splitlines() if line.startswith("MAXRSS")][-1].split()[1]) / 1024


def dbt_run(project_dir: str, select: str) -> None:
    """`dbt run -s select` of a project written by write_project, in this process."""
    from dbt.cli.main import dbtRunner

    if not dbtRunner().invoke(["run", "-s", select, "--project-dir", project_dir,
                               "--profiles-dir", project_dir]).success:
        raise SystemExit(f"dbt run -s {select} failed")


def make_points(dsn: str, rows: int, n_features: int, label: str) -> None:
    """Table `points`: id, x0..x{n-1} uniform with growing spread (seeded), and boolean y = label
    (a SQL expression over the x columns) plus uniform noise > 0."""
    import psycopg2

    cols = ", ".join(f"(random() - 0.5) * {i + 1} as x{i}" for i in range(n_features))
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("select setseed(0.25)")
        cur.execute(f"create table points as select g::bigint as id, {cols} from generate_series(1, {rows}) g")
        cur.execute("alter table points add column y boolean")
        cur.execute(f"update points set y = ({label}) + (random() - 0.5) > 0")
        cur.execute("vacuum analyze points")
    conn.close()
