"""A real RAGsite server in a subprocess (gunicorn) against the test database.

Tests that need another process — a browser, several workers — talk to it over HTTP. It sees the
data committed in the test database (the demo corpus), not what a test writes inside its own
transaction.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_database_url() -> str:
    """A DATABASE_URL for the database this test run uses (the embedded server's socket)."""
    from django.db import connection

    connection.ensure_connection()
    settings = connection.settings_dict
    assert settings["NAME"].startswith("test"), "a live server for tests must use the test database"
    return f"postgresql://{settings['USER'] or 'postgres'}@/{settings['NAME']}?host={settings['HOST']}"


@contextmanager
def live_server(tmp_path: Path, *, workers: int = 1, env: dict[str, str] | None = None) -> Iterator[str]:
    """Start gunicorn on a free loopback port; yield its base URL; stop it afterwards."""
    port = free_port()
    metrics_dir = tmp_path / f"prometheus-{port}"
    metrics_dir.mkdir()
    full_env = {
        **os.environ,
        "DATABASE_URL": test_database_url(),
        "RAGSITE_BIND": f"127.0.0.1:{port}",
        "RAGSITE_WORKERS": str(workers),
        "RAGSITE_THREADS": "4",
        "RAGSITE_ACCESS_LOG": "0",
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        **(env or {}),
    }
    log_path = tmp_path / f"gunicorn-{port}.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [str(Path(sys.executable).parent / "gunicorn"), "-c", "ragsite/gunicorn_conf.py", "ragsite.wsgi"],
            cwd=ROOT,
            env=full_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"gunicorn exited: {log_path.read_text()[-2000:]}")
            # Only once our gunicorn has bound the port: another server may briefly hold it.
            if f"Listening at: {base}" in log_path.read_text():
                try:
                    if requests.get(f"{base}/health", timeout=2).status_code == 200:
                        break
                except requests.RequestException:
                    pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"gunicorn did not start: {log_path.read_text()[-2000:]}")
            time.sleep(0.3)
        yield base
    finally:
        stop(process)


def stop(process: subprocess.Popen) -> None:
    """Stop a server started in its own session, and everything it started."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
