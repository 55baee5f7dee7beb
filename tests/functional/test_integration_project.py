"""The quick-start project builds from scratch on its own embedded server, as `make demo` runs it."""
import os
import shutil
import subprocess
import sys
import tempfile

import psycopg2

from dbt.adapters.sqlflow import embedded

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_dbt_build_of_the_integration_project():
    # not under pytest's basetemp: the embedded server runs as another OS user, and every pytest
    # session on the machine resets pytest-of-<user> to mode 0700
    from pathlib import Path

    root = tempfile.mkdtemp(prefix="sqlflow-demo-", dir=os.environ.get("SQLFLOW_TEST_TMP", "/tmp"))
    os.chmod(root, 0o755)
    project = Path(root) / "integration_project"
    shutil.copytree(os.path.join(REPO, "integration_project"), project,
                    ignore=shutil.ignore_patterns(".sqlflow", "target", "logs"))
    dbt = os.path.join(os.path.dirname(sys.executable), "dbt")
    data = str(project / ".sqlflow" / "pgdata")
    try:
        result = subprocess.run([dbt, "build"], cwd=project, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        assert "ERROR=0" in result.stdout
        info = embedded.running_server(data)
        conn = psycopg2.connect(host=info.host, port=info.port, user="postgres", dbname="postgres")
        with conn.cursor() as cur:
            cur.execute("select count(*), sum(orders) from analytics.customer_orders")
            customers, orders = cur.fetchone()
            cur.execute("select count(*), count(distinct cluster_id) from analytics.customer_segments")
            segmented = cur.fetchone()
            cur.execute("select count(*), count(distinct cluster_id), min(cluster_id) from analytics.least_active_customers")
            least_active, least_clusters, least_id = cur.fetchone()
            cur.execute("select size from analytics.segment_profile where cluster_id = %s", (least_id,))
            least_size = cur.fetchone()[0]
            cur.execute("select count(*), count(*) filter (where chosen) from analytics.customer_segments_k_sweep")
            sweep = cur.fetchone()
            cur.execute("select value from analytics.churn_evaluation where metric = 'eval_roc_auc'")
            churn_auc = cur.fetchone()[0]
            cur.execute("select count(*), min(probability_true), max(probability_true) from analytics.churn_scores")
            scored, low, high = cur.fetchone()
            cur.execute("select regr_r2(predicted_progression, progression) from analytics.diabetes_predictions")
            diabetes_r2 = cur.fetchone()[0]
            cur.execute("select planted_group, cluster_id from analytics.user_groups")
            groups = cur.fetchall()
            cur.execute("select count(*), sum(users) from analytics.user_group_means")
            group_means = cur.fetchone()
            cur.execute("select count(*), regr_r2(p.predicted_value, o.unit_sales) from analytics.sales_predictions p "
                        "join analytics.sales_observations o on o.obs_id = p.obs_id")
            sales_scored, sales_r2 = cur.fetchone()
            cur.execute("select tensor, weights from analytics.sales_weight_ranges order by tensor")
            sales_ranges = cur.fetchall()
            # SQLFlow's statements as model files
            cur.execute("select rows, accuracy, roc_auc from analytics.iris_evaluation")
            iris_evaluation = cur.fetchone()
            cur.execute("select count(*), count(distinct id), max(abs(total - gap)) from (select id, "
                        "sum(attribution) as total, min(prediction - baseline) as gap "
                        "from analytics.iris_explained group by id) e")
            iris_explained = cur.fetchone()
            cur.execute("select feature from analytics.iris_feature_importance order by rank limit 1")
            iris_top = cur.fetchone()[0]
            cur.execute("select planted_group, group_id from analytics.user_cluster_assignments")
            statement_groups = cur.fetchall()
            # the same models on engine='dask' and engine='tf_multiworker' (two local workers each)
            cur.execute("select count(*), count(*) filter (where l.cluster_id <> d.cluster_id) "
                        "from analytics.customer_segments l join analytics.customer_segments_dask d "
                        "using (customer)")
            dask_segments = cur.fetchone()
            cur.execute("select (metrics->>'eval_roc_auc')::float8, training_info->'engine'->'workers' "
                        "from analytics.sqlflow_models where model_name = 'churn_model_tf'")
            tf_auc, tf_workers = cur.fetchone()
        conn.close()
        assert customers == 12 and orders == 60
        assert segmented == (20000, 4)
        assert least_clusters == 1 and least_active == least_size > 0
        assert sweep == (7, 1)
        assert churn_auc > 0.65 and scored > 15000 and 0 < low < high < 1
        assert dask_segments == (20000, 0)  # equal to the local engine's, row for row
        assert tf_auc > 0.65 and len(tf_workers) == 2 and all(w["rows"] > 0 for w in tf_workers)
        assert diabetes_r2 > 0.5
        from sklearn.metrics import adjusted_rand_score

        assert adjusted_rand_score([g[0] for g in groups], [g[1] for g in groups]) > 0.9
        assert group_means == (5, 5000)
        assert sales_scored > 500 and sales_r2 > 0.8
        assert sales_ranges == [("b", 1), ("w", 15)]  # 8 families, 5 cities, perishable, onpromotion
        assert (project / "target" / "sqlflow" / "sales_model.py").exists()
        assert iris_evaluation[0] == 30 and iris_evaluation[1] > 0.85 and iris_evaluation[2] > 0.9
        assert iris_explained[:2] == (30, 30) and iris_explained[2] < 1e-6
        assert iris_top in ("petal_length", "petal_width")
        assert adjusted_rand_score([g[0] for g in statement_groups], [g[1] for g in statement_groups]) > 0.9
    finally:
        embedded.stop(data)
        shutil.rmtree(root, ignore_errors=True)
