"""The embedded Postgres server (PyPI ``pgserver``: Postgres 16 with pgvector).

Used whenever ``DATABASE_URL`` is unset. The server is started on first use by whichever process
needs the database (runserver, a management command, a test run, a gunicorn worker) and keeps
running after that process exits, so the next one connects at once. It listens only on a unix
socket inside its data folder: two checkouts never collide.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

logger = logging.getLogger(__name__)

_lock = threading.Lock()
_started: dict[Path, str] = {}


def socket_dir(data_dir: Path) -> str:
    """Start the server for ``data_dir`` if it is not running; return its socket folder."""
    data_dir = data_dir.resolve()
    with _lock:
        if data_dir in _started and (data_dir / "postmaster.pid").exists():
            return _started[data_dir]
        # pgserver keeps its inter-process lock in the runtime folder; it must be private (0700).
        runtime = data_dir.parent / "run"
        runtime.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.environ.setdefault("XDG_RUNTIME_DIR", str(runtime))
        import warnings

        import pgserver
        from pgserver.postgres_server import PostgresServer

        data_dir.mkdir(parents=True, exist_ok=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            server = pgserver.get_server(data_dir, cleanup_mode=None)
            # get_server hands back this process's earlier handle as it is, even when the server
            # has been stopped since: make sure it runs.
            with PostgresServer._lock:
                server.ensure_postgres_running()
        host = server.get_postmaster_info().socket_dir
        _started[data_dir] = str(host)
        logger.debug("embedded postgres ready at %s", host)
        return str(host)


def stop(data_dir: Path) -> None:
    """Stop the embedded server (used by `make stop` and the restart benchmark)."""
    import subprocess

    from pgserver._commands import pg_ctl

    data_dir = data_dir.resolve()
    with _lock:
        _started.pop(data_dir, None)
    user = "pgserver" if os.geteuid() == 0 else None
    try:
        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=data_dir, user=user)
    except subprocess.CalledProcessError:
        logger.info("embedded postgres at %s was not running", data_dir)
