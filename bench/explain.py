"""`ml_explain` on a DNN against calling `shap` directly on a numpy array.

    python bench/explain.py [--rows 10000] [--background 50]

One embedded PostgreSQL, one run. A binary `dnn_classifier` (10 float8 features, hidden [32, 16]) is
trained once; then
  (a) `dbt run` of an `ml_explain` node on the rows: its execution time from run_results.json (the
      node's whole work: read with COPY, load the network, SHAP, write the long table and __global);
  (b) a Python script on the same rows and the same stored network: the rows already a numpy array,
      `shap.PermutationExplainer` with the same background sample, seed and max_evals, timed around
      the shap call alone, and around the whole script after its imports (read, load, shap).
Goal: (a) / (b, the shap call) <= 1.2.
"""
import argparse
import datetime as dt
import json
import os
import time

import psycopg2

from common import dbt_run, machine, make_points, run_child, temporary_server, write_project

N_FEATURES = 10


def child_shap(dsn, background, seed):
    import numpy as np
    import shap

    from dbt.adapters.sqlflow import registry
    from dbt.adapters.sqlflow.data import read_frame
    from dbt.adapters.sqlflow.jobs import inputs
    from dbt.adapters.sqlflow.ml import explain, keras_models, networks
    from dbt.adapters.sqlflow.ml.preprocess import FeatureEncoder

    start = time.perf_counter()
    conn = psycopg2.connect(dsn)
    frame = read_frame(conn, "select * from points")
    trained = registry.load(conn, registry.table_name("public"), registry.ModelKey("postgres", "public", "dnn"),
                            None, model_name="dnn")
    names = [f"x{i}" for i in range(N_FEATURES)]
    X = FeatureEncoder.from_dict(trained.features).transform(inputs.raw_columns(frame, names))
    with keras_models.tensorflow_session(int(seed)) as keras:
        networks.register_layers(keras)
        model = keras_models.from_bytes(keras, trained.artifact)
        f = lambda A: np.asarray(model(A.astype(np.float32), training=False), np.float64)[:, 0]  # noqa: E731
        sample = explain.background_rows(X, int(background), int(seed))
        shap_start = time.perf_counter()
        masker = shap.maskers.Independent(sample, max_samples=len(sample))
        out = shap.explainers.PermutationExplainer(f, masker, seed=int(seed))(X, max_evals=500, silent=True)
        shap_seconds = time.perf_counter() - shap_start
    print("SHAP", shap_seconds, time.perf_counter() - start, out.values.shape[0])


CHILDREN = {"dbt": dbt_run, "shap": child_shap}


def models(background):
    return {
        "dnn": ("{{ config(materialized='ml_train', model_type='dnn_classifier', label='y', key='id', "
                "exclude=['id'], hidden_units=[32, 16], epochs=10, batch_size=256, seed=1) }}\n"
                "select * from public.points"),
        "explained": (f"{{{{ config(materialized='ml_explain', model='dnn', background={background}, seed=0, "
                      "key='id') }}\n-- depends_on: {{ ref('dnn') }}\nselect * from public.points"),
    }


def node_seconds(project):
    with open(os.path.join(project, "target", "run_results.json")) as f:
        return json.load(f)["results"][0]["execution_time"]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--background", type=int, default=50)
    args = parser.parse_args()
    with temporary_server() as (data_path, dsn):
        make_points(dsn, args.rows, N_FEATURES, "x2 * x7 + 0.5 * x0")
        project = write_project(os.path.dirname(data_path), data_path, models(args.background))
        run_child("explain", "dbt", project, "dnn")
        whole, _ = run_child("explain", "dbt", project, "explained")
        ours = node_seconds(project)
        _, out = run_child("explain", "shap", dsn, str(args.background), "0")
        shap_call, script, explained_rows = out.split("SHAP", 1)[1].split()[:3]
        shap_call, script = float(shap_call), float(script)
        with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
            cur.execute("select count(*), count(distinct id) from explained")
            long_rows, ids = cur.fetchone()
            cur.execute("show server_version")
            server = cur.fetchone()[0]

    print(f"### `ml_explain`: a DNN classifier on {args.rows:,} rows x {N_FEATURES} features, "
          f"PermutationExplainer, background {args.background}, max_evals 500")
    print(f"{dt.date.today()}, {machine()}, PostgreSQL {server} (embedded).\n")
    print("| case | seconds |")
    print("|---|---:|")
    print(f"| (a) `ml_explain` node (run_results execution_time; {ids:,} rows -> {long_rows:,} attribution rows) "
          f"| {ours:.1f} |")
    print(f"| (a) the same, whole `dbt run` process | {whole:.1f} |")
    print(f"| (b) `shap` on the numpy array, the call alone ({int(explained_rows):,} rows) | {shap_call:.1f} |")
    print(f"| (b) the script after its imports: read, load, shap | {script:.1f} |")
    print(f"\n- (a) node / (b) shap call = **{ours / shap_call:.2f}x** (goal <= 1.2); "
          f"against the whole script {ours / script:.2f}x")


if __name__ == "__main__":
    main()
