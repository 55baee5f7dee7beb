"""stable_ids: a retrained cluster model names its clusters after the live version's, so a row keeps
its cluster id across weekly runs; the matching is recorded in the registry. Through dbt."""
import json

import pytest
from dbt.tests.util import run_dbt

# four groups of customers around (0, 0), (10, 0), (0, 10), (10, 10), spread +-3 on each axis
POINTS = "id,x,y,z\n" + "".join(
    f"{i},{(i % 2) * 10 + ((i * 37) % 61) / 10 - 3},{(i // 2 % 2) * 10 + ((i * 53) % 61) / 10 - 3},"
    f"{(i % 2) + ((i * 71) % 13) / 130}\n" for i in range(800))  # z: another view of x's group

SEGMENTS = """{% set dec = {'encode_units': [16, 2], 'pretrain_epochs': 30, 'epochs': 3, 'batch_size': 64}
                   if var('type', 'kmeans') == 'dec' else {} %}
{{ config(materialized='cluster', model_type=var('type', 'kmeans'), n_clusters=4, key='id',
          seed=var('seed', 1), stable_ids=var('stable', true), retrain='always', **dec) }}
select id, x, y{% if var('z', false) %}, z{% endif %} from {{ ref('points') }}
where (id * 7919) % 20 <> {{ var('drop', -1) }}  -- drop=k leaves out one row in 20 (a 95% resample)
"""


def _ids(project):
    return dict(project.run_sql(f"select id, cluster_id from {project.test_schema}.segments", fetch="all"))


def _matching(project, version):
    info = project.run_sql(f"select training_info from {project.test_schema}.sqlflow_models "
                           f"where relation_identifier = 'segments' and version = {version}", fetch="one")[0]
    return (info if isinstance(info, dict) else json.loads(info))["stable_ids"]


class TestStableIds:
    @pytest.fixture(scope="class")
    def seeds(self):
        return {"points.csv": POINTS}

    @pytest.fixture(scope="class")
    def models(self):
        return {"segments.sql": SEGMENTS}

    def _agreement(self, before, after):
        common = set(before) & set(after)
        assert len(common) >= 0.94 * len(before)
        return sum(before[i] == after[i] for i in common) / len(common)

    @pytest.mark.parametrize("model_type", ["kmeans", "em"])
    def test_a_resample_keeps_the_ids(self, project, model_type):
        run_dbt(["seed"])
        run_dbt(["run", "--full-refresh", "--vars", f"{{type: {model_type}}}"])
        version = project.run_sql(f"select max(version) from {project.test_schema}.sqlflow_models",
                                  fetch="one")[0]
        first = _ids(project)
        # another seed on a 95% resample: the clusters are found in another order, then renamed
        run_dbt(["run", "--vars", f"{{type: {model_type}, seed: 7, drop: 3}}"])
        assert self._agreement(first, _ids(project)) >= 0.98
        matching = _matching(project, version + 1)
        assert matching["matched_to"] == version and matching["method"] == "centre distance"
        assert sorted(matching["ids"]) == [0, 1, 2, 3]
        # another feature: the encoders differ, so the versions are matched on the rows they share
        run_dbt(["run", "--vars", f"{{type: {model_type}, seed: 3, z: true}}"])
        assert self._agreement(first, _ids(project)) >= 0.98
        assert _matching(project, version + 2)["method"] == "membership overlap"

    def test_dec_is_matched_on_the_rows(self, project):
        """DEC's centres live in each version's own embedding: the versions are matched on the rows
        they put together."""
        run_dbt(["seed"])
        run_dbt(["run", "--full-refresh", "--vars", "{type: dec}"])
        version = project.run_sql(f"select max(version) from {project.test_schema}.sqlflow_models",
                                  fetch="one")[0]
        first = _ids(project)
        run_dbt(["run", "--vars", "{type: dec, seed: 7, drop: 3}"])
        matching = _matching(project, version + 1)
        assert matching["matched_to"] == version and matching["method"] == "membership overlap"
        assert self._agreement(first, _ids(project)) >= 0.98

    def test_stable_ids_false_keeps_the_fit_order(self, project):
        run_dbt(["seed"])
        run_dbt(["run", "--vars", "{stable: false, seed: 7}"])
        version = project.run_sql(f"select max(version) from {project.test_schema}.sqlflow_models",
                                  fetch="one")[0]
        assert _matching(project, version) is None
