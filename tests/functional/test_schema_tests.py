"""The generic tests users put in schema.yml: sqlflow_metric, sqlflow_cluster_sizes and sqlflow_drift,
run by `dbt test` on real PostgreSQL, their failures stored and read back."""
import pytest
from dbt.tests.util import run_dbt

CUSTOMERS = "id,x1,x2,plan,churned\n" + "".join(
    f"{i},{(i * 37) % 100 / 10},{(i * 53) % 100 / 10},{['basic', 'pro', 'team'][i % 3]},"
    f"{str(((i * 37) % 100 / 10 + 0.5 * ((i * 53) % 100 / 10) > 7) != ((i * 7919) % 11 == 0)).lower()}\n"
    for i in range(400))  # one label in 11 flipped: the held-out roc_auc is high, not perfect
POINTS = "id,x,y\n" + "".join(f"{i},{(i % 3) * 10 + (i % 7) * 0.1},{(i % 3) * 5.0}\n" for i in range(90))

PREDICT = ("{{{{ config(materialized='ml_predict', model='churn_model') }}}}\n"
           "-- depends_on: {{{{ ref('churn_model') }}}}\nselect id, {select} from {{{{ ref('customers') }}}}")

SCHEMA = """
models:
  - name: churn_model
    data_tests:
      - sqlflow_metric: {name: auc_ok, arguments: {metric: roc_auc, min: 0.7}}
      - sqlflow_metric: {name: auc_too_low, arguments: {metric: roc_auc, min: 0.99}}
      - sqlflow_metric: {name: loss_too_high, arguments: {metric: log_loss, max: 0.0001}}
      - sqlflow_metric: {name: no_such_metric, arguments: {metric: lift, min: 1}}
  - name: segments
    data_tests:
      - sqlflow_cluster_sizes: {name: sizes_ok, arguments: {min_share: 0.2}}
      - sqlflow_cluster_sizes: {name: sizes_too_small, arguments: {min_share: 0.4}}
  - name: scores_same
    data_tests:
      - sqlflow_drift: {name: drift_none}
  - name: scores_shifted
    data_tests:
      - sqlflow_drift: {name: drift_x1}
      - sqlflow_drift: {name: drift_x1_warns, arguments: {threshold: 0.2}, config: {severity: warn}}
      - sqlflow_drift: {name: drift_only_x2, arguments: {features: [x2]}}
  - name: scores_plans
    data_tests:
      - sqlflow_drift: {name: drift_plan}
"""


class TestSchemaTests:
    @pytest.fixture(scope="class")
    def seeds(self):
        return {"customers.csv": CUSTOMERS, "points.csv": POINTS}

    @pytest.fixture(scope="class")
    def models(self):
        return {
            "churn_model.sql": "{{ config(materialized='ml_train', model_type='logistic_regression', "
                               "label='churned', key='id', features=['x1', 'x2', 'plan'], seed=1, "
                               "learning_rate=0.1, epochs=60, batch_size=64, validation_split=0.25) }}\n"
                               "select * from {{ ref('customers') }}",
            "segments.sql": "{{ config(materialized='cluster', n_clusters=3, key='id', seed=1) }}\n"
                            "select * from {{ ref('points') }}",
            "scores_same.sql": PREDICT.format(select="x1, x2, plan"),
            # x1 moved by 4 (most rows change bin), x2 and plan as trained
            "scores_shifted.sql": PREDICT.format(select="x1 + 4 as x1, x2, plan"),
            # nearly every row on one plan, and an unseen one
            "scores_plans.sql": PREDICT.format(
                select="x1, x2, case when id % 10 = 0 then 'enterprise' else 'pro' end as plan"),
            "schema.yml": SCHEMA,
        }

    def test_metric_sizes_and_drift(self, project):
        run_dbt(["seed"])
        run_dbt(["run"])
        results = run_dbt(["test", "--store-failures"], expect_pass=False)
        status = {r.node.name: (str(r.status), r.failures) for r in results}
        assert status == {
            "auc_ok": ("pass", 0),
            "auc_too_low": ("fail", 1),
            "loss_too_high": ("fail", 1),
            "no_such_metric": ("fail", 1),
            "sizes_ok": ("pass", 0),
            "sizes_too_small": ("fail", 3),
            "drift_none": ("pass", 0),
            "drift_x1": ("fail", 1),
            "drift_x1_warns": ("warn", 1),
            "drift_only_x2": ("pass", 0),
            "drift_plan": ("fail", 1),
        }

        audit = f"{project.test_schema}_dbt_test__audit"
        low = project.run_sql(f"select model_name, version, metric, value, problem from {audit}.auc_too_low",
                              fetch="one")
        assert low[:3] == ("churn_model", 1, "roc_auc") and 0.7 < low[3] < 0.99
        assert low[4] == "below min 0.99"
        missing = project.run_sql(f"select problem from {audit}.no_such_metric", fetch="one")[0]
        assert missing.startswith("the live version has no metric lift; it has: ") and "eval_roc_auc" in missing

        sizes = project.run_sql(f"select cluster_id, n_rows, share from {audit}.sizes_too_small order by 1",
                                fetch="all")
        assert [c for c, _, _ in sizes] == [0, 1, 2]
        assert [(n, round(share, 4)) for _, n, share in sizes] == [(30, 0.3333)] * 3

        drifted = project.run_sql(f"select feature, psi, threshold from {audit}.drift_x1", fetch="all")
        assert [d[0] for d in drifted] == ["x1"] and drifted[0][1] > 1.0 and drifted[0][2] == 0.2
        plan = project.run_sql(f"select feature, psi from {audit}.drift_plan", fetch="all")
        assert [p[0] for p in plan] == ["plan"] and plan[0][1] > 0.2

    def test_bad_arguments(self, project):
        from dbt.tests.util import run_dbt_and_capture, write_file

        write_file(SCHEMA + """
  - name: scores_narrow
    data_tests:
      - sqlflow_drift: {name: drift_missing_column}
      - sqlflow_drift: {name: drift_unknown_feature, arguments: {features: [x9]}}
      - sqlflow_metric: {name: metric_no_bounds, arguments: {metric: roc_auc}}
      - sqlflow_metric: {name: metric_text_bound, arguments: {metric: roc_auc, min: high}}
      - sqlflow_drift: {name: drift_text_threshold, arguments: {threshold: high}}
      - sqlflow_cluster_sizes: {name: sizes_bad_share, arguments: {min_share: 5}}
""", project.project_root, "models", "schema.yml")
        narrow = PREDICT.format(select="x1, x2, plan").replace("model='churn_model'", "model='churn_model', pass_through=false")
        write_file(narrow, project.project_root, "models", "scores_narrow.sql")
        run_dbt(["seed"])
        run_dbt(["run", "-s", "+scores_narrow"])
        _, output = run_dbt_and_capture(["test", "-s", "scores_narrow"], expect_pass=False)
        assert "the tested relation lacks the feature columns x1, x2, plan; keep them (pass_through=true)" in output
        assert "sqlflow_drift features 'x9' are not features of 'churn_model' v" in output
        assert "sqlflow_metric on scores_narrow needs min or max" in output
        assert "sqlflow_metric on scores_narrow: min and max are numbers, got high" in output
        assert "sqlflow_drift's threshold is a PSI >= 0" in output and "got 'high'" in output
        assert "sqlflow_cluster_sizes on scores_narrow: min_share is the smallest share" in output and "got 5" in output
