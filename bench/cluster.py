"""`cluster` end to end against what users write today, and the scalable mode's memory.

    python bench/cluster.py [--rows 1000000] [--scalable-rows 5000000 10000000]

In one run, on one embedded PostgreSQL, each case a whole process (time and peak RSS):
  (a) `dbt run` of a k-means `cluster` model (k=8, zscore, n_init=1, seed 0) on rows x 10 float8;
  (b) the pandas pipeline: pandas.read_sql -> StandardScaler + KMeans -> distances -> DataFrame.to_sql,
      writing the same table (all input columns + cluster id + distance);
  (c) the floor: this package's COPY read + the same scikit-learn fit + distances + COPY write, no dbt;
  (s) `dbt run` of the model with scalable=true at each --scalable-rows.
dbt's own start-up is measured as a `dbt run` of a one-row view in the same project.
"""
import argparse
import datetime as dt
import os
import statistics

import psycopg2

from common import machine, peak_rss_mb, run_child, temporary_server, write_project

N_FEATURES = 10
K = 8


# ---------------------------------------------------------------- the cases, each run as a child process


def child_dbt(project_dir, select):
    from dbt.cli.main import dbtRunner

    result = dbtRunner().invoke(["run", "-s", select, "--project-dir", project_dir, "--profiles-dir", project_dir])
    if not result.success:
        raise SystemExit(f"dbt run -s {select} failed")


def child_pandas(dsn, source, target):
    import warnings

    import numpy as np
    import pandas as pd
    import sqlalchemy
    from sklearn.cluster import KMeans
    from sklearn.preprocessing import StandardScaler

    conn = psycopg2.connect(dsn)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        df = pd.read_sql(f"select * from {source}", conn)
    features = [f"x{i}" for i in range(N_FEATURES)]
    X = StandardScaler().fit_transform(df[features].to_numpy())
    km = KMeans(K, n_init=1, random_state=0).fit(X)
    df["cluster_id"] = km.labels_
    df["cluster_distance"] = np.linalg.norm(X - km.cluster_centers_[km.labels_], axis=1)
    engine = sqlalchemy.create_engine("postgresql+psycopg2://", creator=lambda: psycopg2.connect(dsn))
    df.to_sql(target, engine, if_exists="replace", index=False, chunksize=10_000)


def child_floor(dsn, source, target):
    import numpy as np
    from sklearn.cluster import KMeans
    from sklearn.preprocessing import StandardScaler

    from dbt.adapters.sqlflow.data import Column, Frame, read_frame, write_frame

    conn = psycopg2.connect(dsn)
    frame = read_frame(conn, f"select * from {source}")
    X = StandardScaler().fit_transform(np.column_stack([frame[f"x{i}"].values for i in range(N_FEATURES)]))
    km = KMeans(K, n_init=1, random_state=0).fit(X)
    distance = np.linalg.norm(X - km.cluster_centers_[km.labels_], axis=1)
    with conn.cursor() as cur:
        cur.execute(f"drop table if exists {target}")
    write_frame(conn, target, Frame(frame.columns + [Column.of("cluster_id", km.labels_.astype(np.int32)),
                                                     Column.of("cluster_distance", distance)]))
    conn.commit()


CHILDREN = {"dbt": child_dbt, "pandas": child_pandas, "floor": child_floor}


# ---------------------------------------------------------------- the driver


def measure(*args):
    """(seconds, peak RSS in MB) of one child process."""
    seconds, stdout = run_child("cluster", *args)
    return seconds, peak_rss_mb(stdout)


def make_points(dsn, table, rows):
    """rows x 10 float8 around 8 centres; deterministic (setseed)."""
    noise = ", ".join(f"((g % {K}) * {3 + i % 4}) + (random() - 0.5) * 4 as x{i}" for i in range(N_FEATURES))
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f"drop table if exists {table}")
        cur.execute("select setseed(0.5)")
        cur.execute(f"create table {table} as select g::bigint as id, {noise} from generate_series(1, {rows}) g")
        cur.execute(f"vacuum analyze {table}")
    conn.close()


def cluster_models(tables):
    return {name: (f"{{{{ config(materialized='cluster', model_type='kmeans', n_clusters={K}, key='id', seed=0, "
                   f"n_init=1, scalable={str(scalable).lower()}, sample_size=50000) }}}}\n"
                   f"select * from public.{table}\n")
            for name, (table, scalable) in tables.items()}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--scalable-rows", type=int, nargs="*", default=[5_000_000, 10_000_000])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    with temporary_server() as (data_path, dsn):
        root = os.path.dirname(data_path)
        tables = {"clustered": ("points", False)}
        make_points(dsn, "points", args.rows)
        for n in args.scalable_rows:
            make_points(dsn, f"points_{n}", n)
            tables[f"scalable_{n}"] = (f"points_{n}", True)
        project = write_project(root, data_path, cluster_models(tables))
        results = {}
        # whole processes vary by about a second here: start-up, (a) and (c) run --repeat times,
        # interleaved, and the medians count; (b) takes a minute and once is enough for its ratio
        runs = {"startup": [], "a": [], "c": []}
        for _ in range(args.repeat):
            runs["startup"].append(measure("dbt", project, "startup"))
            runs["a"].append(measure("dbt", project, "clustered"))
            runs["c"].append(measure("floor", dsn, "points", "points_floor"))
        for case, measured in runs.items():
            results[case] = (statistics.median(m[0] for m in measured), max(m[1] for m in measured))
        results["b"] = measure("pandas", dsn, "points", "points_pandas")
        for n in args.scalable_rows:
            results[n] = measure("dbt", project, f"scalable_{n}")
            print(f"scalable {n}: {results[n][0]:.1f} s, {results[n][1]:.0f} MB", flush=True)
        with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
            cur.execute("show server_version")
            server = cur.fetchone()[0]

    (a, a_rss), (b, b_rss), (c, c_rss), (s, _) = results["a"], results["b"], results["c"], results["startup"]
    print()
    print(f"### `cluster`: {args.rows:,} rows x {N_FEATURES} float8, k-means k={K}")
    print(f"{dt.date.today()}, {machine()}, PostgreSQL {server} (embedded, unix socket). Each case is a whole "
          f"process; start-up, (a) and (c): the median of {args.repeat} interleaved runs.\n")
    print("| case | seconds | peak RSS (MB) |")
    print("|---|---:|---:|")
    print(f"| (a) `dbt run` of the `cluster` model | {a:.1f} | {a_rss:.0f} |")
    print(f"| (b) pandas: read_sql -> KMeans -> to_sql | {b:.1f} | {b_rss:.0f} |")
    print(f"| (c) floor: COPY read -> KMeans -> COPY write, no dbt | {c:.1f} | {c_rss:.0f} |")
    print(f"| dbt start-up (`dbt run` of a one-row view) | {s:.1f} | |")
    print()
    print(f"- (b)/(a) = **{b / a:.1f}x** (goal >= 12)")
    print(f"- (a - dbt start-up)/(c) = **{(a - s) / c:.2f}x** (goal <= 1.3)")
    if args.scalable_rows:
        print("\n| scalable mode (`scalable=true`, sample_size 50,000) | seconds | peak RSS (MB) |")
        print("|---|---:|---:|")
        for n in args.scalable_rows:
            print(f"| {n:,} rows | {results[n][0]:.1f} | {results[n][1]:.0f} |")


if __name__ == "__main__":
    main()
