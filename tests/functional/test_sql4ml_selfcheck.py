"""sql4ml against real PostgreSQL: data CTEs run in the database and are read through the COPY path;
the user's own objective, run in PostgreSQL with the weights as VALUES relations, equals the
translated objective (the self-check a training run will make)."""
import numpy as np
import pytest

from dbt.adapters.sqlflow.data import read_frame
from dbt.adapters.sqlflow.sql4ml.program import Program, weight_specs
from dbt.adapters.sqlflow.sql4ml.tensors import NumpyBackend
from dbt.adapters.sqlflow.sql4ml.train import with_weights
from dbt.adapters.sqlflow.sql4ml.translate import Translation

PROGRAM = """
with features as (                    -- long format, as the paper's Listing 1
    select obs_id, feature, value from house_features where value is not null
), targets as (
    select obs_id, price as value from houses
), predictions as (
    select f.obs_id, sum(f.value * w.value) + (select value from b) as value
    from features f join w on w.feature = f.feature
    group by f.obs_id
)
select avg(power(p.value - t.value, 2)) + 0.001 * (select sum(power(value, 2)) from w)
from predictions p join targets t on t.obs_id = p.obs_id
"""


@pytest.fixture
def houses(pg_conn):
    rng = np.random.default_rng(11)
    with pg_conn.cursor() as cur:
        cur.execute("create table houses (obs_id int primary key, price float8)")
        cur.execute("create table house_features (obs_id int, feature text, value float8)")
        for i in range(30):
            cur.execute("insert into houses values (%s, %s)", (i, float(rng.normal(100, 10))))
            for name in ("area", "rooms", "age", "o'hare distance"):
                value = None if (i, name) == (4, "age") else float(rng.normal())
                cur.execute("insert into house_features values (%s, %s, %s)", (i, name, value))
    return pg_conn


def test_objective_in_postgresql_equals_the_translation(houses):
    program = Program.parse(PROGRAM, weight_specs({"w": ["feature"], "b": []}))
    data = {}
    for name in program.data:
        frame = read_frame(houses, program.data_sql(name))
        data[name] = {c.name: c.values for c in frame.columns}
    translation = Translation(program, data)
    assert translation.weight_shape("w") == (4,)
    rng = np.random.default_rng(2)
    weights = {"w": rng.normal(size=4), "b": np.float64(99.5)}
    translated = float(translation.evaluate(NumpyBackend(), weights))
    with houses.cursor() as cur:
        cur.execute(with_weights(translation, weights))
        in_postgresql = cur.fetchone()[0]
    assert in_postgresql == pytest.approx(translated, rel=1e-9)


FM = """
with features as (select obs_id, feature, value from house_features where value is not null),
targets as (select obs_id, price as value from houses),
linear as (select f.obs_id, sum(f.value * w.value) as value from features f join w on w.feature = f.feature
           group by f.obs_id),
factor_sums as (select f.obs_id, v.factor, sum(f.value * v.value) as s,
                       sum(power(f.value, 2) * power(v.value, 2)) as s2
                from features f join v on v.feature = f.feature group by f.obs_id, v.factor),
interactions as (select obs_id, 0.5 * sum(power(s, 2) - s2) as value from factor_sums group by obs_id),
predictions as (select l.obs_id, l.value + i.value + (select value from b) as value
                from linear l join interactions i on i.obs_id = l.obs_id)
select avg(power(p.value - t.value, 2)) from predictions p join targets t on t.obs_id = p.obs_id
"""


@pytest.mark.parametrize("sql, weights", [
    (PROGRAM, {"w": ["feature"], "b": []}),
    (FM, {"w": ["feature"], "b": [], "v": {"index": ["feature", "factor"], "size": {"factor": 3}}}),
])
def test_ml_predict_sql_equals_tensorflow_predictions(houses, sql, weights):
    """The SQL ml_predict runs (the prediction CTE over the weights, a SELECT in place of `features`)
    returns TensorFlow's prediction for every key, to 1e-9."""
    tf = pytest.importorskip("tensorflow")
    from dbt.adapters.sqlflow.sql4ml.scoring import prediction_sql
    from dbt.adapters.sqlflow.sql4ml.tensors import TensorflowBackend
    from dbt.adapters.sqlflow.sql4ml.train import weight_rows

    program = Program.parse(sql, weight_specs(weights))
    data = {}
    for name in program.data:
        frame = read_frame(houses, program.data_sql(name))
        data[name] = {c.name: c.values for c in frame.columns}
    translation = Translation(program, data)
    rng = np.random.default_rng(4)
    arrays = {n: rng.normal(size=translation.weight_shape(n)) for n in program.weights}
    expected = translation.predictions(TensorflowBackend(tf), {n: tf.constant(a) for n, a in arrays.items()},
                                       "predictions")
    parameters = {"program": sql, "prediction": "predictions", "prediction_keys": ["obs_id"],
                  "weights": {n: {"rows": weight_rows(translation, n, a)} for n, a in arrays.items()}}
    scoring = prediction_sql(parameters, {"weights": weights},
                             "select obs_id, feature, value from house_features where value is not null and obs_id < 20",
                             3, None, None)
    with houses.cursor() as cur:
        cur.execute(scoring)
        rows = cur.fetchall()
    assert len(rows) == 20 and {r[2] for r in rows} == {3}
    for obs_id, value, _ in rows:
        assert value == pytest.approx(expected[(obs_id,)], rel=1e-9)
