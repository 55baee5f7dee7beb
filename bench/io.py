"""Read and write throughput of the COPY binary data path against the usual Python routes.

    python bench/io.py [--rows 1000000] [--repeat 3] [--dsn "host=... dbname=..."]

Without --dsn a fresh embedded PostgreSQL is started in a temporary folder. Every method moves the
same table (bigint id + 10 float8) on the same server in the same run; each is timed --repeat times
and the best time is kept. Prints a Markdown table for bench/RESULTS.md.
"""
import argparse
import datetime as dt
import time
import warnings
from contextlib import ExitStack

import psycopg2
import psycopg2.extras

from common import machine, temporary_server
from dbt.adapters.sqlflow.data import read_frame, write_frame

N_FLOATS = 10
SOURCE = "bench_io_source"


def make_source(conn, rows):
    floats = ", ".join(f"random() as x{i}" for i in range(N_FLOATS))
    with conn.cursor() as cur:
        cur.execute(f"drop table if exists {SOURCE}")
        cur.execute(f"select setseed(0.42); create table {SOURCE} as "
                    f"select g::bigint as id, {floats} from generate_series(1, {rows}) g")
        cur.execute(f"vacuum analyze {SOURCE}") if conn.autocommit else None
    conn.commit()


def sqlalchemy_engine(conn):
    import sqlalchemy

    params = conn.get_dsn_parameters()
    return sqlalchemy.create_engine("postgresql+psycopg2://", creator=lambda: psycopg2.connect(**{
        k: v for k, v in params.items() if k in ("host", "port", "user", "dbname")
    }))


def timed(fn, repeat):
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def read_methods(conn):
    import pandas as pd

    query = f"select * from {SOURCE}"

    def ours():
        assert read_frame(conn, query).n_rows

    def pandas_read_sql():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pandas prefers SQLAlchemy; a DBAPI connection is what users pass
            pd.read_sql(query, conn)

    def fetchall():
        with conn.cursor() as cur:
            cur.execute(query)
            cur.fetchall()

    return [("dbt-sqlflow read_frame (COPY binary)", ours), ("pandas.read_sql", pandas_read_sql),
            ("psycopg2 fetchall", fetchall)]


def write_methods(conn, frame):
    df = __import__("pandas").DataFrame(frame.as_dict())
    engine = sqlalchemy_engine(conn)
    columns = ", ".join(f'"{n}"' for n in frame.names)
    types = ", ".join(f'"{c.name}" {c.type.name}' for c in frame.columns)

    def fresh(name):
        with conn.cursor() as cur:
            cur.execute(f"drop table if exists {name}")
        conn.commit()

    def ours():
        fresh("bench_w_ours")
        write_frame(conn, "bench_w_ours", frame)
        conn.commit()

    def to_sql():
        fresh("bench_w_pandas")
        df.to_sql("bench_w_pandas", engine, index=False, chunksize=10_000)

    def execute_values():
        fresh("bench_w_ev")
        rows = list(zip(*(c.values.tolist() for c in frame.columns)))
        with conn.cursor() as cur:
            cur.execute(f"create table bench_w_ev ({types})")
            psycopg2.extras.execute_values(cur, f"insert into bench_w_ev ({columns}) values %s", rows,
                                           page_size=10_000)
        conn.commit()

    return [("dbt-sqlflow write_frame (COPY binary)", ours), ("pandas.to_sql", to_sql),
            ("psycopg2 execute_values", execute_values)]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dsn")
    args = parser.parse_args()
    with ExitStack() as stack:
        dsn = args.dsn or stack.enter_context(temporary_server())[1]
        conn = psycopg2.connect(dsn)
        stack.callback(conn.close)
        with conn.cursor() as cur:
            cur.execute("show server_version")
            server = cur.fetchone()[0]
        make_source(conn, args.rows)
        frame = read_frame(conn, f"select * from {SOURCE}")
        conn.commit()
        results = []
        for kind, methods in (("read", read_methods(conn)), ("write", write_methods(conn, frame))):
            for name, fn in methods:
                seconds = timed(fn, args.repeat)
                conn.commit()
                results.append((kind, name, seconds))
                print(f"  {kind:5} {name:40} {seconds:8.2f} s", flush=True)

    print()
    print(f"### Data path: {args.rows:,} rows x (bigint id + {N_FLOATS} float8)")
    print(f"{dt.date.today()}, {machine()}, PostgreSQL {server} on a unix socket, best of {args.repeat}.\n")
    print("| direction | method | seconds | rows/s | dbt-sqlflow speed-up |")
    print("|---|---|---:|---:|---:|")
    for kind in ("read", "write"):
        rows = [r for r in results if r[0] == kind]
        ours = rows[0][2]
        for _, name, seconds in rows:
            print(f"| {kind} | {name} | {seconds:.2f} | {args.rows / seconds:,.0f} | {seconds / ours:.1f}x |")


if __name__ == "__main__":
    main()
