"""promote_if: the conditions a trained candidate must meet to become the live version."""

import math
import operator
from typing import Callable, Dict, List, Optional

from dbt.adapters.sqlflow.errors import OptionError
from dbt.adapters.sqlflow.options import GATE

_COMPARE: Dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    ">": operator.gt,
    "<": operator.lt,
    "=": operator.eq,
    "==": operator.eq,
}


def metric_name(name: str, metrics: Dict) -> str:
    """A gate's metric as the registry stores it: exact, or the held-out one (`roc_auc` ->
    `eval_roc_auc`), which is what a gate on a supervised model should judge."""
    for candidate in (f"eval_{name}", name):
        if candidate in metrics:
            return candidate
    numeric = sorted(k for k, v in metrics.items() if isinstance(v, (int, float)))
    raise OptionError(
        f"promote_if names metric '{name}', which this model does not report; its metrics are: "
        f"{', '.join(numeric) or 'none'}."
    )


def failures(
    gates: Optional[Dict[str, str]], metrics: Dict, live: Optional[Dict], live_version: object
) -> List[str]:
    """The gates the candidate fails, each as a readable sentence. `live` holds the live version's
    metrics (recomputed on the candidate's held-out rows where the job could); a '<= live'
    condition passes when there is no live version yet."""
    out = []
    for name, condition in (gates or {}).items():
        op, bound = GATE.match(condition).groups()[:2]  # options.resolve checked the form
        key = metric_name(name, metrics)
        value = metrics.get(key)
        if bound == "live":
            if not live or not isinstance(live.get(key), (int, float)):
                continue
            threshold, what = float(live[key]), f"v{live_version}'s {live[key]:.6g}"
        else:
            threshold, what = float(bound), bound
        if not isinstance(value, (int, float)) or math.isnan(value):
            out.append(f"{key} is undefined, needed {op} {what}")
        elif not _COMPARE[op](float(value), threshold):
            out.append(f"{key} = {value:.6g}, needed {op} {what}")
    return out
