"""sqlflow_export: every model type written as ONNX scores in onnxruntime as ml_predict does (to
1e-5), and format: sql writes a view that scores inside PostgreSQL as ml_predict does."""
import numpy as np
import pytest
from dbt.tests.util import run_dbt, run_dbt_and_capture

CUSTOMERS = "id,x1,x2,plan,spend,churned,tier\n" + "".join(
    f"{i},{(i * 37) % 100 / 10},{'' if i % 17 == 0 else (i * 53) % 100 / 10},{['basic', 'pro'][i % 2]},"
    f"{round(3 * ((i * 37) % 100 / 10) - (i * 53) % 100 / 20 + (i % 7) * 0.3, 3)},"
    f"{str(((i * 37) % 100 / 10 + 0.5 * ((i * 53) % 100 / 10) > 7) != ((i * 7919) % 11 == 0)).lower()},"
    f"{['a', 'b', 'c'][((i * 37) % 100) // 34]}\n"
    for i in range(240))
COMMON = "key='id', features=['x1', 'x2'], seed=1"
TRAINED = {
    "logit": f"model_type='logistic_regression', label='churned', epochs=30, learning_rate=0.1, {COMMON}",
    "linear": f"model_type='linear_regression', label='spend', epochs=30, learning_rate=0.05, {COMMON}",
    "softmax": f"model_type='logistic_regression', label='tier', epochs=30, learning_rate=0.1, {COMMON}",
    "dnn": f"model_type='dnn_classifier', label='churned', hidden_units=[6], epochs=5, {COMMON}",
    "dnnreg": f"model_type='dnn_regressor', label='spend', hidden_units=[6], epochs=5, {COMMON}",
}
CLUSTERS = {
    "km": f"n_clusters=3, {COMMON}",
    "em": f"model_type='em', n_clusters=3, covariance_type='full', {COMMON}",
}


def _models():
    out = {}
    for name, config in TRAINED.items():
        out[f"{name}.sql"] = f"{{{{ config(materialized='ml_train', {config}) }}}}\nselect * from {{{{ ref('customers') }}}}"
    for name, config in CLUSTERS.items():
        out[f"{name}.sql"] = f"{{{{ config(materialized='cluster', {config}) }}}}\nselect * from {{{{ ref('customers') }}}}"
    for name in [*TRAINED, *CLUSTERS]:
        out[f"{name}_scores.sql"] = (
            f"{{{{ config(materialized='ml_predict', model='{name}', output_probabilities=true, in_database=false) }}}}\n"
            f"-- depends_on: {{{{ ref('{name}') }}}}\nselect id, x1, x2 from {{{{ ref('customers') }}}}")
    out["with_plan.sql"] = ("{{ config(materialized='cluster', n_clusters=2, key='id', features=['x1', 'plan']) }}\n"
                            "select * from {{ ref('customers') }}")
    return out


class TestExport:
    @pytest.fixture(scope="class")
    def seeds(self):
        return {"customers.csv": CUSTOMERS}

    @pytest.fixture(scope="class")
    def models(self):
        return _models()

    def _onnx(self, project, name):
        import onnxruntime

        path = f"{project.project_root}/exports/{name}.onnx"
        run_dbt(["run-operation", "sqlflow_export", "--args", f"{{model: {name}, path: exports/{name}.onnx}}"])
        session = onnxruntime.InferenceSession(path)
        rows = project.run_sql(f"select x1, x2 from {project.test_schema}.customers order by id", fetch="all")
        X = np.array([[np.nan if v is None else float(v) for v in r] for r in rows])
        outputs = session.run(None, {session.get_inputs()[0].name: X})
        names = [o.name.split(":")[0] for o in session.get_outputs()]
        return dict(zip(names, outputs)), session.get_modelmeta().custom_metadata_map

    def _scored(self, project, name, columns):
        return np.array(project.run_sql(f"select {columns} from {project.test_schema}.{name}_scores order by id",
                                        fetch="all"), dtype=object)

    def test_onnx_scores_as_ml_predict(self, project):
        run_dbt(["seed"])
        run_dbt(["run"])
        for name in ("logit", "dnn"):
            out, meta = self._onnx(project, name)
            expected = self._scored(project, name, "probability_false, probability_true").astype(float)
            np.testing.assert_allclose(out["probabilities"], expected, atol=1e-5, err_msg=name)
            assert meta["features"] == '["x1", "x2"]' and meta["classes"] == "[false, true]"
        out, meta = self._onnx(project, "softmax")
        expected = self._scored(project, "softmax", "probability_a, probability_b, probability_c").astype(float)
        np.testing.assert_allclose(out["probabilities"], expected, atol=1e-5)
        labels = [c[0] for c in self._scored(project, "softmax", "predicted_tier")]
        assert [["a", "b", "c"][i] for i in out["class_index"]] == labels
        for name in ("linear", "dnnreg"):
            out, _ = self._onnx(project, name)
            expected = self._scored(project, name, "predicted_spend").astype(float)[:, 0]
            np.testing.assert_allclose(out["predicted"], expected, rtol=1e-5, atol=1e-5, err_msg=name)
        out, _ = self._onnx(project, "km")
        scored = self._scored(project, "km", "cluster_id, cluster_distance")
        assert out["cluster_id"].tolist() == scored[:, 0].tolist()
        np.testing.assert_allclose(out["cluster_distance"], scored[:, 1].astype(float), atol=1e-9)
        out, _ = self._onnx(project, "em")
        scored = self._scored(project, "em", "cluster_id, cluster_probability, probability_0, probability_1, "
                                             "probability_2")
        assert out["cluster_id"].tolist() == scored[:, 0].tolist()
        np.testing.assert_allclose(out["probabilities"], scored[:, 2:].astype(float), atol=1e-9)

    def test_sql_view_scores_as_ml_predict(self, project):
        s = project.test_schema
        run_dbt(["seed"])
        run_dbt(["run", "-s", "+km_scores", "+logit_scores"])
        for name, columns in (("km", "cluster_id, cluster_distance"), ("logit", "predicted_churned")):
            path = f"{project.project_root}/exports/{name}.sql"
            run_dbt(["run-operation", "sqlflow_export", "--args",
                     f"{{model: {name}, format: sql, path: exports/{name}.sql, input: {s}.customers}}"])
            project.run_sql(open(path).read())
            live = project.run_sql(f"select version from {s}.sqlflow_models where relation_identifier = "
                                   f"'{name}' and status = 'live'", fetch="one")[0]
            view = project.run_sql(f"select id, {columns}, model_version from {s}.{name}_v{live}_scoring "
                                   f"order by id", fetch="all")
            scored = project.run_sql(f"select id, {columns}, model_version from {s}.{name}_scores order by id",
                                     fetch="all")
            assert len(view) == 240
            for a, b in zip(view, scored):
                assert a[0] == b[0] and a[-1] == b[-1] and (a[1] == b[1] if name == "logit" else
                                                            a[1] == b[1] and abs(a[2] - b[2]) < 1e-9)

    def test_clear_errors(self, project):
        run_dbt(["seed"])
        run_dbt(["run", "-s", "with_plan"])
        _, output = run_dbt_and_capture(["run-operation", "sqlflow_export", "--args", "{model: with_plan}"],
                                        expect_pass=False)
        assert "ONNX export takes numeric features; with_plan v" in output and "also encodes plan" in output
        assert "format: sql" in output
        _, output = run_dbt_and_capture(["run-operation", "sqlflow_export", "--args",
                                         "{model: with_plan, format: sql}"], expect_pass=False)
        assert "format: sql scores a relation: add input: <schema.table>" in output
        _, output = run_dbt_and_capture(["run-operation", "sqlflow_export", "--args",
                                         "{model: with_plan, version: latest}"], expect_pass=False)
        assert "version must be a version number" in output and "got 'latest'" in output
