"""The embedded Postgres server (PyPI ``pgserver``: Postgres 16 with pgvector).

Used whenever ``DATABASE_URL`` is unset. The server is started on first use by whichever process
needs the database (runserver, a management command, a test run, a gunicorn worker) and keeps
running after that process exits, so the next one connects at once. It listens only on a unix
socket inside its data folder: two checkouts never collide.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from pathlib import Path

from ragsite import pgtuning

logger = logging.getLogger(__name__)

_lock = threading.Lock()
_started: dict[Path, str] = {}
CONF_NAME = "ragsite.conf"
_INCLUDE = f"include_if_exists = '{CONF_NAME}'"
_LINE = re.compile(r"^(\w+) = '([^']*)'$")


def _written_settings(path: Path) -> dict[str, str]:
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return {}
    return {m.group(1): m.group(2) for m in map(_LINE.match, lines) if m}


def write_settings(data_dir: Path, settings: dict[str, str]) -> set[str]:
    """Write the server settings into the data folder; returns the names whose value changed."""
    conf = data_dir / CONF_NAME
    before = _written_settings(conf)
    changed = {name for name, value in settings.items() if before.get(name) != value}
    changed |= set(before) - set(settings)
    main = data_dir / "postgresql.conf"
    owner = main.stat()
    if changed:
        text = "# Written by RAGsite at start-up (ragsite/pgtuning.py): set RAGSITE_PG_<NAME> instead.\n"
        text += "".join(f"{name} = '{value}'\n" for name, value in sorted(settings.items()))
        temporary = conf.with_suffix(f".{os.getpid()}.tmp")
        temporary.write_text(text)
        temporary.chmod(0o644)  # the server may run as another user (pgserver, started as root)
        if os.geteuid() == 0:
            os.chown(temporary, owner.st_uid, owner.st_gid)
        temporary.replace(conf)  # atomic: a server starting meanwhile reads the old or the new file
    if _INCLUDE not in main.read_text().splitlines():
        with main.open("a") as handle:
            handle.write(f"\n# RAGsite's settings for this machine\n{_INCLUDE}\n")
    return changed


def _running(data_dir: Path) -> bool:
    from pgserver.utils import PostmasterInfo

    info = PostmasterInfo.read_from_pgdata(data_dir)
    return info is not None and info.is_running()


def _pg_ctl(data_dir: Path, *args: str) -> None:
    from pgserver._commands import pg_ctl

    pg_ctl(list(args), pgdata=data_dir, user="pgserver" if os.geteuid() == 0 else None, timeout=60)


def _make_dir(path: Path, mode: int = 0o777) -> None:
    """Create ``path``; a folder that cannot be is a database error naming it (one line in commands)."""
    try:
        path.mkdir(mode=mode, parents=True, exist_ok=True)
    except OSError as exc:
        from django.db import OperationalError

        raise OperationalError(
            f"the embedded database cannot create {path}: {exc.strerror or exc} "
            "(set RAGSITE_VAR_DIR to a writable folder, or DATABASE_URL to another database)"
        ) from None


def socket_dir(data_dir: Path, settings: dict[str, str] | None = None) -> str:
    """Start the server for ``data_dir`` if it is not running; return its socket folder.

    ``settings`` (server settings, ragsite/pgtuning.py) are written before the server starts; a
    running server reloads them.
    """
    data_dir = data_dir.resolve()
    with _lock:
        if data_dir in _started and (data_dir / "postmaster.pid").exists():
            return _started[data_dir]
        # pgserver keeps its inter-process lock in the runtime folder; it must be private (0700).
        runtime = data_dir.parent / "run"
        _make_dir(runtime, mode=0o700)
        os.environ.setdefault("XDG_RUNTIME_DIR", str(runtime))
        import warnings

        import pgserver
        from pgserver.postgres_server import PostgresServer

        _make_dir(data_dir)
        initialised = (data_dir / "PG_VERSION").exists()
        changed: set[str] = set()
        was_running = initialised and _running(data_dir)
        if settings is not None and initialised:
            changed = write_settings(data_dir, settings)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            server = pgserver.get_server(data_dir, cleanup_mode=None)
            # get_server hands back this process's earlier handle as it is, even when the server
            # has been stopped since: make sure it runs.
            with PostgresServer._lock:
                server.ensure_postgres_running()
                if settings is not None and not initialised and write_settings(data_dir, settings):
                    # A data folder created just now: initdb started the server with its defaults.
                    _pg_ctl(data_dir, "-w", "-m", "fast", "restart")
                    server.ensure_postgres_running()
                elif changed and was_running:
                    _pg_ctl(data_dir, "reload")
                    if changed & pgtuning.RESTART_ONLY:
                        logger.warning(
                            "embedded postgres at %s keeps its old %s until it restarts: run `make stop-db` "
                            "(the next command starts it again)",
                            data_dir,
                            ", ".join(sorted(changed & pgtuning.RESTART_ONLY)),
                        )
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
