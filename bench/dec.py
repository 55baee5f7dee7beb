"""Deep embedded clustering: the adapter's training against a hand-written Keras DEC loop.

    python bench/dec.py [--rows 100000] [--pretrain-epochs 3] [--iterations 420] [--memory-rows 2000000]

One embedded PostgreSQL, one run: (a) `dbt run` of a `cluster` model with model_type='dec'
(encode_units [100, 7], k=5) on rows x 10 float8; its seconds per pretraining epoch and per clustering
iteration come from the registry; (b) the loop of SQLFlow's design in plain Keras on the same rows
already in memory as a standardized numpy array: autoencoder fit, k-means on the embeddings, then
train_on_batch with the target distribution recomputed every update_interval batches; (c) as (a) but
read in batches (memory_budget_mb=0, sample_size 50,000). Then the peak RSS of (a) and (c), each a
whole `dbt run` process, at --memory-rows rows: batched reading should hold it flat.
"""
import argparse
import datetime as dt
import os
import time

import psycopg2

from common import machine, peak_rss_mb, run_child, temporary_server, write_project

N_FEATURES, K, UNITS, BATCH, INTERVAL = 10, 5, [100, 7], 256, 140


def child_dbt(project_dir, select):
    from dbt.cli.main import dbtRunner

    if not dbtRunner().invoke(["run", "-s", select, "--project-dir", project_dir,
                               "--profiles-dir", project_dir]).success:
        raise SystemExit(f"dbt run -s {select} failed")


def child_keras(dsn, pretrain_epochs, iterations):
    """The reference loop, written as a user would in Keras, timed per epoch and per iteration."""
    import numpy as np
    from sklearn.cluster import KMeans
    from sklearn.preprocessing import StandardScaler

    from dbt.adapters.sqlflow.data import read_frame
    from dbt.adapters.sqlflow.ml import dec, keras_models, networks

    frame = read_frame(psycopg2.connect(dsn), "select * from users")
    X = StandardScaler().fit_transform(np.column_stack([frame[f"m{i}"].values for i in range(1, 11)]))
    X = X.astype(np.float32)
    with keras_models.tensorflow_session(0) as keras:
        from dbt.adapters.sqlflow.ml.params import Fitting

        ae = networks.build_autoencoder(keras, N_FEATURES, UNITS, "relu")
        options = Fitting(learning_rate=0.001, epochs=int(pretrain_epochs), batch_size=BATCH, seed=0)
        epochs = keras_models.fit(keras, ae, X, X, "mse", options).epoch_seconds
        encoder = keras.Model(ae.inputs, ae.get_layer("embedding").output)
        init = KMeans(K, n_init=20, random_state=0).fit(np.asarray(encoder(X)))
        model = keras.Model(encoder.inputs, dec.clustering_layer(keras)(K, name="clustering")(encoder.outputs[0]))
        model.get_layer("clustering").set_weights([init.cluster_centers_.astype(np.float32)])
        model.compile(optimizer=keras.optimizers.Adam(0.001), loss="kld")
        started, index = time.perf_counter(), 0
        for iteration in range(int(iterations)):
            if iteration % INTERVAL == 0:
                p = dec.target_distribution(np.asarray(model(X), np.float64))
            pick = slice(index * BATCH, (index + 1) * BATCH)
            model.train_on_batch(X[pick], p[pick])
            index = index + 1 if (index + 2) * BATCH <= len(X) else 0
        seconds = time.perf_counter() - started
    print("EPOCHS", " ".join(f"{s:.4f}" for s in epochs))
    print("ITERATION", seconds / int(iterations))


CHILDREN = {"dbt": child_dbt, "keras": child_keras}


def make_users(dsn, rows, table="users"):
    features = ", ".join(f"(u % {K}) * {(i * 7) % 5 + 1} * cos({i} * 0.6 * (u % {K})) + (random() - 0.5) * 2 as m{i}"
                         for i in range(1, N_FEATURES + 1))
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("select setseed(0.75)")
        cur.execute(f"create table {table} as select u as user_id, {features} from generate_series(1, {rows}) u")
    conn.close()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--pretrain-epochs", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=3 * INTERVAL)
    parser.add_argument("--memory-rows", type=int, default=2_000_000)
    args = parser.parse_args()

    def model(table, extra=""):
        return ("{{ config(materialized='cluster', model_type='dec', n_clusters=" + str(K) + ", key='user_id', "
                f"encode_units={UNITS}, pretrain_epochs={args.pretrain_epochs}, batch_size={BATCH}, "
                f"update_interval={INTERVAL}, max_iter={args.iterations}, tol=0, seed=0{extra}) }}}}\n"
                f"select * from public.{table}")

    batched = ", memory_budget_mb=0, sample_size=50000"
    models = {"groups": model("users"), "groups_batched": model("users", batched),
              "big": model("users_big"), "big_batched": model("users_big", batched)}
    with temporary_server() as (data_path, dsn):
        make_users(dsn, args.rows)
        project = write_project(os.path.dirname(data_path), data_path, models)
        total, _ = run_child("dec", "dbt", project, "groups")
        _, out = run_child("dec", "keras", dsn, str(args.pretrain_epochs), str(args.iterations))
        run_child("dec", "dbt", project, "groups_batched")
        make_users(dsn, args.memory_rows, "users_big")  # after the timings: its load would compete with them
        memory = {name: run_child("dec", "dbt", project, name) for name in ("big", "big_batched")}
        with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
            cur.execute("select model_name, training_info from sqlflow_models")
            infos = dict(cur.fetchall())
            cur.execute("show server_version")
            server = cur.fetchone()[0]
    info, batched_info = infos["groups"], infos["groups_batched"]
    keras_epochs = [float(v) for v in out.split("EPOCHS", 1)[1].splitlines()[0].split()]
    keras_iteration = float(out.split("ITERATION", 1)[1].split()[0])
    ours_epochs = info["pretrain_epoch_seconds"]
    ours_iteration = info["clustering_seconds"] / info["iterations"]
    median = lambda xs: sorted(xs)[len(xs) // 2]  # noqa: E731
    print(f"### DEC: {args.rows:,} rows x {N_FEATURES} float8, encode_units {UNITS}, k={K}")
    print(f"{dt.date.today()}, {machine()}, PostgreSQL {server} (embedded). (a) is a whole `dbt run` "
          f"({total:.1f} s in all); (b) the same model in plain Keras on an in-memory array.\n")
    print("| | pretraining: seconds per epoch (median) | clustering: ms per iteration (batch 256) |")
    print("|---|---:|---:|")
    print(f"| (a) `cluster` with `model_type='dec'` | {median(ours_epochs):.2f} | {ours_iteration * 1000:.1f} |")
    print(f"| (b) hand-written Keras DEC loop | {median(keras_epochs):.2f} | {keras_iteration * 1000:.1f} |")
    batched_iteration = batched_info["clustering_seconds"] / batched_info["iterations"]
    print(f"| (c) as (a), read in batches of 50,000 rows | {median(batched_info['pretrain_epoch_seconds']):.2f} | "
          f"{batched_iteration * 1000:.1f} |")
    print(f"\n- pretraining epoch (a)/(b) = **{median(ours_epochs) / median(keras_epochs):.2f}x**, "
          f"clustering iteration (a)/(b) = **{ours_iteration / keras_iteration:.2f}x** (goal <= 1.2)")
    print(f"\n| {args.memory_rows:,} rows | seconds (whole `dbt run`) | peak RSS (MB) |")
    print("|---|---:|---:|")
    for name, label in (("big", "in memory"), ("big_batched", "read in batches (memory_budget_mb=0)")):
        seconds, stdout = memory[name]
        print(f"| {label} | {seconds:.1f} | {peak_rss_mb(stdout):.0f} |")


if __name__ == "__main__":
    main()
