"""engine: tf_multiworker. The node starts one worker process per address of the cluster spec (on
this machine, or through `tf_launcher`, e.g. 'ssh {host}'), hands each its job on stdin and follows
their stdout. A worker that exits before reporting a result fails the node at once, naming it, and
the others are stopped: a synchronous all-reduce cannot go on without every worker."""

import json
import logging
import os
import queue
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from typing import Callable, Dict, List, Optional

from dbt.adapters.sqlflow import interrupt
from dbt.adapters.sqlflow.engines.tf_cluster import LOOPBACK, ClusterSpec
from dbt.adapters.sqlflow.errors import EngineError, SqlflowError

log = logging.getLogger("dbt_sqlflow.engines")

READY_TIMEOUT = 120  # seconds for every worker to import TensorFlow and join the cluster


def _command(phase: str, index: int, host: str, launcher: Optional[str]) -> List[str]:
    module = ["-m", "dbt.adapters.sqlflow.engines.tf_worker", phase, str(index)]
    if launcher:
        return shlex.split(launcher.format(host=host)) + ["python3"] + module
    if host not in LOOPBACK and host not in _this_host():
        raise EngineError(
            f"engine 'tf_multiworker': worker {index} is at {host}, which is not this machine; "
            f"set tf_launcher (e.g. 'ssh {{host}}') to start workers there, with dbt-sqlflow "
            f"installed on them."
        )
    return [sys.executable] + module


def _this_host() -> tuple:
    import socket

    return (socket.gethostname(), socket.getfqdn())


class _Worker:
    def __init__(self, index: int, address: str, process: subprocess.Popen, errors):
        self.index, self.address, self.process, self.errors = index, address, process, errors
        self.ready, self.result = False, None
        self.reader: Optional[threading.Thread] = None

    def tail(self, lines: int = 6) -> str:
        self.errors.flush()
        with open(self.errors.name, errors="replace") as f:
            text = [line.rstrip() for line in f if line.strip()]
        return " | ".join(text[-lines:])


class MultiWorkerLauncher:
    def __init__(self, spec: ClusterSpec, launcher: Optional[str] = None):
        self.spec, self.launcher = spec, launcher
        self.folder = tempfile.mkdtemp(prefix="sqlflow-tf-")

    def run(
        self, phase: str, jobs: List[Dict], on_line: Optional[Callable[[Dict], None]] = None
    ) -> List[Dict]:
        """Start len(jobs) workers for `phase` and return their results in worker order."""
        lines: "queue.Queue" = queue.Queue()
        workers = []
        try:
            for index, job in enumerate(jobs):
                workers.append(self._start(phase, index, job, lines))
            self._follow(phase, workers, lines, on_line)
            return [w.result for w in workers]
        finally:
            for w in workers:
                if w.process.poll() is None:
                    w.process.kill()
                    w.process.wait()
                w.errors.close()

    def _start(self, phase: str, index: int, job: Dict, lines) -> _Worker:
        address = self.spec.workers[index]
        host = address.rsplit(":", 1)[0]
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}
        errors = open(os.path.join(self.folder, f"{phase}-{index}.log"), "w+")
        process = subprocess.Popen(
            _command(phase, index, host, self.launcher),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=errors,
            env=env,
            text=True,
        )
        job = {**job, "worker": index, "tf_config": self.spec.tf_config(index)}
        process.stdin.write(json.dumps(job))
        process.stdin.close()
        worker = _Worker(index, address, process, errors)
        worker.reader = threading.Thread(target=_pump, args=(worker, lines), daemon=True)
        worker.reader.start()
        return worker

    def _follow(self, phase: str, workers: List[_Worker], lines, on_line) -> None:
        started = time.monotonic()
        while not all(w.result is not None for w in workers):
            try:
                worker, kind, payload = lines.get(timeout=0.5)
                if kind == "READY":
                    worker.ready = True
                elif kind == "EPOCH" and on_line:
                    on_line(payload)
                elif kind == "RESULT":
                    worker.result = payload
                elif kind == "ERROR":
                    raise SqlflowError(payload)
            except queue.Empty:
                pass
            interrupt.check()
            for w in workers:
                code = w.process.poll()
                if code is None or w.result is not None:
                    continue
                w.reader.join(timeout=10)  # its last lines may still be on their way
                if lines.empty():
                    raise EngineError(
                        f"engine 'tf_multiworker': worker {w.index} ({w.address}) exited with "
                        f"code {code} during {phase}; the node stops and its previous tables stay. "
                        f"Its last output: {w.tail() or '(none)'}"
                    )
            waiting = [w for w in workers if not w.ready]
            if phase == "train" and waiting and time.monotonic() - started > READY_TIMEOUT:
                raise EngineError(
                    f"engine 'tf_multiworker': the cluster did not come up in {READY_TIMEOUT} s; "
                    f"worker(s) {', '.join(w.address for w in waiting)} never joined. Check the "
                    f"addresses and that their ports are free."
                )

    def close(self) -> None:
        import shutil

        shutil.rmtree(self.folder, ignore_errors=True)


def _pump(worker: _Worker, lines) -> None:
    """Worker stdout -> (worker, kind, payload) on the queue."""
    for line in worker.process.stdout:
        kind, _, rest = line.rstrip("\n").partition(" ")
        if kind in ("READY", "EPOCH", "RESULT", "ERROR"):
            payload = json.loads(rest) if rest else None
            lines.put((worker, kind, payload))
        else:
            log.debug(f"tf worker {worker.index}: {line.rstrip()}")
