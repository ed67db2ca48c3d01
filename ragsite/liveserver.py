"""Start RAGsite under gunicorn in a subprocess on a free loopback port (tests and benchmarks).

The server runs in its own session so it and its workers stop together; it counts as ready only
once *our* gunicorn has bound the port (another server may briefly hold a port just handed out)
and answers /health.
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


@contextmanager
def serve(
    log_path: Path, *, workers: int = 1, threads: int = 4, env: dict[str, str] | None = None, ready_timeout: float = 90
) -> Iterator[str]:
    """Run gunicorn (output to ``log_path``) until the block ends; yields its base URL."""
    port = free_port()
    full_env = {
        **os.environ,
        "RAGSITE_BIND": f"127.0.0.1:{port}",
        "RAGSITE_WORKERS": str(workers),
        "RAGSITE_THREADS": str(threads),
        "RAGSITE_ACCESS_LOG": "0",
        **(env or {}),
    }
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
        deadline = time.monotonic() + ready_timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"gunicorn exited: {log_path.read_text()[-2000:]}")
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
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
