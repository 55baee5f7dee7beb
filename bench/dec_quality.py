"""How well DEC recovers planted groups, against k-means, on synthetic families of 5 groups in 10-D.

    python bench/dec_quality.py [--rows 2000] [--seeds 4]

A quality study, not a timing: the ML layer on arrays (no database), each family standardized as the
adapter's zscore does. Per family: how linearly separable the planted groups are (training accuracy of
a multinomial logistic regression on the true labels: 1.0 = separable), k-means' ARI (n_init 20), and
DEC's ARI for model seeds 0..seeds-1 (encode_units [64, 64, d], d the family's intrinsic dimension;
pretrain_epochs 100; the rest DEC's defaults), and the ARI of the model restarts=<seeds> keeps
(the best silhouette in its own embedding, chosen without the labels).
"""
import argparse
import datetime as dt
import logging
import os
import warnings

import numpy as np

from common import machine

K, DIM = 5, 10


def _lift(points: np.ndarray, rng, noise: float) -> np.ndarray:
    """A fixed smooth non-linear map of low-dimensional points into 10 features, plus noise."""
    lift = np.random.default_rng(0).standard_normal((DIM, points.shape[1]))
    return np.tanh(0.5 * points @ lift.T) + noise * rng.standard_normal((len(points), DIM))


def helix(n, rng, rise=3.0):
    """Consecutive segments of a two-turn helix; k-means cuts across the turns."""
    group = rng.integers(0, K, n)
    t = (group + rng.uniform(0, 0.7, n)) / K
    return _lift(np.column_stack([np.cos(4 * np.pi * t), np.sin(4 * np.pi * t), rise * t]), rng, 0.08), group


def spiral(n, rng):
    """Consecutive segments of a 1.5-turn planar spiral."""
    group = rng.integers(0, K, n)
    t = (group + rng.uniform(0, 0.7, n)) / K
    r, theta = 1 + 2 * t, 3 * np.pi * t
    return _lift(np.column_stack([r * np.cos(theta), r * np.sin(theta), 0.5 * t]), rng, 0.02), group


def moons(n, rng):
    """A chain of five interleaved half circles (scikit-learn's two moons, extended)."""
    group = rng.integers(0, K, n)
    theta = rng.uniform(0, np.pi, n)
    up = group % 2 == 0
    points = np.column_stack([group + np.where(up, np.cos(theta), -np.cos(theta)),
                              np.where(up, np.sin(theta), 0.5 - np.sin(theta))])
    return _lift(points + 0.03 * rng.standard_normal(points.shape), rng, 0.0), group


def rings(n, rng):
    """Five linked rings in a chain, alternately in the xy and the xz plane."""
    group = rng.integers(0, K, n)
    theta = rng.uniform(0, 2 * np.pi, n)
    flat = group % 2 == 0
    points = np.column_stack([1.5 * group + np.cos(theta), np.where(flat, np.sin(theta), 0),
                              np.where(flat, 0, np.sin(theta))])
    return _lift(points + 0.05 * rng.standard_normal(points.shape), rng, 0.0), group


def shells(n, rng):
    """Five concentric spherical shells in all ten dimensions (radius 1..5)."""
    group = rng.integers(0, K, n)
    direction = rng.standard_normal((n, DIM))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    return direction * (1 + group + 0.1 * rng.standard_normal(n))[:, None], group


FAMILIES = [("helix segments (rise 3)", helix, 2), ("helix segments (rise 1.5)", lambda n, r: helix(n, r, 1.5), 2),
            ("spiral segments", spiral, 1), ("interleaved moons", moons, 1), ("linked rings", rings, 2),
            ("concentric shells", shells, 10)]


def separability(X, y) -> float:
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=1e4, max_iter=5000).fit(X, y).score(X, y)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--seeds", type=int, default=4)
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    logging.disable(logging.INFO)  # the per-epoch progress lines
    warnings.filterwarnings("ignore")
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score

    from dataclasses import replace

    from dbt.adapters.sqlflow.ml import dec
    from dbt.adapters.sqlflow.ml.params import Dec

    print(f"### DEC quality: {args.rows:,} rows, 5 planted groups in 10 features, model seeds 0..{args.seeds - 1}")
    print(f"{dt.date.today()}, {machine()}\n")
    print("| family | linearly separable (LR accuracy) | k-means ARI | DEC ARI (min / median / max) "
          f"| seeds with DEC >= 0.8 | seeds with DEC > k-means + 0.05 | DEC, restarts={args.seeds} |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, make, dim in FAMILIES:
        X, y = make(args.rows, np.random.default_rng(101))
        X = (X - X.mean(axis=0)) / X.std(axis=0)
        kmeans = adjusted_rand_score(y, KMeans(K, n_init=20, random_state=0).fit(X).labels_)
        options = Dec(encode_units=[64, 64, dim], pretrain_epochs=100, epochs=20, batch_size=256, learning_rate=0.001,
                      update_interval=140, n_init=20, tol=0.001, activation="relu", run_pretrain=True,
                      k_range=[2, 10], restarts=1, seed=0)
        models = [dec.fit(X, K, replace(options, seed=seed)) for seed in range(args.seeds)]
        scores = [adjusted_rand_score(y, model.assign(X)[0]) for model in models]
        # restarts=<seeds> keeps the model with the best silhouette in its own embedding: no labels used
        kept = int(np.argmax([dec.separation(model, X, 0) for model in models]))
        print(f"| {name} | {separability(X, y):.3f} | {kmeans:.3f} | {min(scores):.3f} / {np.median(scores):.3f} / "
              f"{max(scores):.3f} | {sum(s >= 0.8 for s in scores)}/{len(scores)} | "
              f"{sum(s > kmeans + 0.05 for s in scores)}/{len(scores)} | {scores[kept]:.3f} |", flush=True)


if __name__ == "__main__":
    main()
