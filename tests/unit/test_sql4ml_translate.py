"""sql4ml's translated part on arrays: the paper's programs evaluate to what numpy computes directly,
in long and in wide format and for a rank-3 factorization machine; unsupported SQL fails clearly."""
import numpy as np
import pytest

from dbt.adapters.sqlflow.sql4ml.program import Program, ProgramError, weight_specs
from dbt.adapters.sqlflow.sql4ml.tensors import NumpyBackend
from dbt.adapters.sqlflow.sql4ml.translate import Translation

RNG = np.random.default_rng(7)
N, F = 12, 4
X = RNG.normal(size=(N, F))
Y = RNG.normal(size=N)
FEATURES = np.array([f"f{j}" for j in range(F)], dtype=object)
# long format (obs_id, feature, value), one row missing: a sparse input
LONG = [(i, FEATURES[j], X[i, j]) for i in range(N) for j in range(F) if (i, j) != (3, 2)]
X_SPARSE = X.copy()
X_SPARSE[3, 2] = 0.0

LINEAR = """
with features as (select obs_id, feature, value from house_features),
targets as (select obs_id, price as value from houses),
predictions as (
    select f.obs_id, sum(f.value * w.value) + (select value from b) as value
    from features f join w on w.feature = f.feature
    group by f.obs_id
)
select avg(power(p.value - t.value, 2)) + 0.001 * (select sum(power(value, 2)) from w)
from predictions p join targets t on t.obs_id = p.obs_id
"""


def long_data():
    ids, names, values = (np.array(c) for c in zip(*LONG))
    return {"features": {"obs_id": ids.astype(np.int64), "feature": names.astype(object), "value": values.astype(float)},
            "targets": {"obs_id": np.arange(N), "value": Y}}


def translated(sql, weights, data):
    program = Program.parse(sql, weight_specs(weights))
    return program, Translation(program, data)


def test_the_papers_linear_regression_in_long_format():
    program, t = translated(LINEAR, {"w": ["feature"], "b": []}, long_data())
    assert program.model == ["predictions"] and program.data == ["features", "targets"]
    assert t.weight_shape("w") == (F,) and t.weight_shape("b") == ()
    w, b = RNG.normal(size=F), 0.3
    got = t.evaluate(NumpyBackend(), {"w": w, "b": np.float64(b)})
    expected = np.mean((X_SPARSE @ w + b - Y) ** 2) + 0.001 * np.sum(w ** 2)
    assert float(got) == pytest.approx(expected, rel=1e-12)


def test_wide_format_with_scalar_weights():
    sql = """
    with houses as (select obs_id, x0, x1, price from raw),
    predictions as (
        select h.obs_id, h.x0 * (select value from w0) + h.x1 * (select value from w1) as value from houses h
    )
    select avg(power(p.value - h.price, 2)) from predictions p join houses h on h.obs_id = p.obs_id
    """
    data = {"houses": {"obs_id": np.arange(N), "x0": X[:, 0], "x1": X[:, 1], "price": Y}}
    _, t = translated(sql, {"w0": [], "w1": []}, data)
    got = t.evaluate(NumpyBackend(), {"w0": np.float64(0.5), "w1": np.float64(-2.0)})
    assert float(got) == pytest.approx(np.mean((0.5 * X[:, 0] - 2.0 * X[:, 1] - Y) ** 2), rel=1e-12)


FM = """
with x as (select obs_id, feature, value from data),
t as (select obs_id, y as value from labels),
lin as (select x.obs_id, sum(x.value * w.value) as value from x join w on w.feature = x.feature group by x.obs_id),
s1 as (select x.obs_id, v.factor, sum(x.value * v.value) as value
       from x join v on v.feature = x.feature group by x.obs_id, v.factor),
s2 as (select x.obs_id, v.factor, sum(power(x.value, 2) * power(v.value, 2)) as value
       from x join v on v.feature = x.feature group by x.obs_id, v.factor),
pair as (select s1.obs_id, 0.5 * sum(power(s1.value, 2) - s2.value) as value
         from s1 join s2 on s2.obs_id = s1.obs_id and s2.factor = s1.factor group by s1.obs_id),
pred as (select lin.obs_id, lin.value + pair.value as value from lin join pair on pair.obs_id = lin.obs_id)
select avg(power(pred.value - t.value, 2)) from pred join t on t.obs_id = pred.obs_id
"""


def test_a_rank_3_factorization_machine():
    data = long_data()
    data = {"x": data["features"], "t": data["targets"]}
    _, t = translated(FM, {"w": ["feature"], "v": {"index": ["feature", "factor"], "size": {"factor": 3}}}, data)
    assert t.weight_shape("v") == (F, 3)
    w, v = RNG.normal(size=F), RNG.normal(size=(F, 3))
    got = t.evaluate(NumpyBackend(), {"w": w, "v": v})
    pairwise = 0.5 * (((X_SPARSE @ v) ** 2) - ((X_SPARSE ** 2) @ (v ** 2))).sum(axis=1)
    assert float(got) == pytest.approx(np.mean((X_SPARSE @ w + pairwise - Y) ** 2), rel=1e-12)


def test_the_same_objective_in_tensorflow_float64_with_gradients():
    tf = pytest.importorskip("tensorflow")
    from dbt.adapters.sqlflow.sql4ml.tensors import TensorflowBackend

    _, t = translated(LINEAR, {"w": ["feature"], "b": []}, long_data())
    backend = TensorflowBackend(tf)
    w, b = tf.Variable(np.full(F, 0.1)), tf.Variable(np.float64(0.2))
    with tf.GradientTape() as tape:
        loss = t.evaluate(backend, {"w": w, "b": b})
    grad_w, grad_b = tape.gradient(loss, [w, b])
    residual = X_SPARSE @ np.full(F, 0.1) + 0.2 - Y
    assert float(loss) == pytest.approx(np.mean(residual ** 2) + 0.001 * F * 0.01, rel=1e-12)
    np.testing.assert_allclose(grad_w.numpy(), 2 * X_SPARSE.T @ residual / N + 0.002 * 0.1, rtol=1e-10)
    assert float(grad_b) == pytest.approx(2 * residual.mean(), rel=1e-10)


@pytest.mark.parametrize("sql, weights, message", [
    (LINEAR.replace("(select value from b)", "(select value from bias)"), {"w": ["feature"], "b": []},
     "reads 'bias', which is neither a CTE of the program nor a declared weight"),
    (LINEAR.replace("from features f join w", "from house_features f join w"), {"w": ["feature"], "b": []},
     "reads 'house_features', which is neither a CTE of the program nor a declared weight"),
    (LINEAR.replace("sum(f.value * w.value)", "sum(f.value * w.value) over ()"), {"w": ["feature"], "b": []},
     "is not supported in the part of the program that depends on a weight"),
])
def test_mistakes_are_clear_errors(sql, weights, message):
    with pytest.raises(ProgramError, match=message.replace("(", r"\(").replace(")", r"\)")):
        _, t = translated(sql, weights, long_data())
        t.evaluate(NumpyBackend(), {"w": np.zeros(F), "b": np.float64(0)})


def test_an_unused_weight_is_left_out_and_reported():
    program = Program.parse(LINEAR, weight_specs({"w": ["feature"], "b": [], "unused": []}))
    assert program.unused == ["unused"] and list(program.weights) == ["w", "b"]


def test_an_index_without_a_domain_is_named():
    sql = LINEAR.replace("(select value from b)", "(select sum(value) from b)")
    with pytest.raises(ProgramError, match="b.k has no domain"):
        translated(sql, {"w": ["feature"], "b": ["k"]}, long_data())


def test_log_and_case_follow_postgresql():
    sql = """
    with houses as (select obs_id, x0, price from raw),
    predictions as (
        select h.obs_id, case when h.x0 > 0 then log(1 + h.x0 * h.x0) else log(2, 2 + h.x0 * h.x0) end
                         * (select value from w) as value
        from houses h
    )
    select sum(p.value - h.price) from predictions p join houses h on h.obs_id = p.obs_id
    """
    data = {"houses": {"obs_id": np.arange(N), "x0": X[:, 0], "price": Y}}
    _, t = translated(sql, {"w": []}, data)
    got = t.evaluate(NumpyBackend(), {"w": np.float64(1.5)})
    x = X[:, 0]
    value = np.where(x > 0, np.log10(1 + x * x), np.log2(2 + x * x)) * 1.5
    assert float(got) == pytest.approx(np.sum(value - Y), rel=1e-12)


def test_dense_size_counts_the_key_domains_not_the_rows():
    _, t = translated(LINEAR, {"w": ["feature"], "b": []}, long_data())
    # features: N x F cells, a value tensor and a mask; targets: N cells, value and mask
    assert t.dense_bytes() == 8 * (N * F * 2 + N * 2)


def test_structural_mistakes_are_found_without_the_data_tensors():
    from dbt.adapters.sqlflow.sql4ml import codegen

    data = long_data()
    data["features"]["value"] = data["features"]["value"].astype(str).astype(object)
    _, t = translated(LINEAR, {"w": ["feature"], "b": []}, data)
    with pytest.raises(ProgramError, match="f.value in predictions .* is text"):
        codegen.trace(t, {})


@pytest.mark.parametrize("old, new, message", [
    ("group by f.obs_id", "where f.value > 0 group by f.obs_id", "WHERE in predictions"),
    ("group by f.obs_id", "group by f.obs_id having count(*) > 1", "HAVING in predictions"),
    ("from features f join w", "from features f left join w", "LEFT JOIN in predictions"),
    ("select f.obs_id, sum", "select distinct f.obs_id, sum", "DISTINCT in predictions"),
])
def test_clauses_the_translation_would_ignore_are_refused(old, new, message):
    with pytest.raises(ProgramError, match=message + r" \(line \d+, column \d+\) is not supported"):
        translated(LINEAR.replace(old, new), {"w": ["feature"], "b": []}, long_data())


def test_a_where_in_a_data_cte_is_fine():
    sql = LINEAR.replace("from house_features)", "from house_features where value > -100)")
    _, t = translated(sql, {"w": ["feature"], "b": []}, long_data())
    assert t.weight_shape("w") == (F,)


def one_hot(n=3000, features=200, per_row=3, seed=11):
    """Long-format one-hot features: each observation has `per_row` of `features` set (1.5% dense)."""
    rng = np.random.default_rng(seed)
    names = np.array([f"f{j:03d}" for j in range(features)], dtype=object)
    picked = np.stack([rng.choice(features, per_row, replace=False) for _ in range(n)])
    ids = np.repeat(np.arange(n), per_row)
    X = np.zeros((n, features))
    X[ids, picked.ravel()] = 1.0
    data = {"x": {"obs_id": ids, "feature": names[picked.ravel()], "value": np.ones(n * per_row)},
            "t": {"obs_id": np.arange(n), "value": rng.normal(size=n)}}
    return X, data


@pytest.mark.parametrize("frozen", [False, True])
def test_sparse_relations_evaluate_exactly_as_dense(frozen):
    # the FM reads the features in sums of products, squares and pairs: every sparse path
    _, t = translated(FM, {"w": ["feature"], "v": {"index": ["feature", "factor"], "size": {"factor": 4}}},
                      one_hot()[1])
    assert t.sparse_names("auto") == ["x"]  # 600k cells, 1.5% filled; the targets are dense
    w, v = RNG.normal(size=200), RNG.normal(size=(200, 4))
    b = NumpyBackend()
    t.frozen = {} if frozen else None
    dense = t.evaluate(b, {"w": w, "v": v})
    sparse = t.evaluate(b, {"w": w, "v": v}, t.data_relations(b, ["x"]))
    assert float(sparse) == pytest.approx(float(dense), rel=1e-12)
    _, small = translated(LINEAR, {"w": ["feature"], "b": []}, long_data())
    assert small.sparse_names("auto") == [] and small.sparse_names(True) == ["features", "targets"]
    assert small.sparse_names(False) == []


def test_sparse_memory_is_counted_per_row():
    _, t = translated(FM, {"w": ["feature"], "v": {"index": ["feature", "factor"], "size": {"factor": 4}}},
                      one_hot()[1])
    rows = 3000 * 3  # obs_id, feature coordinates + value + mask per row
    assert t.dense_bytes(["x"]) == 8 * rows * 4 + 8 * 3000 * 2
    assert t.dense_bytes() == 8 * 3000 * 200 * 2 + 8 * 3000 * 2


def test_sparse_gradients_in_tensorflow_equal_the_dense_ones():
    tf = pytest.importorskip("tensorflow")
    from dbt.adapters.sqlflow.sql4ml.tensors import TensorflowBackend

    X, data = one_hot()
    _, t = translated(FM, {"w": ["feature"], "v": {"index": ["feature", "factor"], "size": {"factor": 4}}}, data)
    backend = TensorflowBackend(tf)
    grads = []
    for sparse in ([], ["x"]):
        w, v = tf.Variable(np.full(200, 0.05)), tf.Variable(np.full((200, 4), 0.02))
        with tf.GradientTape() as tape:
            loss = t.evaluate(backend, {"w": w, "v": v}, t.data_relations(backend, sparse))
        grads.append([tf.convert_to_tensor(g).numpy() for g in tape.gradient(loss, [w, v])] + [float(loss)])
    (gw, gv, loss), (sw, sv, sloss) = grads
    assert sloss == pytest.approx(loss, rel=1e-12)
    np.testing.assert_allclose(sw, gw, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(sv, gv, rtol=1e-10, atol=1e-14)
    # and the linear part's gradient is the closed form, over the observations' one-hot rows
    residual = X @ np.full(200, 0.05) + 0.5 * ((X @ np.full((200, 4), 0.02)) ** 2 - X @ np.full((200, 4), 0.02 ** 2)).sum(1) - data["t"]["value"]
    np.testing.assert_allclose(sw, 2 * X.T @ residual / 3000, rtol=1e-9)


def test_a_sparse_product_with_several_dense_factors_is_gathered_at_its_rows():
    # x[obs, feature] * w[feature] * t[obs]: not one matrix product (obs is kept and shared with t)
    sql = """
    with x as (select obs_id, feature, value from data), t as (select obs_id, y as value from labels),
    pred as (select x.obs_id, sum(x.value * w.value * t.value) as value
             from x join w on w.feature = x.feature join t on t.obs_id = x.obs_id group by x.obs_id)
    select sum(pred.value) + avg(pred.value) from pred
    """
    X, data = one_hot()
    _, t = translated(sql, {"w": ["feature"]}, data)
    w, b = RNG.normal(size=200), NumpyBackend()
    expected = (X @ w) * data["t"]["value"]
    for held in ([], ["x"], ["x", "t"]):
        got = t.evaluate(b, {"w": w}, t.data_relations(b, held))
        assert float(got) == pytest.approx(expected.sum() + expected.mean(), rel=1e-12)
