"""Faults in scheduled runs: dbt stopped (SIGINT, SIGTERM, SIGKILL) while training or writing leaves the
previous relations and registry as they were, no intermediate or backup relation, and the next run
succeeds; `dbt retry` after a failed ML node completes the job. dbt runs as a subprocess."""
import os
import signal
import subprocess
import sys
import time

import pytest
from dbt.tests.util import run_dbt

SEED = "id,x,y,target\n" + "".join(f"{i},{(i % 7) * 1.5},{(i % 5) * 2.0},{i % 3}\n" for i in range(200))
NET = """
{{ config(materialized='ml_train', model_type='dnn_regressor', label='target', key='id', hidden_units=[8],
          batch_size=8, epochs=var('epochs', 2), seed=1) }}
select * from {{ ref('points') }}
"""
# 1,000,000 rows written in batches of about 20,000: the write phase lasts long enough to be interrupted
BIG = """
{{ config(materialized='cluster', n_clusters=3, key='id', seed=1, scalable=true, sample_size=20000,
          max_iter=5) }}
select g as id, (g % 7) * 1.5 + (g % 3) as x, (g % 5) * 2.0 as y from generate_series(1, {{ var('rows', 300) }}) as g
"""


def _leftovers(project):
    return project.run_sql(
        f"select count(*) from pg_class c join pg_namespace n on n.oid = c.relnamespace "
        f"where n.nspname = '{project.test_schema}' and (c.relname like '%__dbt_tmp%' "
        f"or c.relname like '%__dbt_backup%')", fetch="one")[0]


def _wait_for(path, text, process, seconds=240):
    deadline = time.monotonic() + seconds
    while text not in open(path).read():
        assert process.poll() is None, f"dbt ended before {text!r}:\n{open(path).read()[-3000:]}"
        assert time.monotonic() < deadline, f"never saw {text!r}:\n{open(path).read()[-3000:]}"
        time.sleep(0.1)


def _start(project, profiles_root, log, variables, select):
    dbt = os.path.join(os.path.dirname(sys.executable), "dbt")
    return subprocess.Popen(
        [dbt, "run", "-s", select, "--vars", variables, "--project-dir", str(project.project_root),
         "--profiles-dir", str(profiles_root)],
        stdout=log, stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        # as from a terminal: a CI runner may start the suite with SIGINT ignored, which children inherit
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


class TestKilledRuns:
    @pytest.fixture(scope="class")
    def seeds(self):
        return {"points.csv": SEED}

    @pytest.fixture(scope="class")
    def models(self):
        return {"net.sql": NET, "big.sql": BIG}

    def _state(self, project, table):
        s = project.test_schema
        rows = project.run_sql(f"select count(*) from {s}.{table}", fetch="one")[0]
        return (rows, project.run_sql(f"select max(version), max(version) filter (where status = 'live') "
                                      f"from {s}.sqlflow_models where relation_identifier = '{table}'", fetch="one"))

    def _after_kill(self, project, process, table, before):
        process.wait(timeout=60)
        deadline = time.monotonic() + 60
        while _leftovers(project) and time.monotonic() < deadline:  # the server ends the dead session
            time.sleep(0.2)
        assert _leftovers(project) == 0, "an intermediate or backup relation was left behind"
        assert self._state(project, table) == before, "the previous relation and registry stay"

    @pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
    def test_killed_while_training(self, project, profiles_root, sig):
        run_dbt(["seed"])
        run_dbt(["run", "-s", "net"])
        before = self._state(project, "net")
        path = os.path.join(project.project_root, f"train-{sig.name}.log")
        with open(path, "w") as log:
            process = _start(project, profiles_root, log, "{epochs: 100000}", "net")
            _wait_for(path, "epoch 1/100000", process)
            process.send_signal(sig)
            self._after_kill(project, process, "net", before)
        run_dbt(["run", "-s", "net"])  # the next run succeeds, on top of the last good version
        assert self._state(project, "net")[1] == (before[1][0] + 1,) * 2

    @pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL],
                             ids=["sigint", "sigterm", "sigkill"])
    def test_killed_while_writing(self, project, profiles_root, sig):
        run_dbt(["run", "-s", "big"])
        before = self._state(project, "big")
        path = os.path.join(project.project_root, f"write-{sig.name}.log")
        with open(path, "w") as log:
            process = _start(project, profiles_root, log, "{rows: 1000000}", "big")
            _wait_for(path, "written rows ", process)  # the first batch is written (its progress line)
            process.send_signal(sig)
            self._after_kill(project, process, "big", before)
        run_dbt(["run", "-s", "big", "--vars", "{rows: 3000}"])
        assert self._state(project, "big") == (3000, (before[1][0] + 1,) * 2)


class TestRetryAfterAFailedMLNode:
    @pytest.fixture(scope="class")
    def models(self):
        return {
            "segments.sql": "{{ config(materialized='cluster', n_clusters=2, key='id', seed=1) }}\n"
                            "select * from feed_{{ target.schema }}.points",
            "scores.sql": "{{ config(materialized='ml_predict', model='segments') }}\n"
                          "-- depends_on: {{ ref('segments') }}\nselect * from feed_{{ target.schema }}.points",
        }

    def test_dbt_retry_completes_the_job(self, project):
        feed = f"feed_{project.test_schema}"
        project.run_sql(f"create schema if not exists {feed}")
        results = run_dbt(["run"], expect_pass=False)  # the upstream feed has not landed yet
        assert {r.node.name: str(r.status) for r in results} == {"segments": "error", "scores": "skipped"}
        project.run_sql(f"create table {feed}.points as select g as id, (g % 4) * 1.0 as x "
                        f"from generate_series(1, 40) as g")
        results = run_dbt(["retry"])
        assert {r.node.name: str(r.status) for r in results} == {"segments": "success", "scores": "success"}
        assert project.run_sql(f"select count(*), count(cluster_id) from {project.test_schema}.scores",
                               fetch="one") == (40, 40)
        project.run_sql(f"drop schema {feed} cascade")
