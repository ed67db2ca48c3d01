"""manage.py check refuses configuration mistakes before the first request meets them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent


def check(**env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=BASE_DIR,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "ragsite.settings", **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_clean_environment_passes():
    result = check()
    assert result.returncode == 0, result.stderr
    assert "no issues" in result.stdout


def test_settings_the_admin_would_refuse_are_refused_at_start_up():
    result = check(OLLAMA_BASE_URL="ftp://ollama:11434", RAGSITE_POOL_RETRY_STATUSES="503,700")
    assert result.returncode != 0
    assert "OLLAMA_BASE_URL: The URL must start with http:// or https://." in result.stderr
    assert "RAGSITE_POOL_RETRY_STATUSES: List HTTP statuses from 400 to 599" in result.stderr


def test_a_missing_metrics_directory_is_named_not_a_traceback(tmp_path):
    result = check(PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "missing"))
    assert result.returncode != 0
    assert f"PROMETHEUS_MULTIPROC_DIR={tmp_path / 'missing'} is not a writable directory" in result.stderr
    assert "Traceback" not in result.stderr
