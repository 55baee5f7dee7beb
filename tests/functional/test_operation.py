"""Scheduled operation: retrain policies (never, max_age), promotion gates (thresholds and '<= live'),
rollback with sqlflow_promote, version statuses and keep_versions, through dbt on real PostgreSQL."""
import json

import pytest
from dbt.tests.util import run_dbt, run_dbt_and_capture

POINTS = "id,x,y\n" + "".join(f"{i},{(i % 7) * 1.5 + (i % 3) * 0.1},{(i % 5) * 2.0}\n" for i in range(90))
CUSTOMERS = "id,x1,x2,churned\n" + "".join(
    f"{i},{(i * 37) % 100 / 10},{(i * 53) % 100 / 10},{str((i * 37) % 100 / 10 + 0.5 * ((i * 53) % 100 / 10) > 7).lower()}\n"
    for i in range(400))

POINTS_SQL = "{{ config(materialized='table') }} select * from {{ ref('points') }} where id < {{ var('upto', 90) }}"
CLUSTER = ("{{{{ config(materialized='cluster', n_clusters=3, key='id', seed=1{extra}) }}}}\n"
           "select * from {{{{ ref('src') }}}}")


def _response(results, name):
    return next(r.adapter_response for r in results if r.node.name == name)


def _statuses(project, identifier):
    return project.run_sql(f"select version, status from {project.test_schema}.sqlflow_models "
                           f"where relation_identifier = '{identifier}' order by version", fetch="all")


class TestRetrainPolicies:
    @pytest.fixture(scope="class")
    def seeds(self):
        return {"points.csv": POINTS}

    @pytest.fixture(scope="class")
    def models(self):
        return {
            "src.sql": POINTS_SQL,
            "never.sql": CLUSTER.format(extra=", retrain='never'"),
            "aged.sql": CLUSTER.format(extra=", retrain='max_age', max_age='1 hour'"),
        }

    def test_never_and_max_age(self, project):
        s = project.test_schema
        run_dbt(["seed"])
        run_dbt(["run"])
        # new input: 'never' keeps v1 and says why; 'max_age' behaves as on_change and retrains
        results, output = run_dbt_and_capture(["run", "--vars", "{upto: 80}"])
        never = _response(results, "never")
        assert never["code"] == "UNCHANGED"
        assert "CLUSTER unchanged, v1 kept: retrain='never' (dbt run --full-refresh retrains)" in never["_message"]
        assert "retrain='never'" in output
        assert project.run_sql(f"select count(*) from {s}.never", fetch="one")[0] == 90, "the v1 tables stay"
        assert _response(results, "aged")["code"] == "CLUSTER"
        assert _statuses(project, "aged") == [(1, "candidate"), (2, "live")]
        # nothing new and younger than max_age: kept
        results = run_dbt(["run", "-s", "aged", "--vars", "{upto: 80}"])
        assert _response(results, "aged")["code"] == "UNCHANGED"
        assert "younger than max_age=1 hour" in _response(results, "aged")["_message"]
        # the live version is older than max_age: retrained although nothing changed
        project.run_sql(f"update {s}.sqlflow_models set trained_at = now() - interval '2 hours' "
                        f"where relation_identifier = 'aged' and status = 'live'")
        results, output = run_dbt_and_capture(["run", "-s", "aged", "--vars", "{upto: 80}"])
        assert _response(results, "aged")["code"] == "CLUSTER"
        assert "older than max_age=1 hour" in output
        assert _statuses(project, "aged")[-1] == (3, "live")
        # --full-refresh retrains a 'never' model
        results = run_dbt(["run", "-s", "never", "--full-refresh", "--vars", "{upto: 80}"])
        assert _response(results, "never")["code"] == "CLUSTER"
        assert project.run_sql(f"select count(*) from {s}.never", fetch="one")[0] == 80

    def test_bad_policy_configs(self, project):
        from dbt.tests.util import write_file

        write_file(CLUSTER.format(extra=", retrain='max_age'"), project.project_root, "models", "no_age.sql")
        write_file(CLUSTER.format(extra=", max_age='7 days'"), project.project_root, "models", "age_only.sql")
        write_file(CLUSTER.format(extra=", retrain='max_age', max_age='a week'"), project.project_root, "models",
                   "bad_age.sql")
        _, output = run_dbt_and_capture(["run", "-s", "no_age", "age_only", "bad_age"], expect_pass=False)
        assert "retrain='max_age' retrains when the live version is older than max_age: add " \
               "config(max_age='7 days')" in output
        assert "max_age='7 days' is read with retrain='max_age' only" in output
        assert "max_age" in output and "an age such as '7 days'" in output


LABELS_SQL = """
{{ config(materialized='table') }}
select id, x1, x2,
       {% if var('noise', false) %} (id * 7919) % 13 < 6 {% else %} churned {% endif %} as churned
from {{ ref('customers') }}
"""
LOGIT = ("{{{{ config(materialized='ml_train', model_type='logistic_regression', label='churned', key='id', "
         "features={features}, learning_rate=0.1, epochs=60, batch_size=64, validation_split=0.25, seed=1, "
         "promote_if={gates}{extra}) }}}}\nselect * from {{{{ ref('labels') }}}}")
GATES = "{'roc_auc': '>= 0.8'}"


class TestPromotionGates:
    @pytest.fixture(scope="class")
    def seeds(self):
        return {"customers.csv": CUSTOMERS}

    @pytest.fixture(scope="class")
    def models(self):
        return {
            "labels.sql": LABELS_SQL,
            "churn.sql": LOGIT.format(features="['x1', 'x2']", gates=GATES, extra=""),
            "churn_warn.sql": LOGIT.format(features="['x1', 'x2']", gates=GATES, extra=", on_gate_fail='warn'"),
            "churn_live.sql": LOGIT.format(features="var('features', ['x1', 'x2'])",
                                           gates="{'log_loss': '<= live'}", extra=""),
            "scores.sql": "{{ config(materialized='ml_predict', model='churn') }}\n"
                          "-- depends_on: {{ ref('churn') }}\nselect * from {{ ref('labels') }}",
            "versions.sql": "{{ config(materialized='table') }}\n"
                            "select version, status, jsonb_array_length(events) as events\n"
                            "from {{ ml_versions(ref('churn')) }}",
        }

    def test_threshold_gate_rejects_and_keeps_the_live_version(self, project):
        s = project.test_schema
        run_dbt(["seed"])
        run_dbt(["run"])
        assert _statuses(project, "churn") == [(1, "live")]
        weights = project.run_sql(f"select sum(value) from {s}.churn", fetch="one")[0]

        # labels turned to noise: roc_auc falls to ~0.5, both candidates are rejected
        results, output = run_dbt_and_capture(["run", "-s", "labels", "churn", "churn_warn", "--vars",
                                               "{noise: true}"], expect_pass=False)
        assert "churn: v2 was not promoted (eval_roc_auc = 0." in output
        assert "needed >= 0.8), so it is registered as rejected and v1 stays live with its tables" in output
        assert _statuses(project, "churn") == [(1, "live"), (2, "rejected")]
        assert project.run_sql(f"select sum(value), max(model_version) from {s}.churn", fetch="one") == (weights, 1)
        warned = _response(results, "churn_warn")
        assert warned["code"] == "REJECTED"
        assert next(r.status for r in results if r.node.name == "churn_warn") == "success"
        assert _statuses(project, "churn_warn") == [(1, "live"), (2, "rejected")]
        assert project.run_sql(f"select max(model_version) from {s}.churn_warn", fetch="one")[0] == 1
        note = project.run_sql(f"select events -> 0 ->> 'note' from {s}.sqlflow_models "
                               f"where relation_identifier = 'churn' and version = 2", fetch="one")[0]
        assert note.startswith("eval_roc_auc = ")
        # ml_predict scores with the live version
        run_dbt(["run", "-s", "scores"])
        assert project.run_sql(f"select distinct model_version from {s}.scores", fetch="all") == [(1,)]

    def test_live_gate_compares_on_the_same_held_out_rows(self, project):
        run_dbt(["run", "-s", "labels"])
        # fewer features: a worse log loss than the live version's on this run's held-out rows
        _, output = run_dbt_and_capture(["run", "-s", "churn_live", "--vars", "{features: [x2]}"],
                                        expect_pass=False)
        assert "live v1 re-evaluated on this run's held-out rows for promote_if" in output
        assert "needed <= v1's " in output
        assert _statuses(project, "churn_live") == [(1, "live"), (2, "rejected")]

    def test_unknown_gate_metric(self, project):
        from dbt.tests.util import write_file

        write_file(LOGIT.format(features="['x1']", gates="{'auc': '>= 0.5'}", extra=""),
                   project.project_root, "models", "bad_gate.sql")
        write_file(LOGIT.format(features="['x1']", gates="{'roc_auc': 'at least 0.5'}", extra=""),
                   project.project_root, "models", "bad_condition.sql")
        _, output = run_dbt_and_capture(["run", "-s", "bad_gate", "bad_condition"], expect_pass=False)
        assert "promote_if names metric 'auc', which this model does not report; its metrics are: " in output
        assert "eval_roc_auc" in output
        assert "a map of metric to condition" in output
        assert _statuses(project, "bad_gate") == []

    def test_promote_rolls_forward_and_back(self, project):
        s = project.test_schema
        weights = f"select tensor, feature, class, value, model_version from {s}.churn order by tensor, feature"
        built = project.run_sql(weights, fetch="all")
        assert {w[-1] for w in built} == {1}
        _, output = run_dbt_and_capture(["run-operation", "sqlflow_promote", "--args",
                                         "{model: churn, version: 2}"])
        assert "churn: v2 is live (was v1); its weights table holds v2's weights" in output
        assert _statuses(project, "churn") == [(1, "candidate"), (2, "live")]
        promoted = project.run_sql(weights, fetch="all")
        assert {w[-1] for w in promoted} == {2} and [w[:2] for w in promoted] == [w[:2] for w in built]
        assert [w[3] for w in promoted] != [w[3] for w in built]
        run_dbt(["run", "-s", "scores"])
        assert project.run_sql(f"select distinct model_version from {s}.scores", fetch="all") == [(2,)]
        run_dbt(["run-operation", "sqlflow_promote", "--args", "{model: churn, version: 1}"])
        assert _statuses(project, "churn") == [(1, "live"), (2, "candidate")]
        assert project.run_sql(weights, fetch="all") == built, "the rollback restores v1's weights exactly"
        events = project.run_sql(f"select events from {s}.sqlflow_models where relation_identifier = 'churn' "
                                 f"and version = 1", fetch="one")[0]
        events = events if isinstance(events, list) else json.loads(events)
        assert [e["status"] for e in events] == ["live", "candidate", "live"]
        assert all(e["invocation_id"] and e["by"] and e["at"] for e in events)
        assert len({e["invocation_id"] for e in events}) == 3, "each change names the invocation that made it"
        run_dbt(["run", "-s", "versions"])
        assert project.run_sql(f"select version, status, events from {s}.versions order by 1", fetch="all") == \
            [(1, "live", 3), (2, "candidate", 3)]

        _, output = run_dbt_and_capture(["run-operation", "sqlflow_promote", "--args",
                                         "{model: churn, version: 9}"], expect_pass=False)
        assert "model 'churn' has no version 9 (versions: 1 live, 2 candidate)" in output
        _, output = run_dbt_and_capture(["run-operation", "sqlflow_promote", "--args",
                                         "{model: chrun, version: 1}"], expect_pass=False)
        assert "no model named 'chrun' in this project; its ML models are: " in output
        assert "churn, churn_live, churn_warn" in output
        _, output = run_dbt_and_capture(["run-operation", "sqlflow_promote", "--args",
                                         "{model: churn, version: latest}"], expect_pass=False)
        assert "version must be a version number" in output


class TestKeepVersions:
    @pytest.fixture(scope="class")
    def seeds(self):
        return {"points.csv": POINTS}

    @pytest.fixture(scope="class")
    def models(self):
        return {
            "src.sql": POINTS_SQL,
            "net.sql": "{{ config(materialized='ml_train', model_type='autoencoder', encode_units=[2], epochs=2, "
                       "key='id', seed=1, keep_versions=2) }} select * from {{ ref('src') }}",
            "pinned.sql": "{{ config(materialized='ml_predict', model='net', version=1) }}\n"
                          "-- depends_on: {{ ref('net') }}\nselect * from {{ ref('src') }}",
        }

    def test_old_artifacts_are_pruned_rows_stay(self, project):
        s = project.test_schema
        run_dbt(["seed"])
        run_dbt(["run", "-s", "src", "net"])
        run_dbt(["run", "-s", "pinned"])
        for _ in range(2):
            run_dbt(["run", "-s", "net"])
        rows = project.run_sql(f"select version, status, artifact is not null, artifact_sha256 is not null "
                               f"from {s}.sqlflow_models where relation_identifier = 'net' order by 1", fetch="all")
        assert rows == [(1, "retired", False, False), (2, "candidate", True, True), (3, "live", True, True)]
        _, output = run_dbt_and_capture(["run", "-s", "pinned"], expect_pass=False)
        assert "version 1 of model 'net' is retired: keep_versions pruned its artifact" in output
        assert project.run_sql(f"select distinct model_version from {s}.pinned", fetch="all") == [(1,)], \
            "the failed node left the previous scores"
        _, output = run_dbt_and_capture(["run-operation", "sqlflow_promote", "--args", "{model: net, version: 1}"],
                                        expect_pass=False)
        assert "version 1 of model 'net' is retired" in output


NET = """
{{ config(materialized='ml_train', model_type='dnn_regressor', label='y', key='id', hidden_units=[8],
          batch_size=8, epochs=var('epochs', 2), seed=1) }}
select * from {{ ref('points') }}
"""


class TestTwoProcessesBuildOneModel:
    @pytest.fixture(scope="class")
    def seeds(self):
        return {"points.csv": POINTS}

    @pytest.fixture(scope="class")
    def models(self):
        return {"net.sql": NET}

    def test_the_second_waits_and_builds_after_the_first(self, project, profiles_root):
        import os
        import subprocess
        import sys
        import time

        s = project.test_schema
        run_dbt(["seed"])
        run_dbt(["run"])
        dbt = os.path.join(os.path.dirname(sys.executable), "dbt")

        def start(epochs, log):
            return subprocess.Popen([dbt, "run", "--vars", f"{{epochs: {epochs}}}", "--project-dir",
                                     str(project.project_root), "--profiles-dir", str(profiles_root)],
                                    stdout=log, stderr=subprocess.STDOUT, text=True,
                                    env={**os.environ, "PYTHONUNBUFFERED": "1"})

        logs = [open(os.path.join(project.project_root, f"p{i}.log"), "w+") for i in (0, 1)]
        first = start(300, logs[0])
        deadline = time.monotonic() + 120
        while "epoch 1/300" not in open(logs[0].name).read():  # the first holds the lock and trains
            assert time.monotonic() < deadline and first.poll() is None, open(logs[0].name).read()
            time.sleep(0.2)
        second = start(2, logs[1])
        assert first.wait(timeout=600) == 0, open(logs[0].name).read()
        assert second.wait(timeout=600) == 0, open(logs[1].name).read()
        waited = open(logs[1].name).read()
        assert "is building this model; waiting for it to finish" in waited
        rows = project.run_sql(f"select version, status, (training_info ->> 'epochs')::int from "
                               f"{s}.sqlflow_models order by 1", fetch="all")
        assert rows == [(1, "candidate", 2), (2, "candidate", 300), (3, "live", 2)], \
            "the second built after the first committed, on top of it"
        assert project.run_sql(f"select distinct model_version from {s}.net", fetch="all") == [(3,)]
        assert project.run_sql(f"select count(*) from pg_class where relname like 'net__dbt%'",
                               fetch="one")[0] == 0, "no intermediate or backup relation left"
        # a network's weights table follows a promotion too (rebuilt from the stored .keras artifact)
        count = project.run_sql(f"select count(*) from {s}.net", fetch="one")[0]
        run_dbt(["run-operation", "sqlflow_promote", "--args", "{model: net, version: 2}"])
        assert project.run_sql(f"select count(*), min(model_version), max(model_version) from {s}.net",
                               fetch="one") == (count, 2, 2)
