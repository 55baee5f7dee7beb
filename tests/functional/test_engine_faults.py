"""Engines that fail: a Dask worker or a TensorFlow worker killed mid-job fails the node with an error
naming the engine and the worker, the previous table and registry stay as they were and no work table
is left behind; a scheduler or cluster that cannot be reached fails fast, naming the address tried.
dbt runs as a subprocess, so that the test can kill a worker while the node runs."""

import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from dbt.tests.util import run_dbt, run_dbt_and_capture

POINTS = """
{{ config(materialized='table') }}
select g as id, sin(g * 0.7) as x1, cos(g * 1.3) as x2, (g % 7) / 3.0 as x3,
       (sin(g * 0.7) + cos(g * 1.3) > 0) as label
from generate_series(1, 20000) as g
"""
EM = """
{{ config(materialized='cluster', model_type='em', n_clusters=3, key='id', seed=1, exclude=['label'],
          engine='dask', dask_scheduler=var('scheduler', 'local[2]'), max_iter=var('passes', 5), tol=0) }}
select * from {{ ref('points') }}
"""
LOGIT = """
{{ config(materialized='ml_train', model_type='logistic_regression', label='label', key='id', seed=1,
          engine='tf_multiworker', tf_cluster=var('cluster', 'local[2]'), epochs=var('epochs', 2),
          batch_size=32) }}
select * from {{ ref('points') }}
"""


def _leftovers(project):
    return project.run_sql(
        f"select count(*) from pg_class c join pg_namespace n on n.oid = c.relnamespace "
        f"where n.nspname = '{project.test_schema}' and (c.relname like '%__dbt_tmp%' "
        f"or c.relname like '__sqlflow_%')",
        fetch="one",
    )[0]


def _state(project, name):
    rows = project.run_sql(f"select count(*) from {project.test_schema}.{name}", fetch="one")[0]
    versions = project.run_sql(
        f"select count(*) from {project.test_schema}.sqlflow_models where model_name = '{name}'",
        fetch="one",
    )[0]
    return rows, versions


def _start(project, profiles_root, log, variables, select):
    dbt = os.path.join(os.path.dirname(sys.executable), "dbt")
    return subprocess.Popen(
        [
            dbt,
            "run",
            "-s",
            select,
            "--vars",
            variables,
            "--project-dir",
            str(project.project_root),
            "--profiles-dir",
            str(profiles_root),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def _wait_for(path, text, process, seconds=240):
    deadline = time.monotonic() + seconds
    while text not in open(path).read():
        assert process.poll() is None, f"dbt ended before {text!r}:\n{open(path).read()[-3000:]}"
        assert time.monotonic() < deadline, f"never saw {text!r}:\n{open(path).read()[-3000:]}"
        time.sleep(0.1)


def _pids(pattern):
    out = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


class TestKilledWorkers:
    @pytest.fixture(scope="class")
    def models(self):
        return {"points.sql": POINTS, "em_dask.sql": EM, "logit_tf.sql": LOGIT}

    @pytest.fixture(scope="class", autouse=True)
    def built(self, project):
        run_dbt(["run"])

    def test_killed_tf_worker_fails_the_node_and_keeps_the_table(
        self, project, profiles_root, tmp_path
    ):
        before = _state(project, "logit_tf")
        log_path = tmp_path / "dbt.out"
        with open(log_path, "w") as log:
            process = _start(project, profiles_root, log, "{epochs: 400}", "logit_tf")
            _wait_for(log_path, "epoch 1/400", process)
            victims = _pids("engines.tf_worker train 1")
            assert len(victims) == 1
            os.kill(victims[0], signal.SIGKILL)
            assert process.wait(timeout=120) == 1
        output = open(log_path).read()
        assert "engine 'tf_multiworker': worker 1 (127.0.0.1:" in output
        assert "exited with code -9 during train" in output
        assert "Traceback" not in output
        assert _state(project, "logit_tf") == before
        assert _leftovers(project) == 0
        assert _pids("engines.tf_worker") == []  # the other worker was stopped too
        run_dbt(["run", "-s", "logit_tf"])  # and the next run trains
        assert _state(project, "logit_tf")[1] == before[1] + 1

    def test_lost_dask_worker_fails_the_node_and_keeps_the_table(
        self, project, profiles_root, tmp_path
    ):
        from distributed import Client, LocalCluster

        before = _state(project, "em_dask")
        with (
            LocalCluster(
                n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
            ) as cluster,
            Client(cluster) as client,
        ):
            address = cluster.scheduler_address
            pids = client.run(os.getpid)
            log_path = tmp_path / "dbt.out"
            with open(log_path, "w") as log:
                process = _start(
                    project,
                    profiles_root,
                    log,
                    f"{{scheduler: '{address}', passes: 5000}}",
                    "em_dask",
                )
                _wait_for(log_path, "EM pass 1/5000", process)
                victim, pid = sorted(pids.items())[1]
                os.kill(pid, signal.SIGKILL)
                assert process.wait(timeout=120) == 1
        output = open(log_path).read()
        assert f"engine 'dask': worker {victim} left the cluster during an EM pass" in output
        assert "Traceback" not in output
        assert _state(project, "em_dask") == before
        assert _leftovers(project) == 0


class TestUnreachable:
    @pytest.fixture(scope="class")
    def models(self):
        return {"points.sql": POINTS, "em_dask.sql": EM, "logit_tf.sql": LOGIT}

    def test_dask_scheduler_that_does_not_answer(self, project):
        run_dbt(["run", "-s", "points"])
        started = time.monotonic()
        _, output = run_dbt_and_capture(
            ["run", "-s", "em_dask", "--vars", "{scheduler: 'tcp://127.0.0.1:9'}"],
            expect_pass=False,
        )
        assert (
            "engine 'dask': the scheduler at tcp://127.0.0.1:9 cannot be reached within 10 s"
            in output
        )
        assert time.monotonic() - started < 60
        assert _leftovers(project) == 0

    def test_tf_worker_whose_port_is_taken(self, project):
        run_dbt(["run", "-s", "points"])
        taken = socket.socket()
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        free = socket.socket()
        free.bind(("127.0.0.1", 0))
        other = free.getsockname()[1]
        free.close()
        try:
            cluster = f"{{cluster: {{worker: ['127.0.0.1:{port}', '127.0.0.1:{other}']}}}}"
            _, output = run_dbt_and_capture(
                ["run", "-s", "logit_tf", "--vars", cluster], expect_pass=False
            )
        finally:
            taken.close()
        assert f"127.0.0.1:{port}" in output
        assert "engine 'tf_multiworker'" in output
        assert _leftovers(project) == 0

    def test_tf_worker_on_another_machine_needs_a_launcher(self, project):
        run_dbt(["run", "-s", "points"])
        cluster = "{cluster: {worker: ['10.255.0.1:2222', '10.255.0.2:2222']}}"
        _, output = run_dbt_and_capture(
            ["run", "-s", "logit_tf", "--vars", cluster], expect_pass=False
        )
        assert "worker 0 is at 10.255.0.1, which is not this machine; set tf_launcher" in output


NAN_POINTS = """
{{ config(materialized='table') }}
select g as id, case when g = 77 then 'NaN'::float8 else sin(g) end as x1, cos(g) as x2,
       (g % 2 = 0) as label
from generate_series(1, 500) as g
"""


class TestBadInputOnWorkers:
    """A problem a worker finds in its shard ends the node with the same message as locally."""

    @pytest.fixture(scope="class")
    def models(self):
        return {
            "points.sql": NAN_POINTS,
            "em_dask.sql": EM,
            "logit_tf.sql": LOGIT,
            "dnn_on_dask.sql": LOGIT.replace("logistic_regression", "dnn_classifier")
            .replace("engine='tf_multiworker'", "engine='dask', dask_scheduler='local[1]'"),
        }

    def test_nan_in_a_shard(self, project):
        run_dbt(["run", "-s", "points"])
        for name in ("em_dask", "logit_tf"):
            _, output = run_dbt_and_capture(["run", "-s", name], expect_pass=False)
            assert "feature column 'x1' has 1 NaN or Infinity value(s)" in output, name
            assert "Traceback" not in output and "This is a bug" not in output
        assert _leftovers(project) == 0

    def test_an_engine_that_cannot_run_the_model(self, project):
        _, output = run_dbt_and_capture(["run", "-s", "dnn_on_dask"], expect_pass=False)
        assert "engine 'dask' fits kmeans and em (cluster and ml_train) and scores (ml_predict), " \
               "not dnn_classifier; remove engine" in output
