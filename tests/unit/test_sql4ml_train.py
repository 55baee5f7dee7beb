"""sql4ml training on arrays: full-batch descent on the paper's linear regression reaches the
closed-form ridge solution, deterministically under a seed."""
import numpy as np
import pytest

from dbt.adapters.sqlflow.ml.params import Fitting
from dbt.adapters.sqlflow.sql4ml.program import Program, weight_specs
from dbt.adapters.sqlflow.sql4ml.translate import Translation

pytest.importorskip("tensorflow")

LINEAR = """
with features as (select obs_id, feature, value from house_features),
targets as (select obs_id, price as value from houses),
predictions as (
    select f.obs_id, sum(f.value * w.value) + (select value from b) as value
    from features f join w on w.feature = f.feature group by f.obs_id
)
select avg(power(p.value - t.value, 2)) + 0.001 * (select sum(power(value, 2)) from w)
from predictions p join targets t on t.obs_id = p.obs_id
"""


def problem(n=200, f=3, seed=5):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, f))
    y = X @ np.array([1.5, -2.0, 0.5]) + 0.7 + rng.normal(0, 0.1, n)
    ids, names = np.repeat(np.arange(n), f), np.tile(np.array([f"x{j}" for j in range(f)], object), n)
    data = {"features": {"obs_id": ids, "feature": names, "value": X.ravel()},
            "targets": {"obs_id": np.arange(n), "value": y}}
    return X, y, Translation(Program.parse(LINEAR, weight_specs({"w": ["feature"], "b": []})), data)


def ridge(X, y, lam=0.001):
    """argmin mean((Xw + b - y)^2) + lam |w|^2, from the normal equations."""
    n, f = X.shape
    A = np.zeros((f + 1, f + 1))
    A[:f, :f] = X.T @ X / n + lam * np.eye(f)
    A[:f, f] = A[f, :f] = X.mean(axis=0)
    A[f, f] = 1.0
    rhs = np.append(X.T @ y / n, y.mean())
    solution = np.linalg.solve(A, rhs)
    return solution[:f], solution[f]


def test_full_batch_descent_reaches_the_ridge_solution():
    from dbt.adapters.sqlflow.sql4ml import train

    X, y, translation = problem()
    fitting = Fitting(learning_rate=0.05, epochs=600, batch_size=0, seed=3, optimizer="adam")
    trained = train.fit(translation, fitting)
    w, b = ridge(X, y)
    np.testing.assert_allclose(trained.weights["w"], w, atol=2e-4)
    assert float(trained.weights["b"]) == pytest.approx(b, abs=2e-4)
    assert trained.objective[0] > trained.objective[-1] >= trained.final - 1e-12
    again = train.fit(translation, fitting)
    np.testing.assert_array_equal(again.weights["w"], trained.weights["w"])  # the same under the seed


def test_sparse_training_gives_the_dense_weights():
    from dbt.adapters.sqlflow.sql4ml import train

    X, y, translation = problem()
    fitting = Fitting(learning_rate=0.05, epochs=200, batch_size=0, seed=3, optimizer="adam")
    dense = train.fit(translation, fitting)
    sparse = train.fit(translation, fitting, sparse=["features", "targets"])
    np.testing.assert_allclose(sparse.weights["w"], dense.weights["w"], rtol=1e-9)
    assert sparse.final == pytest.approx(dense.final, rel=1e-9)
