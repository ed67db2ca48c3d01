"""The development server loads the local model as it starts; commands that do not embed never do."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time

import pytest
import requests

from ragsite.liveserver import ROOT, free_port, stop
from tests import live as live_db
from tests.test_checks import check

LOADED = "local embedding model loaded"


@pytest.mark.slow
@pytest.mark.django_db
def test_the_development_server_loads_the_model_before_the_first_question(tmp_path):
    port = free_port()
    log_path = tmp_path / "runserver.log"
    env = {**os.environ, "DATABASE_URL": live_db.test_database_url(), "PYTHONUNBUFFERED": "1"}
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "manage.py", "runserver", "--noreload", f"127.0.0.1:{port}"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 180
        live = False
        while LOADED not in log_path.read_text():
            assert process.poll() is None, log_path.read_text()[-2000:]
            assert time.monotonic() < deadline, log_path.read_text()[-2000:]
            with contextlib.suppress(requests.RequestException):
                live = live or requests.get(f"http://127.0.0.1:{port}/health/live", timeout=1).status_code == 200
            time.sleep(0.2)
        # No question was asked: the server loaded the model by itself, and served while it did.
        assert live or requests.get(f"http://127.0.0.1:{port}/health/live", timeout=5).status_code == 200
        assert "/api/query" not in log_path.read_text()
    finally:
        stop(process)


def test_commands_that_do_not_embed_do_not_load_the_model():
    result = check(RAGSITE_LOG_LEVEL="INFO")
    assert result.returncode == 0, result.stderr
    assert LOADED not in result.stderr + result.stdout
