"""Seeing the models: model cards (opened in headless Chromium), ml_training_info one row per epoch or
iteration, adapter_response in run_results.json, the dbt docs catalog's stats, quiet progress logs."""
import json
import os
import re
import shutil

import numpy as np
import pytest
from dbt.tests.util import run_dbt, run_dbt_and_capture

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _blobs(n=600, seed=4):
    rng = np.random.default_rng(seed)
    centres = np.array([[0, 0, 0], [6, 6, 0], [0, 6, 6], [6, 0, 6]], float)
    group = np.arange(n) % 4
    X = centres[group] + rng.normal(scale=0.8, size=(n, 3))
    churned = (X[:, 0] + 0.5 * X[:, 1] + rng.normal(scale=1.5, size=n) > 5).astype(int)
    y = 2.0 * X[:, 0] - X[:, 2] + rng.normal(scale=0.5, size=n)
    lines = ["id,x1,x2,x3,churned,y"]
    # x3 is NULL in every 37th row: imputed for training, left out of the profile's means
    lines += [f"{i},{a:.5f},{b:.5f},{'' if i % 37 == 0 else f'{c:.5f}'},{bool(t)},{v:.5f}"
              for i, ((a, b, c), t, v) in enumerate(zip(X, churned, y))]
    return "\n".join(lines) + "\n"


SQL_PROGRAM = """{{ config(materialized='ml_train', model_type='sql', weights={'w': ['feature'], 'b': []},
          learning_rate=0.1, epochs=40, seed=0) }}
with features as (
    select id as obs_id, 'x1' as feature, x1 as value from {{ ref('points') }}
    union all select id, 'x2', x2 from {{ ref('points') }}
), targets as (
    select id as obs_id, y as value from {{ ref('points') }}
), predictions as (
    select f.obs_id, sum(f.value * w.value) + (select value from b) as value
    from features f join w on w.feature = f.feature group by f.obs_id
)
select avg(power(p.value - t.value, 2)) from predictions p join targets t on t.obs_id = p.obs_id
"""

FEATURES = "features=['x1', 'x2', 'x3']"
MODELS = {
    "segments.sql": "{{ config(materialized='cluster', n_clusters=0, k_range=[2, 6], key='id', " + FEATURES
                    + ", seed=1, retrain=var('retrain', 'always')) }} select * from {{ ref('points') }}",
    "mixture.sql": "{{ config(materialized='cluster', model_type='em', n_clusters=4, key='id', " + FEATURES
                   + ", scalable=true, sample_size=200, seed=1) }} select * from {{ ref('points') }}",
    "churn.sql": "{{ config(materialized='ml_train', model_type='logistic_regression', label='churned', key='id', "
                 + FEATURES + ", epochs=200, learning_rate=0.05, validation_split=0.2, seed=1) }} select * from {{ ref('points') }}",
    "amount.sql": "{{ config(materialized='ml_train', model_type='linear_regression', label='y', key='id', "
                  + FEATURES + ", epochs=25, learning_rate=0.1, validation_split=0.2, seed=1) }} select * from {{ ref('points') }}",
    "deep.sql": "{{ config(materialized='cluster', model_type='dec', n_clusters=4, key='id', " + FEATURES
                + ", encode_units=[8, 2], pretrain_epochs=6, epochs=2, batch_size=64, update_interval=5, seed=3) }}"
                " select * from {{ ref('points') }}",
    "objective.sql": SQL_PROGRAM,
    "coder.sql": "{{ config(materialized='ml_train', model_type='autoencoder', key='id', " + FEATURES
                 + ", encode_units=[4, 2], epochs=5, validation_split=0.2, seed=1) }} select * from {{ ref('points') }}",
    "pairs.sql": "{{ config(materialized='ml_train', model_type='factorization_machine', label='y', key='id', "
                 + FEATURES + ", epochs=5, validation_split=0.2, seed=1) }} select * from {{ ref('points') }}",
    "churn_scores.sql": "{{ config(materialized='ml_predict', model='churn') }}\n-- depends_on: {{ ref('churn') }}\n"
                        "select * from {{ ref('points') }}",
    "segment_centroids.sql": "{{ config(materialized='view') }}\nselect * from {{ ml_centroids(ref('segments')) }}",
}
ML_NODES = ["amount", "churn", "coder", "deep", "mixture", "objective", "pairs", "segments"]
CHARTS = {  # what each kind of card must draw
    "segments": {"k_sweep", "sizes", "centroids", "profile"},
    "mixture": {"sizes", "centroids", "profile", "probability"},
    "deep": {"pretraining", "clustering_loss", "sizes", "profile", "probability"},
    "churn": {"loss", "roc", "confusion", "weights"},
    "amount": {"loss", "predicted_vs_actual", "weights"},
    "objective": {"objective"},
    "coder": {"loss"},
    "pairs": {"loss", "predicted_vs_actual", "weights"},
}


def _response(results, name):
    return next(r.adapter_response for r in results if r.node.name == name)


class TestVisibility:
    @pytest.fixture(scope="class")
    def seeds(self):
        return {"points.csv": _blobs()}

    @pytest.fixture(scope="class")
    def models(self):
        return MODELS

    @pytest.fixture(scope="class", autouse=True)
    def built(self, project):
        run_dbt(["seed"])
        results, output = run_dbt_and_capture(["run"])
        assert len(results) == len(MODELS)
        return results, output

    def cards(self, project):
        return os.path.join(project.project_root, "target", "sqlflow", "cards")

    def info(self, project, model):
        """(phase, iteration, loss, eval_loss, learning_rate, duration_ms, label_change) per row."""
        return project.run_sql(
            f"select phase, iteration, loss, eval_loss, learning_rate, duration_ms, label_change "
            f"from {self.macro(project, model)}", fetch="all")

    def macro(self, project, model):
        """The SQL ml_training_info(ref(model)) compiles to."""
        path = os.path.join(project.project_root, "models", f"{model}_history.sql")
        with open(path, "w") as f:
            f.write(f"select * from {{{{ ml_training_info(ref('{model}')) }}}}")
        run_dbt(["run", "-s", f"{model}_history"])
        return f"{project.test_schema}.{model}_history order by iteration, phase desc"

    def test_training_info_has_a_row_per_epoch_or_iteration(self, project):
        s = project.test_schema
        rows = self.info(project, "churn")
        with open(os.path.join(project.project_root, "models", "sweep.sql"), "w") as f:
            f.write("select * from {{ ml_k_sweep(ref('segments')) }}")
        run_dbt(["run", "-s", "sweep"])
        epochs = project.run_sql(f"select (training_info->>'epochs')::int, training_info->'loss' "
                                 f"from {s}.sqlflow_models where model_name = 'churn'", fetch="one")
        assert len(rows) == epochs[0] == 200
        assert [r[1] for r in rows] == list(range(1, 201))
        assert [r[2] for r in rows] == pytest.approx(epochs[1], rel=1e-12)
        assert all(r[0] == "train" and r[3] is not None and r[4] == 0.05 and r[5] > 0 for r in rows), rows[:3]
        sweep = project.run_sql(f"select k, chosen, duration_ms from {s}.sweep order by k", fetch="all")
        assert [r[0] for r in sweep] == [2, 3, 4, 5, 6] and [r[0] for r in sweep if r[1]] == [4]
        assert all(r[2] > 0 for r in sweep)

    def test_every_model_type_reports_its_iterations(self, project):
        objective = self.info(project, "objective")
        assert len(objective) == 40 and {r[0] for r in objective} == {"train"}
        stored = project.run_sql(f"select training_info->'objective' from {project.test_schema}.sqlflow_models "
                                 f"where model_name = 'objective'", fetch="one")[0]
        assert [r[2] for r in objective] == pytest.approx(stored, rel=1e-12)
        # streamed EM: a row per pass, the loss (minus the mean log-likelihood) falling
        mixture = self.info(project, "mixture")
        assert len(mixture) >= 2 and all(r[0] == "fit" and r[5] > 0 for r in mixture)
        assert mixture[-1][2] <= mixture[0][2]
        # in-memory k-means: a row per Lloyd iteration, the inertia falling to the model's
        segments = self.info(project, "segments")
        inertia, iterations = project.run_sql(
            f"select (metrics->>'inertia')::float8, (training_info->>'iterations')::int "
            f"from {project.test_schema}.sqlflow_models where model_name = 'segments'", fetch="one")
        assert [r[1] for r in segments] == list(range(1, iterations + 1))
        assert all(a[2] >= b[2] - 1e-9 for a, b in zip(segments, segments[1:]))
        assert segments[-1][2] == pytest.approx(inertia, rel=1e-3)
        # DEC: its 6 pretraining epochs, then a row per target update with the labels changed
        deep = self.info(project, "deep")
        assert [r[1] for r in deep if r[0] == "pretrain"] == [1, 2, 3, 4, 5, 6]
        updates = [r for r in deep if r[0] == "cluster"]
        assert updates and all(0 <= r[6] <= 1 and r[2] is not None for r in updates)
        assert [r[1] for r in updates] == sorted(r[1] for r in updates)

    def test_what_cards_draw_is_stored_with_the_version(self, project):
        s = project.test_schema
        # the weights chart of a linear model is its weights table (original units)
        drawn = project.run_sql(f"select training_info->'feature_weights' from {s}.sqlflow_models "
                                f"where model_name = 'amount'", fetch="one")[0]
        table = dict(project.run_sql(f"select feature, value from {s}.amount where tensor = 'weights'", fetch="all"))
        assert {w["feature"]: w["weight"] for w in drawn} == pytest.approx(table, rel=1e-9)
        # cluster sizes and the profile are the cluster table's counts and means
        info = project.run_sql(f"select training_info from {s}.sqlflow_models where model_name = 'segments'",
                               fetch="one")[0]
        profile = project.run_sql(f"select cluster_id, size, x1, x2, x3 from {s}.segments__profile order by 1",
                                  fetch="all")
        assert info["sizes"] == [r[1] for r in profile] and info["profile"]["features"] == ["x1", "x2", "x3"]
        assert info["profile"]["means"] == [pytest.approx([float(v) for v in r[2:]], rel=1e-9) for r in profile]
        overall = project.run_sql(f"select avg(x1), avg(x2), avg(x3) from {s}.points", fetch="one")
        assert info["profile"]["overall"] == pytest.approx([float(v) for v in overall], rel=1e-9)
        # the held-out confusion matrix counts the held-out rows; the ROC curve runs from (0, 0) to (1, 1)
        churn = project.run_sql(f"select training_info from {s}.sqlflow_models where model_name = 'churn'",
                                fetch="one")[0]
        assert sum(map(sum, churn["evaluation"]["confusion"])) == churn["held_out_rows"] == 120
        roc = churn["evaluation"]["roc"]
        assert (roc["fpr"][0], roc["tpr"][0], roc["fpr"][-1], roc["tpr"][-1]) == (0, 0, 1, 1)
        mixture = project.run_sql(f"select training_info->'probability_histogram' from {s}.sqlflow_models "
                                  f"where model_name = 'mixture'", fetch="one")[0]
        assert sum(mixture) == 600 and sum(mixture[:5]) == 0  # of 4 clusters, the best is at least 1/4

    def test_adapter_response_carries_the_version_and_key_metrics(self, project, built):
        results, _ = built
        churn = _response(results, "churn")
        assert churn["code"] == "TRAIN" and churn["model_version"] == 1 and churn["model_type"] == "logistic_regression"
        assert churn["training_rows"] == 600 and churn["rows_affected"] == 600
        auc = project.run_sql(f"select (metrics->>'eval_roc_auc')::float8 from {project.test_schema}.sqlflow_models "
                              f"where model_name = 'churn'", fetch="one")[0]
        assert churn["metrics"]["eval_roc_auc"] == pytest.approx(auc)
        assert {"eval_accuracy", "eval_log_loss"} <= set(churn["metrics"])
        segments = _response(results, "segments")
        assert segments["model_version"] == 1 and segments["metrics"]["k"] == 4
        assert "silhouette" in segments["metrics"]
        scored = _response(results, "churn_scores")
        assert scored["code"] == "PREDICT" and scored["model_name"] == "churn" and scored["model_version"] == 1
        run_dbt(["run", "-s", "objective"])  # what an orchestrator reads: the file
        with open(os.path.join(project.project_root, "target", "run_results.json")) as f:
            written = {r["unique_id"].split(".")[-1]: r["adapter_response"] for r in json.load(f)["results"]}
        assert written["objective"]["metrics"]["objective"] > 0 and written["objective"]["model_type"] == "sql"
        assert written["objective"]["model_version"] == 2 and written["objective"]["code"] == "TRAIN"

    def test_catalog_stats_show_the_model_facts(self, project):
        run_dbt(["docs", "generate"])
        with open(os.path.join(project.project_root, "target", "catalog.json")) as f:
            nodes = {k.split(".")[-1]: v for k, v in json.load(f)["nodes"].items()}
        churn = nodes["churn"]["stats"]
        assert churn["has_stats"]["value"] is True
        assert churn["sqlflow_model_type"]["value"] == "logistic_regression"
        assert churn["sqlflow_version"]["value"] == "v1" and churn["sqlflow_rows"]["value"] == "600"
        assert churn["sqlflow_metric_1"]["label"] == "ROC AUC (held out)"
        assert float(churn["sqlflow_metric_1"]["value"]) > 0.5
        assert nodes["segments"]["stats"]["sqlflow_metric_1"]["label"] == "Silhouette"
        assert nodes["objective"]["stats"]["sqlflow_metric_1"]["label"] == "Objective"
        assert nodes["segment_centroids"]["stats"] == {"has_stats": nodes["segment_centroids"]["stats"]["has_stats"]}
        assert nodes["segment_centroids"]["stats"]["has_stats"]["value"] is False
        assert len(nodes["segment_centroids"]["columns"]) >= 4  # the side table's view is documented

    def test_cards_and_index_are_written_and_rebuilt_from_the_registry(self, project):
        folder = self.cards(project)
        assert sorted(f[:-5] for f in os.listdir(folder) if f.endswith(".html") and f != "index.html") == ML_NODES
        with open(os.path.join(folder, "index.html")) as f:
            index = f.read()
        for name in ML_NODES:
            assert f'href="{name}.html"' in index
        with open(os.path.join(folder, "churn.html")) as f:
            card = f.read()
        # self-contained: nothing to fetch (the browser test also listens for requests)
        assert "<script" not in card and not re.search(r"(src|href)=[\"']https?:|url\(https?:|@import", card)
        shutil.rmtree(folder)
        # a version the retrain policy keeps gets the card it lacks
        results = run_dbt(["run", "-s", "segments", "--vars", "{retrain: never}"])
        assert _response(results, "segments")["code"] == "UNCHANGED"
        assert sorted(os.listdir(folder)) == ["index.html", "segments.html", "segments.json"]
        _, output = run_dbt_and_capture(["run-operation", "sqlflow_cards"])
        assert f"{len(ML_NODES)} card(s) written" in output
        assert len([f for f in os.listdir(folder) if f.endswith(".html")]) == len(ML_NODES) + 1
        # an older version: v2 is trained, the v1 card is asked for
        run_dbt(["run", "-s", "amount"])
        run_dbt(["run-operation", "sqlflow_cards", "--args", "{model: amount, version: 1}"])
        with open(os.path.join(folder, "amount.html")) as f:
            assert re.search(r"version <b>1</b>", f.read())
        _, output = run_dbt_and_capture(["run-operation", "sqlflow_cards", "--args", "{model: nope}"],
                                        expect_pass=False)
        assert "no model named 'nope'" in output

    def test_progress_is_a_handful_of_lines(self, project, built, logs_dir):
        _, output = built
        churn_epochs = [line for line in output.splitlines() if re.search(r"epoch \d+/200", line)]
        assert 1 <= len(churn_epochs) <= 10, churn_epochs
        with open(os.path.join(logs_dir, "dbt.log")) as f:
            debug = f.read()
        assert len(set(re.findall(r"epoch (\d+)/200", debug))) == 200  # every epoch in the debug log

    @pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium)")
    def test_cards_render_in_a_real_browser(self, project):
        from playwright.sync_api import sync_playwright

        folder = self.cards(project)
        shots = os.path.join(project.project_root, "target", "sqlflow", "screenshots")
        os.makedirs(shots, exist_ok=True)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=[
                "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run"])
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            errors, failed = [], []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("requestfailed", lambda r: failed.append(r.url))
            for name, expected in CHARTS.items():
                page.goto("file://" + os.path.join(folder, f"{name}.html"))
                sizes = page.eval_on_selector_all(
                    "figure.chart svg",
                    "els => els.map(e => [e.closest('figure').dataset.chart, e.getBoundingClientRect().width, "
                    "e.getBoundingClientRect().height])")
                drawn = {c for c, w, h in sizes if w > 100 and h > 100}
                assert expected <= drawn, (name, sizes)
                assert all(w > 0 and h > 0 for _, w, h in sizes), (name, sizes)
                assert page.inner_text("h1") == name
                page.screenshot(path=os.path.join(shots, f"{name}.png"), full_page=True)
                assert os.path.getsize(os.path.join(shots, f"{name}.png")) > 20_000
            page.goto("file://" + os.path.join(folder, "index.html"))
            assert page.locator("a[href$='.html']").count() == len(ML_NODES)
            page.click("text=churn")
            assert page.inner_text("h1") == "churn"
            browser.close()
        assert errors == [] and failed == []
