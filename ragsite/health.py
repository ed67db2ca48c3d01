"""Liveness and readiness for load balancers and Kubernetes probes.

Ready means the database answers and its schema is migrated, with every table a query needs.
Ollama being down does not make the site unready, since answers degrade instead, so it is
reported (with the breaker states) but never turns a probe red: restarting or unrouting every pod
because a shared upstream is down would only add an outage of our own.
"""

from __future__ import annotations

import hmac
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from resilience import config as runtime_config
from resilience.breaker import CLOSED, all_breakers
from resilience.client import OllamaClient
from resilience.config import PoolConfig
from resilience.errors import OllamaError
from resilience.pool import PoolStats

logger = logging.getLogger(__name__)


class MigrationCheck:
    """Whether the database has every migration this code knows, remembered for ``ttl`` seconds.

    Building the migration graph reads every migration file; a probe every few seconds should not.
    Only a positive answer is remembered, so a pending migration is seen as soon as it is applied.
    """

    ttl = 60.0

    def __init__(self, timer: Callable[[], float] = time.monotonic) -> None:
        self.timer = timer
        self._ok_until = float("-inf")

    def __call__(self) -> bool:
        if self.timer() < self._ok_until:
            return True
        executor = MigrationExecutor(connection)
        migrated = not executor.migration_plan(executor.loader.graph.leaf_nodes())
        if migrated:
            self._ok_until = self.timer() + self.ttl
        return migrated


class OllamaProbe:
    """Asks Ollama for its version with short timeouts and no retries, at most every ``ttl`` seconds.

    A probe must answer within its own timeout (Kubernetes' default is one second), so it cannot
    use the shared client's timeouts and retries.
    """

    ttl = 5.0
    pool = PoolConfig(connect_timeout=0.5, read_timeout=1.0, max_retries=0)

    def __init__(self, timer: Callable[[], float] = time.monotonic) -> None:
        self.timer = timer
        self._lock = threading.Lock()
        self._client: OllamaClient | None = None
        self._last: tuple[str, float, bool] | None = None  # (url, checked at, up)

    def __call__(self) -> bool:
        url = runtime_config.current().provider.ollama_base_url.rstrip("/")
        with self._lock:
            if self._last is not None and self._last[0] == url and self.timer() - self._last[1] < self.ttl:
                return self._last[2]
            if self._client is None or self._client.base_url != url:
                self._client = OllamaClient(url, self.pool, stats=PoolStats())
            client = self._client
        try:
            client.version()
            up = True
        except OllamaError as exc:
            logger.info("readiness: Ollama at %s is unavailable: %s", url, exc)
            up = False
        with self._lock:
            self._last = (url, self.timer(), up)
        return up


migration_check = MigrationCheck()
ollama_probe = OllamaProbe()


def database_status() -> tuple[bool, bool]:
    """(reachable, migrated): migrated also means every table a query needs is there, the
    throttles' cache table among them."""
    table = settings.CACHES["default"].get("LOCATION", "") if _database_cache() else ""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT %s = '' OR to_regclass(%s) IS NOT NULL", [table, table or "-"])
            has_tables = bool(cursor.fetchone()[0])
    except Exception as exc:  # any failure to reach the database means "not ready"
        logger.error("readiness: database unavailable: %s", exc)
        return False, False
    if not has_tables:
        logger.error("readiness: the cache table %r is missing: run manage.py migrate", table)
        return True, False
    return True, migration_check()


def _database_cache() -> bool:
    return settings.CACHES["default"]["BACKEND"].endswith("db.DatabaseCache")


def readiness(*, details: bool) -> dict[str, Any]:
    """The probe's answer; ``details`` (Ollama, breakers) only for staff and metrics-token holders."""
    database, migrated = database_status()
    ready = database and migrated
    body: dict[str, Any] = {
        "status": "ok" if ready else "unavailable",
        "ready": ready,
        "database": database,
        "migrated": migrated,
    }
    if details:
        provider = runtime_config.current().provider
        uses_ollama = "ollama" in (provider.embedding_backend, provider.generation_backend)
        ollama = ollama_probe() if uses_ollama else None
        breakers = {name: breaker.state for name, breaker in sorted(all_breakers().items())}
        body["ollama"] = ollama  # None: no backend uses Ollama
        body["breakers"] = breakers
        body["degraded"] = ollama is False or any(state != CLOSED for state in breakers.values())
    return body


def sees_details(request: Request) -> bool:
    """Staff (by their session) and holders of the metrics token see what the service depends on.

    Anyone else gets the status alone: the upstream's state and the breakers tell an outsider when
    an attack on Ollama is working, and the probe would make an outbound call on their behalf.
    """
    scheme, _, token = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
    expected = settings.RAGSITE_METRICS_TOKEN
    if scheme.lower() == "bearer" and expected and hmac.compare_digest(token.strip().encode(), expected.encode()):
        return True
    if settings.SESSION_COOKIE_NAME not in request.COOKIES:
        return False  # no session: no database read for it
    # From the session itself: the probes' DRF request has no authenticators, so its user is anonymous.
    user = get_user(request._request)
    return bool(user.is_active and user.is_staff)


class ProbeApi(APIView):
    # Probes carry no credentials and must never be throttled (a 429 reads as "unhealthy"); the
    # throttles' counters and key lookups live in the database, which liveness must not touch.
    authentication_classes: list = []
    permission_classes: list = []
    throttle_classes: list = []


class LiveApi(ProbeApi):
    @extend_schema(responses={200: dict})
    def get(self, request: Request) -> Response:
        return Response({"status": "ok"})


class ReadyApi(ProbeApi):
    @extend_schema(responses={200: dict, 503: dict})
    def get(self, request: Request) -> Response:
        body = readiness(details=sees_details(request))
        return Response(body, status=status.HTTP_200_OK if body["ready"] else status.HTTP_503_SERVICE_UNAVAILABLE)


class HealthApi(ProbeApi):
    """Both probes in one answer, for people and for clients of the original ``/health``."""

    @extend_schema(responses={200: dict, 503: dict})
    def get(self, request: Request) -> Response:
        body = {"live": True, **readiness(details=sees_details(request))}
        return Response(body, status=status.HTTP_200_OK if body["ready"] else status.HTTP_503_SERVICE_UNAVAILABLE)
