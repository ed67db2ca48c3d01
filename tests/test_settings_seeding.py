"""The environment seeds every settings field of a fresh database, the embedding cache's size too.

Migration 0002 seeds the rows; ``embedding_max_entries`` came later (0007) with only its column
default, so 0008 applies RAGSITE_CACHE_EMBEDDING_MAX_ENTRIES to a row still at that default.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import uuid
from pathlib import Path

import psycopg
import pytest
from django.apps import apps
from django.db import connection

from resilience.config import CacheConfig
from resilience.models import CacheSettings

BASE_DIR = Path(__file__).resolve().parent.parent
seed = importlib.import_module("resilience.migrations.0008_seed_embedding_max_entries").seed_embedding_max_entries


@pytest.mark.django_db
def test_the_variable_seeds_a_row_still_at_the_default(monkeypatch):
    CacheSettings.objects.update(embedding_max_entries=CacheConfig.embedding_max_entries)
    monkeypatch.setenv("RAGSITE_CACHE_EMBEDDING_MAX_ENTRIES", "5000")
    seed(apps, None)
    assert CacheSettings.objects.get().embedding_max_entries == 5000


@pytest.mark.django_db
def test_a_value_chosen_in_the_admin_is_left_alone(monkeypatch):
    CacheSettings.objects.update(embedding_max_entries=1234)
    monkeypatch.setenv("RAGSITE_CACHE_EMBEDDING_MAX_ENTRIES", "5000")
    seed(apps, None)
    assert CacheSettings.objects.get().embedding_max_entries == 1234


@pytest.mark.django_db
def test_without_the_variable_nothing_changes(monkeypatch):
    CacheSettings.objects.update(embedding_max_entries=CacheConfig.embedding_max_entries)
    monkeypatch.delenv("RAGSITE_CACHE_EMBEDDING_MAX_ENTRIES", raising=False)
    seed(apps, None)
    assert CacheSettings.objects.get().embedding_max_entries == CacheConfig.embedding_max_entries


@pytest.fixture
def scratch_database(django_db_setup, django_db_blocker):
    """An empty database on the test server, dropped afterwards: (DATABASE_URL, connect kwargs)."""
    with django_db_blocker.unblock():
        params = connection.get_connection_params()
    server = {key: params[key] for key in ("host", "port", "user", "password") if params.get(key)}
    name = f"cfgfix_seed_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(dbname="postgres", autocommit=True, **server) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    auth = ":".join(str(server[key]) for key in ("user", "password") if key in server)
    host, port = str(server.get("host", "")), f":{server['port']}" if "port" in server else ""
    if host.startswith("/"):  # a unix socket folder, libpq style
        url = f"postgresql://{auth}@{port}/{name}?host={host}"
    else:
        url = f"postgresql://{auth}@{host}{port}/{name}"
    yield url, {"dbname": name, **server}
    with psycopg.connect(dbname="postgres", autocommit=True, **server) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.mark.slow
def test_a_fresh_migrate_seeds_the_embedding_cache_size(scratch_database):
    url, connect = scratch_database
    result = subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput"],
        cwd=BASE_DIR,
        env={
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "ragsite.settings",
            "DATABASE_URL": url,
            "RAGSITE_CACHE_EMBEDDING_MAX_ENTRIES": "5000",
            "RAGSITE_CACHE_MAX_ENTRIES": "700",
        },
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    with psycopg.connect(**connect) as db:
        row = db.execute("SELECT embedding_max_entries, max_entries FROM resilience_cachesettings").fetchone()
    assert row == (5000, 700)
