"""Operators' endpoints: ``/metrics`` for Prometheus and JSON views of breakers, pool and cache.

They are open to the addresses in ``RAGSITE_METRICS_ALLOW`` (loopback by default) and otherwise
need ``Authorization: Bearer $RAGSITE_METRICS_TOKEN``. A request carrying a proxy's forwarding
header is never let in by address: behind a reverse proxy on the same host every visitor would
otherwise arrive from 127.0.0.1.
"""

from __future__ import annotations

import dataclasses
import hmac
import ipaddress
import os
from functools import lru_cache
from typing import Any

from django.conf import settings
from django.http import HttpResponse
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.utils import extend_schema
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from rag import metrics as rag_metrics
from rag.errors import ServiceUnavailable
from rag.serializers import error_responses
from ragsite import metrics
from ragsite.serializers import BreakersMetricsSerializer, CacheMetricsSerializer, PoolMetricsSerializer
from resilience import config as runtime_config
from resilience import metrics as resilience_metrics
from resilience.breaker import all_breakers

FORWARDING_HEADERS = ("HTTP_X_FORWARDED_FOR", "HTTP_FORWARDED", "HTTP_X_REAL_IP")
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@lru_cache(maxsize=8)
def _networks(allow: tuple[str, ...]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(item, strict=False) for item in allow)


def address_allowed(meta: dict[str, Any]) -> bool:
    if any(header in meta for header in FORWARDING_HEADERS):
        return False
    try:
        address = ipaddress.ip_address(meta.get("REMOTE_ADDR", ""))
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in _networks(tuple(settings.RAGSITE_METRICS_ALLOW)))


class MetricsTokenAuthentication(BaseAuthentication):
    """``Authorization: Bearer <RAGSITE_METRICS_TOKEN>``; a wrong token is refused outright."""

    def authenticate(self, request: Request) -> tuple[None, str] | None:
        scheme, _, token = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
        if scheme.lower() != "bearer":
            return None
        expected = settings.RAGSITE_METRICS_TOKEN
        if not expected or not hmac.compare_digest(token.strip().encode(), expected.encode()):
            raise exceptions.AuthenticationFailed("Invalid metrics token.")
        return (None, token)

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="metrics"'


class MetricsAccess(BasePermission):
    def has_permission(self, request: Request, view: APIView) -> bool:
        return request.auth is not None or address_allowed(request.META)


class MetricsApiView(APIView):
    authentication_classes = [MetricsTokenAuthentication]
    permission_classes = [MetricsAccess]
    # Not the API's throttles: they would leave gaps in Prometheus' series, and they count in the
    # database, which /metrics must not need.
    throttle_classes: list = []


class AnyAccept(BaseContentNegotiation):
    """Prometheus' Accept header names text formats no DRF renderer offers; answer regardless."""

    def select_parser(self, request: Request, parsers: list) -> Any:
        return parsers[0] if parsers else None

    def select_renderer(self, request: Request, renderers: list, format_suffix: str | None = None) -> tuple:
        return renderers[0], renderers[0].media_type


class PrometheusApi(MetricsApiView):
    content_negotiation_class = AnyAccept

    @extend_schema(exclude=True)
    def get(self, request: Request) -> HttpResponse:
        return HttpResponse(generate_latest(metrics.scrape_registry()), content_type=CONTENT_TYPE_LATEST)


class BreakerMetricsApi(MetricsApiView):
    @extend_schema(responses={200: BreakersMetricsSerializer, **error_responses(401, 403)})
    def get(self, request: Request) -> Response:
        resilience_metrics.refresh_breakers()
        breakers = {name: breaker.snapshot() for name, breaker in sorted(all_breakers().items())}
        return Response(BreakersMetricsSerializer({"pid": os.getpid(), "breakers": breakers}).data)


class PoolMetricsApi(MetricsApiView):
    @extend_schema(responses={200: PoolMetricsSerializer, **error_responses(401, 403)})
    def get(self, request: Request) -> Response:
        pool = runtime_config.current().pool
        retries = {
            name: value
            for name, value in dataclasses.asdict(pool).items()
            if name.startswith(("max_retries", "backoff", "retry_"))
        }
        body = {
            "pool_connections": pool.pool_connections,
            "pool_maxsize": pool.pool_maxsize,
            "pool_block": pool.pool_block,
            "timeouts": {"connect": pool.connect_timeout, "read": pool.read_timeout},
            "retries": retries,
            **resilience_metrics.pool_totals(),
        }
        return Response(PoolMetricsSerializer(body).data)


class CacheMetricsApi(MetricsApiView):
    @extend_schema(responses={200: CacheMetricsSerializer, **error_responses(401, 403, 503)})
    def get(self, request: Request) -> Response:
        stats = rag_metrics.cache_stats()
        if stats is None:
            raise ServiceUnavailable("The semantic cache's statistics are unavailable.")
        return Response(CacheMetricsSerializer(stats).data)


class MetricsTokenScheme(OpenApiAuthenticationExtension):
    """Documents the metrics bearer token in the OpenAPI schema."""

    target_class = "ragsite.metrics_api.MetricsTokenAuthentication"
    name = "metricsToken"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer", "description": "RAGSITE_METRICS_TOKEN (not needed from loopback)."}
