"""engine: tf_multiworker's cluster: a TF_CONFIG-style spec, from config or the environment."""

import json
import os
import re
import socket
from dataclasses import dataclass
from typing import Any, List

from dbt.adapters.sqlflow.errors import OptionError

_LOCAL = re.compile(r"^local\[(\d+)\]$")
LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class ClusterSpec:
    workers: List[str]  # host:port of each worker; worker 0 is the chief

    @property
    def tf_cluster(self) -> dict:
        return {"worker": list(self.workers)}

    def tf_config(self, index: int) -> str:
        return json.dumps({"cluster": self.tf_cluster, "task": {"type": "worker", "index": index}})


def _free_ports(n: int) -> List[int]:
    sockets = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def cluster_spec(value: Any) -> ClusterSpec:
    """{'worker': [...]} (a 'chief' entry goes first), its JSON, 'local[N]' (N loopback workers on
    free ports), or None: the cluster of the TF_CONFIG environment variable."""
    origin = "tf_cluster"
    if value is None:
        raw = os.environ.get("TF_CONFIG")
        if not raw:
            raise OptionError(
                "engine='tf_multiworker' needs a cluster: config(tf_cluster={'worker': "
                "['host1:12345', 'host2:12345']}), tf_cluster='local[2]', or TF_CONFIG in the "
                "environment."
            )
        value, origin = json.loads(raw).get("cluster"), "TF_CONFIG's cluster"
    if isinstance(value, str):
        local = _LOCAL.match(value.strip())
        if local:
            return ClusterSpec(
                [f"127.0.0.1:{p}" for p in _free_ports(max(1, int(local.group(1))))]
            )
        try:
            value = json.loads(value)
        except ValueError:
            raise OptionError(f"{origin}={value!r} is neither 'local[N]' nor JSON.") from None
    if not isinstance(value, dict):
        raise OptionError(f"{origin} must map 'worker' to a list of 'host:port'.")
    workers = list(value.get("chief") or []) + list(value.get("worker") or [])
    bad = [w for w in workers if not isinstance(w, str) or ":" not in w]
    if not workers or bad:
        raise OptionError(
            f"{origin} must list workers as 'host:port', e.g. {{'worker': ['10.0.0.1:12345', "
            f"'10.0.0.2:12345']}}; got {value!r}."
        )
    return ClusterSpec(workers)
