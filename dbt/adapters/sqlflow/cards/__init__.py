"""Model cards: one self-contained HTML page per ML model (`target/sqlflow/cards/<model>.html`, charts
as inline SVG, no script and nothing fetched) and an index of every card of the project.

Built from registry rows alone (a ModelVersion and the list of its model's versions), so a card can
be rebuilt for a model trained elsewhere or for an older version (`dbt run-operation sqlflow_cards`).
Each card leaves a small JSON summary beside it; the index is made from those summaries."""

import json
import os
import tempfile
import threading
import time
from typing import Any, Dict, List

from dbt.adapters.sqlflow import facts
from dbt.adapters.sqlflow.cards import page

_INDEX_LOCK = threading.Lock()


def card_html(version, versions: List[Dict[str, Any]]) -> str:
    """The card of one registered version (registry.ModelVersion) among its model's `versions`."""
    return page.render(version, versions)


def write_card(directory: str, version, versions: List[Dict[str, Any]]) -> str:
    """Write `<model>.html` and its summary, then the index; returns the card's path."""
    os.makedirs(directory, exist_ok=True)
    name = version.model_name
    path = os.path.join(directory, f"{name}.html")
    _write_atomic(path, card_html(version, versions))
    label, value = facts.key_metric(version.model_type, version.parameters, version.metrics)
    trained = next((v for v in versions if v["version"] == version.version), {})
    summary = {
        "model": name,
        "model_type": version.model_type,
        "version": version.version,
        "status": version.status,
        "metric": label,
        "value": value,
        "trained_at": str(trained.get("trained_at") or ""),
        "rows": version.row_count,
        "card": f"{name}.html",
    }
    _write_atomic(os.path.join(directory, f"{name}.json"), json.dumps(summary))
    write_index(directory)
    return path


_PENDING: List[threading.Thread] = []


def write_card_later(
    directory: str, version, versions: List[Dict[str, Any]], failed, done=None
) -> None:
    """write_card in a thread, so the DAG goes on while the charts are drawn (wait() before the
    invocation ends); `failed(exc)` hears of an error, `done(message)` of the card written."""

    def run() -> None:
        started = time.perf_counter()
        try:
            path = write_card(directory, version, versions)
        except Exception as exc:  # the model is trained and stored either way
            failed(exc)
            return
        if done:
            done(
                f"{version.model_name}: model card at {path} ({time.perf_counter() - started:.2f} s)"
            )

    thread = threading.Thread(target=run, name=f"sqlflow-card-{version.model_name}")
    with _INDEX_LOCK:
        _PENDING.append(thread)
    thread.start()


def wait() -> None:
    """Every card being written is on disk."""
    while True:
        with _INDEX_LOCK:
            if not _PENDING:
                return
            thread = _PENDING.pop()
        thread.join()


def write_index(directory: str) -> str:
    """index.html: every card in the folder (from the summaries), by model name."""
    with _INDEX_LOCK:
        summaries = []
        for entry in sorted(os.listdir(directory)):
            if entry.endswith(".json"):
                with open(os.path.join(directory, entry)) as f:
                    summaries.append(json.load(f))
        path = os.path.join(directory, "index.html")
        _write_atomic(path, page.index(summaries))
    return path


def _write_atomic(path: str, text: str) -> None:
    """Readers (a browser, a docs server) never see half a file."""
    folder = os.path.dirname(path)
    handle, temporary = tempfile.mkstemp(dir=folder, suffix=".tmp")
    with os.fdopen(handle, "w", encoding="utf-8") as f:
        f.write(text)
    os.chmod(temporary, 0o644)  # mkstemp's 0600 would hide the card from a docs server's user
    os.replace(temporary, path)
