"""`ml_train` (TensorFlow logistic regression) against Keras on an in-memory array, and `ml_predict`
in Python, in PostgreSQL and as a pandas script.

    python bench/train_predict.py [--rows 1000000] [--epochs 20]

One embedded PostgreSQL, one run; each case a whole process:
  (a) `dbt run` of an `ml_train` logistic regression on rows x 10 float8, `epochs` epochs, batch 1024;
      its seconds per epoch come from the registry (training_info.epoch_seconds);
  (b) the same Keras model (one dense layer, Adam) fitted on a standardized numpy array already in
      memory, seconds per epoch from the same kind of callback;
  (c) `dbt run` of `ml_predict` on the rows, in PostgreSQL and in Python, and a pandas script
      (read_sql -> the same weights -> to_sql).
"""
import argparse
import datetime as dt
import os

import psycopg2

from common import dbt_run, machine, make_points, run_child, temporary_server, write_project

N_FEATURES = 10
LOGIT = " + ".join(f"x{i} * {(-1) ** i * 0.3:.1f}" for i in range(N_FEATURES))


def child_keras(dsn, epochs):
    import numpy as np
    from sklearn.preprocessing import StandardScaler

    from dbt.adapters.sqlflow.data import read_frame
    from dbt.adapters.sqlflow.ml import keras_models

    frame = read_frame(psycopg2.connect(dsn), "select * from points")
    X = StandardScaler().fit_transform(np.column_stack([frame[f"x{i}"].values for i in range(N_FEATURES)]))
    y = frame["y"].values.astype(np.float32)
    from dbt.adapters.sqlflow.ml.params import Fitting

    options = Fitting(learning_rate=0.05, epochs=int(epochs), batch_size=1024, seed=0)
    with keras_models.tensorflow_session(0) as keras:
        model = keras_models.build_linear(keras, X.shape[1], 1, "sigmoid", 0.0, 0.0)
        history = keras_models.fit(keras, model, X.astype(np.float32), y, "binary_crossentropy", options)
    print("EPOCHS", " ".join(f"{s:.4f}" for s in history.epoch_seconds))


def child_pandas(dsn):
    import warnings

    import numpy as np
    import pandas as pd
    import sqlalchemy

    conn = psycopg2.connect(dsn)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        df = pd.read_sql("select * from points", conn)
        weights = pd.read_sql("select feature, value from logit", conn).set_index("feature")["value"]
    X = df[[f"x{i}" for i in range(N_FEATURES)]].to_numpy()
    z = X @ weights[[f"x{i}" for i in range(N_FEATURES)]].to_numpy() + weights["__intercept__"]
    df["probability_true"] = 1 / (1 + np.exp(-z))
    df["predicted_y"] = z > 0
    engine = sqlalchemy.create_engine("postgresql+psycopg2://", creator=lambda: psycopg2.connect(dsn))
    df.to_sql("scored_pandas", engine, if_exists="replace", index=False, chunksize=10_000)


CHILDREN = {"dbt": dbt_run, "keras": child_keras, "pandas": child_pandas}


def models(epochs):
    return {
        "logit": ("{{ config(materialized='ml_train', model_type='logistic_regression', label='y', key='id', "
                  f"exclude=['id'], epochs={epochs}, batch_size=1024, learning_rate=0.05) }}}}\n"
                  "select * from public.points"),
        "scored_db": "{{ config(materialized='ml_predict', model='logit', output_probabilities=true) }}\n"
                     "-- depends_on: {{ ref('logit') }}\nselect * from public.points",
        "scored_py": "{{ config(materialized='ml_predict', model='logit', output_probabilities=true, "
                     "in_database=false) }}\n-- depends_on: {{ ref('logit') }}\nselect * from public.points",
    }


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--epochs", type=int, default=20)  # fewer drown in this machine's epoch-to-epoch noise
    args = parser.parse_args()
    with temporary_server() as (data_path, dsn):
        make_points(dsn, args.rows, N_FEATURES, LOGIT)
        project = write_project(os.path.dirname(data_path), data_path, models(args.epochs))
        startup, _ = run_child("train_predict", "dbt", project, "startup")
        train_seconds, _ = run_child("train_predict", "dbt", project, "logit")
        _, out = run_child("train_predict", "keras", dsn, str(args.epochs))
        keras_epochs = [float(v) for v in out.split("EPOCHS", 1)[1].splitlines()[0].split()]
        in_db, _ = run_child("train_predict", "dbt", project, "scored_db")
        in_py, _ = run_child("train_predict", "dbt", project, "scored_py")
        pandas_seconds, _ = run_child("train_predict", "pandas", dsn)
        with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
            cur.execute("select training_info -> 'epoch_seconds' from sqlflow_models where model_name = 'logit'")
            ours_epochs = cur.fetchone()[0]
            cur.execute("show server_version")
            server = cur.fetchone()[0]

    median = lambda xs: sorted(xs)[len(xs) // 2]  # noqa: E731
    print(f"### `ml_train` and `ml_predict`: {args.rows:,} rows x {N_FEATURES} float8, logistic regression")
    print(f"{dt.date.today()}, {machine()}, PostgreSQL {server} (embedded). Each case is a whole process; "
          f"dbt start-up (`dbt run` of a one-row view): {startup:.1f} s.\n")
    print(f"| training, {args.epochs} epochs, batch 1024 | seconds per epoch (median) | all epochs |")
    print("|---|---:|---|")
    print(f"| (a) `ml_train` in `dbt run` ({train_seconds:.1f} s in all) | {median(ours_epochs):.2f} | "
          f"{', '.join(f'{s:.2f}' for s in ours_epochs)} |")
    print(f"| (b) Keras on an in-memory numpy array | {median(keras_epochs):.2f} | "
          f"{', '.join(f'{s:.2f}' for s in keras_epochs)} |")
    print(f"\n- epoch time (a)/(b) = **{median(ours_epochs) / median(keras_epochs):.2f}x** (goal <= 1.2)\n")
    print(f"| scoring {args.rows:,} rows | seconds (whole process) | without dbt start-up |")
    print("|---|---:|---:|")
    print(f"| (c) `ml_predict` in PostgreSQL | {in_db:.1f} | {in_db - startup:.1f} |")
    print(f"| (c) `ml_predict` in Python | {in_py:.1f} | {in_py - startup:.1f} |")
    print(f"| pandas: read_sql -> weights -> to_sql | {pandas_seconds:.1f} | |")


if __name__ == "__main__":
    main()
