"""Progress lines, training-history rows, key metrics and cards of older registry rows: no database."""
import logging
import re

import numpy as np
import pytest

from dbt.adapters.sqlflow import facts
from dbt.adapters.sqlflow.ml import history
from dbt.adapters.sqlflow.progress import Progress


class Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records = []

    def emit(self, record):
        self.records.append(record)


def progress_lines(total, steps):
    log = logging.getLogger(f"test_progress_{total}_{len(steps)}")
    log.setLevel(logging.DEBUG)
    log.propagate = False
    handler = Collect()
    log.addHandler(handler)
    progress = Progress(log, "epoch", total)
    for done in steps:
        progress.step(done, "loss 1")
    info = [r.getMessage() for r in handler.records if r.levelno == logging.INFO]
    debug = [r.getMessage() for r in handler.records if r.levelno == logging.DEBUG]
    return info, debug


@pytest.mark.parametrize("total", [1, 3, 9, 10, 11, 200, 100_000])
def test_progress_shows_at_most_ten_lines_and_logs_every_step(total):
    info, debug = progress_lines(total, range(1, total + 1))
    assert len(info) == min(total, 10)
    assert len(info) + len(debug) == total
    assert info[0].startswith("epoch 1/") and info[-1].startswith(f"epoch {total}/{total}")


def test_progress_of_a_loop_reporting_every_nth_step_still_shows_each_tenth():
    info, _ = progress_lines(1000, range(30, 1001, 30))  # DEC reports at its target updates
    assert 8 <= len(info) <= 10
    tenths = [int(re.match(r"epoch (\d+)/", line).group(1)) * 10 // 1000 for line in info]
    assert tenths == sorted(set(tenths))


def test_dec_history_has_pretraining_epochs_and_a_row_per_target_update():
    info = {
        "pretrain_loss": [0.9, 0.5, 0.4],
        "pretrain_epoch_seconds": [0.2, 0.1, 0.1],
        "loss": [1.0, 1.0, 0.8, 0.6, 0.6, 0.5, 0.4],
        "label_change": [0.2, 0.05],
        "update_seconds": [0.0, 1.5, 2.5],
        "update_interval": 3,
    }
    rows = history.dec(info, 0.001)
    assert [(r["phase"], r["iteration"]) for r in rows] == [
        ("pretrain", 1), ("pretrain", 2), ("pretrain", 3), ("cluster", 3), ("cluster", 6)]
    assert rows[3]["loss"] == pytest.approx(0.9333333333) and rows[4]["loss"] == pytest.approx(0.5666666667)
    assert rows[3]["label_change"] == 0.2 and rows[4]["duration_ms"] == 1000.0
    assert rows[0]["duration_ms"] == 200.0 and all(r["learning_rate"] == 0.001 for r in rows)


def test_streamed_kmeans_rows_carry_the_centre_shift_not_a_loss():
    rows = history.clustering({"trace": [None, 0.3, 0.01], "trace_kind": "centre_shift",
                               "pass_seconds": [1, 1, 1]}, 3.0, 12.0)
    assert [r["loss"] for r in rows] == [None] * 3 and [r["centre_shift"] for r in rows] == [None, 0.3, 0.01]
    (fit,) = history.clustering({"iterations": 7}, 0.5, 12.0)
    assert (fit["iteration"], fit["loss"], fit["duration_ms"]) == (7, 12.0, 500.0)


def test_key_metrics_follow_the_kind_of_model():
    assert facts.key_metric("kmeans", {}, {"silhouette": 0.4, "inertia": 9.0}) == ("Silhouette", 0.4)
    assert facts.key_metric("dnn_classifier", {"task": "binary"}, {"eval_roc_auc": 0.8})[0] == "ROC AUC (held out)"
    assert facts.key_metric("factorization_machine", {"task": "binary"}, {"eval_accuracy": 0.7})[1] == 0.7
    assert facts.key_metric("factorization_machine", {"task": "regression"}, {"eval_r2": 0.9})[1] == 0.9
    assert facts.key_metric("sql", {}, {"objective": 2.5}) == ("Objective", 2.5)
    assert facts.key_metric("linear_regression", {}, {"k": True}) == ("", None)  # booleans are not metrics


def test_a_card_of_a_version_trained_before_cards_still_renders():
    pytest.importorskip("matplotlib")
    from dbt.adapters.sqlflow import cards
    from dbt.adapters.sqlflow.registry import ModelVersion

    old = ModelVersion("segments", 1, "kmeans", {"n_clusters": 3}, {"features": [], "encoded": ["x", "y"]},
                       None, {"centers": [[0.0, 1.0], [1.0, 0.0], [2.0, 2.0]]}, {"silhouette": 0.5},
                       {"iterations": 4}, 90, "", "")
    versions = [{"version": 1, "status": "live", "model_type": "kmeans", "parameters": {}, "metrics": {"silhouette": 0.5},
                 "row_count": 90, "trained_at": "2026-01-01", "invocation_id": "abc"}]
    html = cards.card_html(old, versions)
    assert re.findall(r'data-chart="(\w+)"', html) == ["centroids"]  # what the old row can show
    assert "<h1>segments</h1>" in html and "0.5" in html


def test_in_memory_kmeans_and_em_record_every_iteration_loss():
    import threading

    from dbt.adapters.sqlflow.ml import clustering

    rng = np.random.default_rng(0)
    X = np.vstack([rng.normal(c, 1.0, size=(300, 2)) for c in ((0, 0), (5, 5), (0, 5))])
    km = clustering.fit(X, "kmeans", 3, seed=2)
    trace = km.info["trace"]
    assert len(trace) == km.info["iterations"] and len(km.info["pass_seconds"]) == len(trace)
    assert all(a >= b - 1e-9 for a, b in zip(trace, trace[1:]))  # Lloyd never raises the inertia
    assert trace[-1] == pytest.approx(km.info["inertia"], rel=1e-3)  # the last iteration
    em = clustering.fit(X, "em", 3, seed=2)
    trace = em.info["trace"]
    assert len(trace) == em.info["iterations"] and trace[-1] == pytest.approx(-em.info["lower_bound"])
    assert all(a >= b - 1e-4 for a, b in zip(trace, trace[1:]))  # EM raises the bound (5 printed decimals)
    # another thread printing meanwhile keeps its output; the fit's lines are not printed
    import contextlib
    import io
    import sys

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        worker = threading.Thread(target=lambda: [print("other thread") for _ in range(50)])
        worker.start()
        clustering.fit(X, "kmeans", 3, seed=2)
        worker.join()
    assert out.getvalue().count("other thread") == 50 and "inertia" not in out.getvalue()
    assert not type(sys.stdout).__name__ == "_ThreadRouter"
