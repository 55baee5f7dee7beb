"""Training history as rows, one per epoch or iteration, the same shape for every model type (what
`ml_training_info` returns, as BigQuery ML's ML.TRAINING_INFO does): phase, iteration, loss, eval_loss,
learning_rate, duration_ms, and for DEC's target updates the share of labels changed."""

from typing import Dict, List, Optional, Sequence


def _row(
    phase: str, iteration: int, loss, eval_loss=None, learning_rate=None, seconds=None, **extra
):
    row = {
        "phase": phase,
        "iteration": iteration,
        "loss": None if loss is None else float(loss),
        "eval_loss": None if eval_loss is None else float(eval_loss),
        "learning_rate": None if learning_rate is None else float(learning_rate),
        "duration_ms": None if seconds is None else round(1000 * float(seconds), 3),
    }
    row.update(extra)
    return row


def epochs(
    loss: Sequence[float],
    eval_loss: Sequence[float] = (),
    seconds: Sequence[float] = (),
    learning_rate: Optional[float] = None,
    phase: str = "train",
) -> List[Dict]:
    """A row per epoch of a gradient-descent fit (Keras or the sql4ml loop)."""
    return [
        _row(
            phase,
            i + 1,
            value,
            eval_loss[i] if i < len(eval_loss) else None,
            learning_rate,
            seconds[i] if i < len(seconds) else None,
        )
        for i, value in enumerate(loss)
    ]


def dec(info: Dict, learning_rate: Optional[float]) -> List[Dict]:
    """DEC: its pretraining epochs, then a row per target update of the clustering phase (the
    iterations are single minibatches, thousands of them): the mean KL loss since the previous
    update and the share of labels that changed."""
    rows = epochs(
        info.get("pretrain_loss", []),
        seconds=info.get("pretrain_epoch_seconds", []),
        learning_rate=learning_rate,
        phase="pretrain",
    )
    loss, changes = info.get("loss", []), info.get("label_change", [])
    at = info.get("update_seconds", [])
    interval = max(1, int(info.get("update_interval") or 1))
    for u, change in enumerate(changes):
        end = (u + 1) * interval
        part = loss[u * interval : end]
        seconds = at[u + 1] - at[u] if u + 1 < len(at) else None
        mean = sum(part) / len(part) if part else None
        rows.append(
            _row(
                "cluster",
                min(end, len(loss)),
                mean,
                None,
                learning_rate,
                seconds,
                label_change=float(change),
            )
        )
    return rows


def clustering(info: Dict, seconds: Optional[float], loss: Optional[float]) -> List[Dict]:
    """k-means and EM, a row per iteration (in memory: scikit-learn's Lloyd or EM iterations, their
    losses read from its verbose output; streamed: a pass over the data). EM's loss is minus the
    (mean) log-likelihood bound, what it raises; k-means' the inertia. Mini-batch k-means computes
    no loss over a pass, so its rows carry the largest move of a centre in that pass (centre_shift,
    normalized units), the quantity its stopping rule reads. Without a trace, one row: the fit's
    iteration count, final loss and time."""
    trace = info.get("trace")
    if not trace:
        return [_row("fit", int(info.get("iterations") or 1), loss, seconds=seconds)]
    took = info.get("pass_seconds", [])
    rows = []
    for i, value in enumerate(trace):
        at = took[i] if i < len(took) else None
        if info.get("trace_kind") == "centre_shift":
            rows.append(_row("fit", i + 1, None, seconds=at, centre_shift=value))
        else:
            rows.append(_row("fit", i + 1, value, seconds=at))
    return rows
