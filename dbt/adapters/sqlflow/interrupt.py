"""Ctrl-C reaches dbt's main thread only; the thread training a model learns of it from this flag,
which the connection manager sets when dbt cancels the open connections. Long loops (epochs, EM
iterations, k sweeps, restarts) call `check()` between steps and stop within one step."""

import threading

from dbt.adapters.sqlflow.errors import Cancelled

_requested = threading.Event()


def request() -> None:
    _requested.set()


def reset() -> None:
    _requested.clear()


def requested() -> bool:
    return _requested.is_set()


def check() -> None:
    if _requested.is_set():
        raise Cancelled("interrupted: training stopped, nothing was written.")
