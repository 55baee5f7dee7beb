"""Per-iteration loss of scikit-learn's in-memory k-means and EM, for the training info.

Neither estimator returns its iterations' losses; with `verbose` they print them (k-means: each
iteration's inertia; EM at verbose=2: each iteration's change of the lower bound and its time). While a
fit runs, `printed()` collects what this thread prints, with the time each line arrived; other threads'
output goes to the real stdout untouched (dbt runs nodes in threads)."""

import re
import sys
import threading
import time
from contextlib import contextmanager
from typing import Dict, Iterator, List, Optional, Tuple

_LOCK = threading.Lock()
_CAPTURES: Dict[int, List[Tuple[float, str]]] = {}


class _ThreadRouter:
    """A stdout that hands a capturing thread's writes to its list and everything else on."""

    def __init__(self, original):
        self.original = original

    def write(self, text: str) -> int:
        captured = _CAPTURES.get(threading.get_ident())
        if captured is None:
            return self.original.write(text)
        captured.append((time.perf_counter(), text))
        return len(text)

    def flush(self) -> None:
        self.original.flush()

    def __getattr__(self, name):
        return getattr(self.original, name)


@contextmanager
def printed() -> Iterator[List[Tuple[float, str]]]:
    """(time, text) of every write to stdout by this thread inside the block."""
    lines: List[Tuple[float, str]] = []
    with _LOCK:
        if not isinstance(sys.stdout, _ThreadRouter):
            sys.stdout = _ThreadRouter(sys.stdout)
        _CAPTURES[threading.get_ident()] = lines
    try:
        yield lines
    finally:
        with _LOCK:
            _CAPTURES.pop(threading.get_ident(), None)
            if not _CAPTURES and isinstance(sys.stdout, _ThreadRouter):
                sys.stdout = sys.stdout.original


def _runs(lines: List[Tuple[float, str]], pattern: str) -> List[List[Tuple[float, tuple]]]:
    """The matches of `pattern` in the printed text, split into runs where the iteration restarts."""
    runs: List[List[Tuple[float, tuple]]] = []
    previous = None
    for at, text in lines:
        for match in re.finditer(pattern, text):
            iteration = int(match.group(1))
            if previous is None or iteration <= previous:
                runs.append([])
            runs[-1].append((at, match.groups()))
            previous = iteration
    return runs


def kmeans(lines: List[Tuple[float, str]], started: float) -> Optional[Dict]:
    """k-means: the inertia of each Lloyd iteration of the best initialization (lowest last inertia)."""
    runs = _runs(lines, r"Iteration (\d+), inertia ([-+0-9.eE]+|nan|inf)\.")
    if not runs:
        return None
    best = min(runs, key=lambda r: float(r[-1][1][1]))
    return {"loss": [float(g[1]) for _, g in best], "seconds": _durations(best, started)}


def em(lines: List[Tuple[float, str]], lower_bound: float) -> Optional[Dict]:
    """EM: each iteration's lower bound, from the last one back through the printed changes (the
    initialization whose changes end the output is the one kept when n_init is 1)."""
    runs = _runs(
        lines, r"Iteration (\d+)\t time lapse ([0-9.]+)s\t ll change ([-+0-9.eE]+|-?inf|nan)"
    )
    if not runs:
        return None
    run = runs[-1]
    bounds = [lower_bound]
    for _, groups in reversed(run[1:]):
        bounds.append(bounds[-1] - float(groups[2]))
    return {"loss": [-b for b in reversed(bounds)], "seconds": [float(g[1]) for _, g in run]}


def _durations(run: List[Tuple[float, tuple]], started: float) -> List[float]:
    out, previous = [], started
    for at, _ in run:
        out.append(at - previous)
        previous = at
    return out
