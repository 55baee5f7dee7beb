"""Scaling out: the local engine against 1 and 2 workers of engine='dask' (k-means) and
engine='tf_multiworker' (logistic regression), on one table of ROWS x 10 float8 features.

    python bench/scale_out.py [--rows 10000000] [--only kmeans|logit]

Each case is `dbt run` of one model in a fresh process: its wall time and peak RSS, and, from the
registry's training_info, the rows, CPU seconds and peak RSS of each worker. k-means runs k=8 for
10 Lloyd iterations (tol=0: every case does the same work; the local engine's in-memory KMeans is the
same algorithm); logistic regression 5 epochs at a global batch of 1024. This machine has 2 cores:
the point is that the work divides (rows and CPU per worker halve), not a 2x wall-clock gain.
"""
import argparse
import datetime as dt
import math
import statistics
import subprocess
import sys
import tempfile
import time

import psycopg2

from common import machine, temporary_server, write_project

N_FEATURES = 10
KMEANS = ", ".join(
    ["materialized='ml_train'", "model_type='kmeans'", "n_clusters=8", "seed=0", "max_iter=10",
     "tol=0", "key='id'", "exclude=['label']"])
LOGIT = ", ".join(
    ["materialized='ml_train'", "model_type='logistic_regression'", "label='label'", "key='id'",
     "seed=0", "epochs=5", "batch_size=1024", "learning_rate=0.05", "optimizer='sgd'",
     "memory_budget_mb=4096", "data_split='is_test'"])
CASES = [  # (name, model config, engine keys)
    ("kmeans_local", KMEANS, ""),
    ("kmeans_dask_1", KMEANS, ", engine='dask', dask_scheduler='local[1]'"),
    ("kmeans_dask_2", KMEANS, ", engine='dask', dask_scheduler='local[2]'"),
    ("logit_local", LOGIT, ""),
    ("logit_tf_1", LOGIT, ", engine='tf_multiworker', tf_cluster='local[1]'"),
    ("logit_tf_2", LOGIT, ", engine='tf_multiworker', tf_cluster='local[2]'"),
]


def make_table(dsn: str, rows: int) -> None:
    features = ", ".join(f"sin(g * {0.37 * (j + 1):.2f}) * {j + 1} as x{j}" for j in range(N_FEATURES))
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("drop table if exists points")
        cur.execute(
            f"create table points as select g as id, {features}, (g % 10 = 0) as is_test, "
            f"(sin(g * 0.37) - 2 * sin(g * 0.74) + sin(g * 1.23) > 0) as label "
            f"from generate_series(1, {rows}) as g"
        )
        cur.execute("analyze points")


CHILD = """
import resource, sys
from dbt.cli.main import dbtRunner
ok = dbtRunner().invoke(["run", "-s", sys.argv[1], "--project-dir", sys.argv[2],
                         "--profiles-dir", sys.argv[2]]).success
u = resource.getrusage(resource.RUSAGE_SELF)
print("USAGE", u.ru_maxrss, u.ru_utime + u.ru_stime)
sys.exit(0 if ok else 1)
"""


def run_case(project: str, name: str):
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", CHILD, name, project], capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if out.returncode:
        raise SystemExit(out.stdout[-4000:] + out.stderr[-3000:])
    line = [x for x in out.stdout.splitlines() if x.startswith("USAGE")][-1].split()
    return seconds, int(line[1]) / 1024, float(line[2])


def facts(dsn: str, name: str):
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute(
            "select training_info, metrics from public.sqlflow_models where model_name = %s "
            "order by version desc limit 1", (name,))
        info, metrics = cur.fetchone()
    return info, metrics


def per_step(info: dict) -> str:
    """k-means: the median seconds of a Lloyd iteration; TensorFlow: the median ms of a step."""
    if info.get("pass_seconds"):
        return f"{statistics.median(info['pass_seconds']):.2f} s / iteration"
    if info.get("epoch_seconds"):
        steps = math.ceil(info["train_rows"] / 1024)
        return f"{statistics.median(info['epoch_seconds']) / steps * 1000:.2f} ms / step"
    return "-"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--only", default="", help="run the cases whose name holds this text")
    args = parser.parse_args()
    cases = [c for c in CASES if args.only in c[0]]
    lines = []
    with temporary_server() as (data_path, dsn), tempfile.TemporaryDirectory() as root:
        started = time.perf_counter()
        make_table(dsn, args.rows)
        print(f"made {args.rows} rows in {time.perf_counter() - started:.0f} s", flush=True)
        models = {
            name: f"{{{{ config({config}{engine}) }}}}\nselect * from public.points"
            for name, config, engine in cases
        }
        project = write_project(root, data_path, models)
        rows = []
        for name, _, _ in cases:
            seconds, rss, cpu = run_case(project, name)
            info, metrics = facts(dsn, name)
            rows.append((name, seconds, rss, cpu, info, metrics))
            print(name, f"{seconds:.1f} s", flush=True)
    lines.append(f"### Scaling out: {args.rows:,} rows x {N_FEATURES} float8")
    lines.append(
        f"{dt.date.today()}, {machine()}, embedded PostgreSQL. Each case is `dbt run` of one model in "
        f"a fresh process; workers are processes on this machine (local[N]).")
    lines.append("")
    lines.append("| case | wall s | dbt process: peak MB, CPU s | workers: rows read | workers: CPU s | workers: peak MB | per iteration or step | metric |")
    lines.append("|---|---:|---|---|---|---|---:|---|")
    for name, seconds, rss, cpu, info, metrics in rows:
        workers = (info.get("engine") or {}).get("workers") or []
        read = " / ".join(f"{w['rows']:,}" for w in workers) or "(in the dbt process)"
        wcpu = " / ".join(f"{w.get('cpu_seconds', 0):.0f}" for w in workers) or "-"
        wrss = " / ".join(f"{w.get('peak_rss_mb', 0):.0f}" for w in workers) or "-"
        metric = (f"inertia {metrics['inertia']:.4g}" if "inertia" in metrics
                  else f"eval accuracy {metrics.get('eval_accuracy', float('nan')):.4f}")
        lines.append(f"| {name} | {seconds:.1f} | {rss:.0f}, {cpu:.0f} | {read} | {wcpu} | {wrss} | "
                     f"{per_step(info)} | {metric} |")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
