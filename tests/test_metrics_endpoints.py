"""/metrics and the JSON metric endpoints: their shapes, and who may read them."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from resilience import config as runtime_config
from resilience.breaker import get_breaker
from resilience.client import get_client
from tests.fixtures_resilience import EMBED_MODEL

TOKEN = "s3cret-metrics-token-for-tests"
OUTSIDER = "203.0.113.9"
ENDPOINTS = ["/metrics", "/api/circuit-breaker/metrics", "/api/connection-pool/metrics", "/api/semantic-cache/metrics"]


@pytest.fixture
def token(settings):
    settings.RAGSITE_METRICS_TOKEN = TOKEN
    return TOKEN


def test_metrics_are_served_to_loopback_in_the_text_format(client, db, resilience_config):
    response = client.get("/metrics", HTTP_ACCEPT="text/plain")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    text = response.content.decode()
    assert 'ragsite_circuit_breaker_state{breaker="embed"} 0.0' in text
    assert 'ragsite_connection_pool_size{client="ollama",setting="pool_maxsize"} 20.0' in text
    assert "django_http_requests_total_by_method_total" in text


@pytest.mark.parametrize("path", ENDPOINTS)
def test_other_addresses_need_a_token(client, path, token):
    response = client.get(path, REMOTE_ADDR=OUTSIDER)
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert response.json()["error"]["code"] == "not_authenticated"


@pytest.mark.parametrize("path", ENDPOINTS[:3])
def test_the_bearer_token_lets_any_address_in(client, db, path, token, resilience_config):
    response = client.get(path, REMOTE_ADDR=OUTSIDER, HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.status_code == 200


def test_a_wrong_token_is_refused_even_from_loopback(client, token):
    response = client.get("/metrics", HTTP_AUTHORIZATION="Bearer not-the-token")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "authentication_failed"


def test_no_token_is_accepted_when_none_is_configured(client, settings):
    settings.RAGSITE_METRICS_TOKEN = ""
    response = client.get("/metrics", REMOTE_ADDR=OUTSIDER, HTTP_AUTHORIZATION="Bearer ")
    assert response.status_code == 401


def test_a_proxied_request_is_not_let_in_by_its_loopback_address(client, token):
    """Behind a reverse proxy on the same host, every visitor arrives from 127.0.0.1."""
    response = client.get("/metrics", HTTP_X_FORWARDED_FOR=OUTSIDER)
    assert response.status_code == 401


def test_the_allow_list_takes_networks(client, db, settings, resilience_config):
    settings.RAGSITE_METRICS_ALLOW = ["10.0.0.0/8", "2001:db8::/32"]
    assert client.get("/metrics", REMOTE_ADDR="10.1.2.3").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="2001:db8::5").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="127.0.0.1").status_code == 401


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("RAGSITE_METRICS_ALLOW", "10.0.0.0/8,intranet", "'intranet' is not an IP address"),
        ("RAGSITE_METRICS_TOKEN", "short", "at least 16 characters"),
    ],
)
def test_bad_access_settings_stop_the_start(variable, value, message):
    env = {**os.environ, variable: value}
    result = subprocess.run(
        [sys.executable, "-c", "import ragsite.settings"], env=env, capture_output=True, text=True, check=False
    )
    assert result.returncode != 0
    assert message in result.stderr


def test_breaker_metrics_shape(client, resilience_config):
    get_breaker("chat").force_open()
    body = client.get("/api/circuit-breaker/metrics").json()
    assert body["pid"] == os.getpid()
    assert set(body["breakers"]) >= {"embed", "chat"}
    chat = body["breakers"]["chat"]
    assert set(chat) == {
        "state",
        "failure_count",
        "success_count",
        "consecutive_failures",
        "total_calls",
        "rejected_calls",
        "last_failure_time",
        "last_state_change",
        "retry_after",
        "config",
    }
    assert chat["state"] == "open"
    assert chat["config"]["failure_threshold"] == 3
    assert body["breakers"]["embed"]["state"] == "closed"


def test_pool_metrics_shape_and_counts(client, fake_ollama, resilience_config):
    resilience_config(provider={"ollama_base_url": fake_ollama.url})
    before = client.get("/api/connection-pool/metrics").json()
    fake_ollama.set_mode("status", status=503, times=1, paths=["/api/embed"])
    get_client().embed(["one retry"], EMBED_MODEL)

    body = client.get("/api/connection-pool/metrics").json()

    assert set(body) == {
        "pool_connections",
        "pool_maxsize",
        "pool_block",
        "timeouts",
        "retries",
        "total_requests",
        "retries_total",
        "retries_by_reason",
        "budget_exhausted",
    }
    assert body["pool_maxsize"] == 20 and body["pool_block"] is False
    assert body["timeouts"] == {"connect": 0.5, "read": 1.0}
    assert body["retries"]["max_retries"] == 2 and body["retries"]["retry_statuses"] == [429, 502, 503, 504]
    assert body["total_requests"] == before["total_requests"] + 1
    assert body["retries_total"] == before["retries_total"] + 1
    assert body["retries_by_reason"]["status_503"] == before["retries_by_reason"].get("status_503", 0) + 1


def test_semantic_cache_metrics_shape(client, db, resilience_config):
    body = client.get("/api/semantic-cache/metrics").json()
    assert set(body) >= {
        "enabled",
        "hits",
        "exact_hits",
        "semantic_hits",
        "misses",
        "hit_rate",
        "size",
        "max_size",
        "fill_ratio",
        "evictions",
        "ttl_seconds",
        "threshold",
    }
    cache = runtime_config.current().cache
    assert body["enabled"] is cache.enabled and body["max_size"] == cache.max_entries
    assert body["threshold"] == cache.similarity_threshold


def test_semantic_cache_metrics_are_503_without_the_database(client):
    response = client.get("/api/semantic-cache/metrics")
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "unavailable"


def test_scrapes_are_not_throttled(client, db, resilience_config):
    resilience_config(access={"ip_rate": "2/minute"})
    statuses = [client.get(path).status_code for _ in range(4) for path in ENDPOINTS[:3]]
    assert set(statuses) == {200}


def test_production_lets_no_address_in_by_default():
    """Behind a same-host proxy every visitor comes from loopback: production asks for the token."""
    import os
    import subprocess
    import sys

    script = "from django.conf import settings; print(settings.RAGSITE_METRICS_ALLOW)"
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "ragsite.settings", "RAGSITE_ENV": "production"}
    env["DJANGO_SECRET_KEY"] = "s" * 40
    env.pop("RAGSITE_METRICS_ALLOW", None)
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
