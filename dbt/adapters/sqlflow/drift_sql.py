"""The SELECT of the `sqlflow_drift` test: per feature, the population stability index (PSI) of a
relation against the training profile stored with the model version, one row per feature above the
threshold. Bins are the training quantiles (continuous) or the kept states (categorical), plus one for
NULLs; PSI = sum((observed - expected) * ln(observed / expected)), shares floored at 1e-4."""

from typing import Dict, List, Optional, Sequence

from dbt.adapters.sqlflow.data.pgtypes import quote_ident
from dbt.adapters.sqlflow.errors import InputError
from dbt.adapters.sqlflow.scoring_sql import continuous_value, literal

FLOOR = 1e-4
NULL_BIN = -1


def _bin(feature: Dict, kind: str) -> str:
    column = quote_ident(feature["name"])
    profile = feature["profile"]
    if feature["kind"] == "continuous":
        value = continuous_value(column, kind)
        if not profile["edges"]:
            return f"case when {column} is null then {NULL_BIN} else 0 end"
        edges = ", ".join(literal(float(e)) for e in profile["edges"])
        return f"case when {column} is null then {NULL_BIN} else width_bucket({value}, array[{edges}]) end"
    cases = " ".join(f"when {literal(s)} then {i}" for i, s in enumerate(profile["states"]))
    other = len(profile["states"])
    return f"case when {column} is null then {NULL_BIN} else case {column}::text {cases} else {other} end end"


def _expected(feature: Dict) -> List[str]:
    profile, name = feature["profile"], literal(feature["name"])
    rows = [f"({name}, {NULL_BIN}, {literal(float(profile['nulls']))})"]
    rows += [
        f"({name}, {i}, {literal(float(share))})" for i, share in enumerate(profile["shares"])
    ]
    return rows


def profiled(
    features: Dict, model: str, version: int, wanted: Optional[Sequence[str]]
) -> List[Dict]:
    """The model's features with a training profile, or those named in `wanted`."""
    known = [f for f in features["features"] if not f.get("dropped")]
    if not all("profile" in f for f in known):
        raise InputError(
            f"model '{model}' v{version} was trained before training profiles were stored; "
            f"retrain it (dbt run -s {model}) to test drift."
        )
    if wanted is None:
        return known
    names = [f["name"] for f in known]
    unknown = [w for w in wanted if w not in names]
    if unknown:
        raise InputError(
            f"sqlflow_drift features {', '.join(repr(u) for u in unknown)} are not features of "
            f"'{model}' v{version}; its features are: {', '.join(names)}."
        )
    return [f for f in known if f["name"] in wanted]


def psi_select(
    relation: str,
    features: List[Dict],
    kinds: Dict[str, str],
    columns: Sequence[str],
    threshold: float,
) -> str:
    absent = [f["name"] for f in features if f["name"] not in columns]
    if absent:
        raise InputError(
            f"the tested relation lacks the feature columns {', '.join(absent)}; keep them "
            f"(pass_through=true) or list the features to test: features: [...]."
        )
    observed = " union all ".join(
        f"select {literal(f['name'])} as feature, {_bin(f, kinds.get(f['name'], 'float'))} as bin, "
        f"count(*) as n from {relation} group by 2"
        for f in features
    )
    expected = ", ".join(row for f in features for row in _expected(f))
    floor = literal(FLOOR)
    observed_share = f"greatest(coalesce(o.n, 0)::float8 / t.total, {floor})"
    expected_share = f"greatest(e.share, {floor})"
    return f"""
with observed as ({observed}),
expected (feature, bin, share) as (values {expected}),
totals as (select feature, sum(n)::float8 as total from observed group by feature),
psi as (
  select e.feature, sum(({observed_share} - {expected_share}) * ln({observed_share} / {expected_share})) as psi
  from expected as e
  join totals as t on t.feature = e.feature
  left join observed as o on o.feature = e.feature and o.bin = e.bin
  group by e.feature
)
select feature, psi, {literal(float(threshold))} as threshold
from psi where psi > {literal(float(threshold))}
order by psi desc"""
