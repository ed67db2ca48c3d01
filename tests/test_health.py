"""Liveness and readiness: Ollama down keeps the site ready; only the database makes it unready."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.db import connection
from django.db.migrations.loader import MigrationLoader
from django.db.migrations.recorder import MigrationRecorder
from django.test.utils import CaptureQueriesContext

from ragsite import health
from resilience.breaker import get_breaker

BASE_DIR = Path(__file__).resolve().parent.parent


@pytest.fixture
def ollama_generation(fake_ollama, resilience_config):
    resilience_config(provider={"ollama_base_url": fake_ollama.url, "generation_backend": "ollama"})
    health.ollama_probe._last = None  # forget an earlier test's answer
    return fake_ollama


def test_live_does_no_io(client):
    # Without the db fixture, pytest-django fails any database access.
    response = client.get("/health/live")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_ready_with_a_migrated_database_and_no_ollama_backend(admin_client, resilience_config):
    response = admin_client.get("/health/ready")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok" and body["ready"] is True
    assert body["database"] is True and body["migrated"] is True
    assert body["ollama"] is None  # nothing configured uses Ollama, so it is not asked


def test_ready_reports_ollama_up(admin_client, ollama_generation):
    body = admin_client.get("/health/ready").json()
    assert body["ollama"] is True and body["degraded"] is False
    assert ollama_generation.count("/api/version") == 1


def test_ready_stays_200_when_ollama_is_down(admin_client, ollama_generation):
    ollama_generation.set_mode("down")
    get_breaker("chat").force_open()
    response = admin_client.get("/health/ready")
    assert response.status_code == 200
    body = response.json()
    assert body["ollama"] is False and body["degraded"] is True
    assert body["breakers"]["chat"] == "open"


def test_ollama_is_asked_at_most_once_per_ttl(admin_client, ollama_generation):
    for _ in range(3):
        admin_client.get("/health/ready")
    assert ollama_generation.count("/api/version") == 1


def test_anonymous_callers_get_the_status_alone(client, db, ollama_generation, settings):
    get_breaker("chat").force_open()
    for path in ("/health", "/health/ready"):
        body = client.get(path).json()
        assert body["status"] == "ok" and body["ready"] is True
        assert not {"ollama", "breakers", "degraded"} & set(body)
    assert ollama_generation.count("/api/version") == 0  # nor does an anonymous probe call Ollama
    settings.RAGSITE_METRICS_TOKEN = "t" * 24
    detailed = client.get("/health/ready", HTTP_AUTHORIZATION="Bearer " + "t" * 24).json()
    assert detailed["breakers"]["chat"] == "open" and detailed["degraded"] is True


def test_the_summary_keeps_the_original_keys(client, db):
    response = client.get("/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok" and body["database"] is True and body["live"] is True


def test_pending_migrations_make_it_unready(client, db, monkeypatch):
    monkeypatch.setattr(health, "migration_check", health.MigrationCheck())
    # As after a deploy whose new migration has not run yet (rolled back after the test).
    latest = MigrationLoader(connection).graph.leaf_nodes("rag")[0]
    MigrationRecorder(connection).record_unapplied(*latest)
    response = client.get("/health/ready")
    assert response.status_code == 503
    assert response.json()["database"] is True and response.json()["migrated"] is False


def test_a_database_without_the_cache_table_is_unready_until_migrate_creates_it(client, db):
    # As a database prepared before the table was part of the migrations (rolled back after the test).
    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE ragsite_cache")
    response = client.get("/health/ready")
    assert response.status_code == 503 and response.json()["migrated"] is False

    migration = importlib.import_module("rag.migrations.0006_cache_table")
    with connection.schema_editor() as editor:
        migration.create_cache_table(None, editor)
    assert client.get("/health/ready").status_code == 200
    answered = client.post("/api/query", {"question": "What is a lambda?"}, content_type="application/json")
    assert answered.status_code == 200  # throttled through the cache table, not a 500


def test_a_migrated_schema_is_remembered(db, clock):
    check = health.MigrationCheck(timer=clock)
    assert check() is True
    with CaptureQueriesContext(connection) as queries:
        assert check() is True
    assert len(queries) == 0
    clock.advance(check.ttl + 1)
    with CaptureQueriesContext(connection) as queries:
        assert check() is True
    assert len(queries) > 0


PROBE = """
import json
import django
django.setup()
from django.test import Client
answers = {}
for path in ("/health/live", "/health/ready", "/health"):
    response = Client().get(path)
    answers[path] = [response.status_code, response.json()]
print(json.dumps(answers))
"""


def test_an_unreachable_database_makes_ready_503_and_live_200(tmp_path):
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "ragsite.settings",
        # A socket directory with no server in it: connections are refused at once.
        "DATABASE_URL": f"postgresql://postgres@/ragsite?host={tmp_path}",
    }
    result = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=BASE_DIR, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    answers = json.loads(result.stdout.strip().splitlines()[-1])
    assert answers["/health/live"] == [200, {"status": "ok"}]
    status, body = answers["/health/ready"]
    assert status == 503 and body["database"] is False and body["status"] == "unavailable"
    assert answers["/health"][0] == 503 and answers["/health"][1]["database"] is False


def test_probes_are_never_throttled(client, db, resilience_config):
    resilience_config(access={"ip_rate": "2/minute"})
    statuses = [client.get(path).status_code for _ in range(4) for path in ("/health/live", "/health/ready", "/health")]
    assert set(statuses) == {200}
    # The same rate does throttle the API itself.
    assert [client.get("/api/documents").status_code for _ in range(3)] == [200, 200, 429]
