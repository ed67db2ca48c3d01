"""A real RAGsite server in a subprocess (gunicorn) against the test database.

Tests that need another process — a browser, several workers — talk to it over HTTP. It sees the
data committed in the test database (the demo corpus), not what a test writes inside its own
transaction.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ragsite.liveserver import serve


def test_database_url() -> str:
    """A DATABASE_URL for the database this test run uses (the embedded server's socket)."""
    from django.db import connection

    connection.ensure_connection()
    settings = connection.settings_dict
    assert settings["NAME"].startswith("test"), "a live server for tests must use the test database"
    return f"postgresql://{settings['USER'] or 'postgres'}@/{settings['NAME']}?host={settings['HOST']}"


@contextmanager
def live_server(tmp_path: Path, *, workers: int = 1, env: dict[str, str] | None = None) -> Iterator[str]:
    """gunicorn on the test database; yields its base URL, stops it afterwards."""
    run = uuid.uuid4().hex[:8]
    metrics_dir = tmp_path / f"prometheus-{run}"
    metrics_dir.mkdir()
    full_env = {"DATABASE_URL": test_database_url(), "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir), **(env or {})}
    with serve(tmp_path / f"gunicorn-{run}.log", workers=workers, env=full_env) as base:
        yield base
