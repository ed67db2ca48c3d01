"""Each Prometheus metric moves when its event happens (single-process mode; see
test_multiworker_metrics.py for the sum over gunicorn workers)."""

from __future__ import annotations

import pytest

from rag import metrics as rag_metrics
from ragsite.metrics import scrape_registry
from resilience import config as runtime_config
from resilience import metrics
from resilience.breaker import get_breaker
from resilience.client import get_client
from resilience.errors import CircuitOpenError, OllamaUnavailable
from tests.fixtures_resilience import EMBED_MODEL


def value(metric, name: str, **labels: str) -> float:
    """The current value of one sample of ``metric`` (0 when it has not been written yet)."""
    for family in metric.collect():
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return 0.0


def fail(breaker, times: int) -> None:
    for _ in range(times):
        with pytest.raises(RuntimeError):
            breaker.call(_raise)


def _raise() -> None:
    raise RuntimeError("upstream failed")


@pytest.fixture
def ollama_client(fake_ollama, resilience_config):
    """The process's shared client (counted in process_stats) talking to the fake server."""
    resilience_config(provider={"ollama_base_url": fake_ollama.url})
    return get_client()


def test_it_sets_the_state_gauge_and_counts_the_transition_when_a_breaker_opens(resilience_config, clock):
    breaker = get_breaker("embed")
    breaker.timer = clock
    opened = value(
        metrics.BREAKER_TRANSITIONS,
        "ragsite_circuit_breaker_transitions_total",
        breaker="embed",
        from_state="closed",
        to_state="open",
    )
    failures = value(metrics.BREAKER_CALLS, "ragsite_circuit_breaker_calls_total", breaker="embed", result="failure")

    fail(breaker, 3)  # FAST_BREAKER opens after 3 consecutive failures

    assert value(metrics.BREAKER_STATE, "ragsite_circuit_breaker_state", breaker="embed") == 1
    assert (
        value(
            metrics.BREAKER_TRANSITIONS,
            "ragsite_circuit_breaker_transitions_total",
            breaker="embed",
            from_state="closed",
            to_state="open",
        )
        == opened + 1
    )
    assert (
        value(metrics.BREAKER_CALLS, "ragsite_circuit_breaker_calls_total", breaker="embed", result="failure")
        == failures + 3
    )
    assert (
        value(metrics.BREAKER_CONSECUTIVE_FAILURES, "ragsite_circuit_breaker_consecutive_failures", breaker="embed")
        == 3
    )
    changed = value(
        metrics.BREAKER_LAST_CHANGE, "ragsite_circuit_breaker_last_state_change_timestamp_seconds", breaker="embed"
    )
    assert changed == pytest.approx(breaker.last_state_change, abs=1)


def test_it_counts_rejected_calls(resilience_config):
    breaker = get_breaker("chat")
    breaker.force_open()
    rejected = value(metrics.BREAKER_CALLS, "ragsite_circuit_breaker_calls_total", breaker="chat", result="rejected")
    with pytest.raises(CircuitOpenError):
        breaker.call(lambda: None)
    assert value(metrics.BREAKER_CALLS, "ragsite_circuit_breaker_calls_total", breaker="chat", result="rejected") == (
        rejected + 1
    )


def test_a_scrape_shows_a_breaker_turning_half_open_without_any_call(resilience_config, clock):
    breaker = get_breaker("embed")
    breaker.timer = clock
    fail(breaker, 3)
    clock.advance(runtime_config.current().breaker.recovery_timeout + 1)

    scrape_registry()

    assert value(metrics.BREAKER_STATE, "ragsite_circuit_breaker_state", breaker="embed") == 2
    breaker.reset()
    assert value(metrics.BREAKER_STATE, "ragsite_circuit_breaker_state", breaker="embed") == 0
    assert (
        value(metrics.BREAKER_CONSECUTIVE_FAILURES, "ragsite_circuit_breaker_consecutive_failures", breaker="embed")
        == 0
    )


def test_it_counts_retries_by_reason_and_observes_request_durations(ollama_client, fake_ollama):
    requests_before = value(metrics.POOL_REQUESTS, "ragsite_connection_pool_requests_total", client="ollama")
    retries_before = value(
        metrics.POOL_RETRIES, "ragsite_connection_pool_retries_total", client="ollama", reason="status_503"
    )
    observed_before = value(
        metrics.OLLAMA_REQUEST_DURATION,
        "ragsite_ollama_request_duration_seconds_count",
        endpoint="/api/embed",
        status="200",
    )
    fake_ollama.set_mode("status", status=503, times=1, paths=["/api/embed"])

    ollama_client.embed(["retried once"], EMBED_MODEL)

    assert fake_ollama.count("/api/embed") == 2
    assert (
        value(metrics.POOL_REQUESTS, "ragsite_connection_pool_requests_total", client="ollama") == requests_before + 1
    )
    assert (
        value(metrics.POOL_RETRIES, "ragsite_connection_pool_retries_total", client="ollama", reason="status_503")
        == retries_before + 1
    )
    assert (
        value(
            metrics.OLLAMA_REQUEST_DURATION,
            "ragsite_ollama_request_duration_seconds_count",
            endpoint="/api/embed",
            status="200",
        )
        == observed_before + 1
    )


def test_a_refused_connection_is_observed_with_its_status_and_its_retries(ollama_client, fake_ollama):
    refused = value(
        metrics.OLLAMA_REQUEST_DURATION,
        "ragsite_ollama_request_duration_seconds_count",
        endpoint="/api/embed",
        status="connection_error",
    )
    connect_retries = value(
        metrics.POOL_RETRIES, "ragsite_connection_pool_retries_total", client="ollama", reason="connect"
    )
    fake_ollama.set_mode("down")

    with pytest.raises(OllamaUnavailable):
        ollama_client.embed(["nobody home"], EMBED_MODEL)

    max_retries = runtime_config.current().pool.max_retries
    assert (
        value(
            metrics.OLLAMA_REQUEST_DURATION,
            "ragsite_ollama_request_duration_seconds_count",
            endpoint="/api/embed",
            status="connection_error",
        )
        == refused + 1
    )
    assert (
        value(metrics.POOL_RETRIES, "ragsite_connection_pool_retries_total", client="ollama", reason="connect")
        == connect_retries + max_retries
    )


def test_pool_size_comes_from_the_configuration(resilience_config):
    resilience_config(pool={"pool_maxsize": 7, "pool_connections": 3})
    (size,) = metrics.pool_size_collector.collect()
    samples = {s.labels["setting"]: s.value for s in size.samples}
    assert size.name == "ragsite_connection_pool_size"
    assert samples == {"pool_connections": 3, "pool_maxsize": 7}


def test_record_query_counts_and_times_by_cache_and_degraded():
    labels = {"cache": "miss", "degraded": "true"}
    count = value(rag_metrics.QUERIES, "ragsite_queries_total", **labels)
    observed = value(rag_metrics.QUERY_DURATION, "ragsite_query_duration_seconds_sum", **labels)

    rag_metrics.record_query(cache="miss", degraded=True, seconds=0.25)

    assert value(rag_metrics.QUERIES, "ragsite_queries_total", **labels) == count + 1
    assert value(rag_metrics.QUERY_DURATION, "ragsite_query_duration_seconds_sum", **labels) == pytest.approx(
        observed + 0.25
    )


def test_label_values_stay_bounded():
    other = value(rag_metrics.QUERIES, "ragsite_queries_total", cache="other", degraded="false")
    rag_metrics.record_query(cache="What does the yield statement do?", degraded=False, seconds=0.1)
    assert value(rag_metrics.QUERIES, "ragsite_queries_total", cache="other", degraded="false") == other + 1


def test_record_ingest_counts_files_by_result_and_chunks():
    before = {
        r: value(rag_metrics.INGEST_FILES, "ragsite_ingest_files_total", result=r)
        for r in ("new", "updated", "unchanged", "failed")
    }
    chunks = value(rag_metrics.INGEST_CHUNKS, "ragsite_ingest_chunks_total")

    rag_metrics.record_ingest(statuses=["new", "updated", "unchanged", "failed", "new"], chunks=6)

    after = {r: value(rag_metrics.INGEST_FILES, "ragsite_ingest_files_total", result=r) for r in before}
    assert {r: after[r] - before[r] for r in before} == {"new": 2, "updated": 1, "unchanged": 1, "failed": 1}
    assert value(rag_metrics.INGEST_CHUNKS, "ragsite_ingest_chunks_total") == chunks + 6


def scraped(name: str, **labels: str) -> float | None:
    """A sample of the scrape-time collector (the semantic cache is read from the database)."""
    for family in [*metrics.pool_size_collector.collect(), *rag_metrics.cache_collector.collect()]:
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return None


def ask(client, question: str) -> dict:
    response = client.post("/api/query", {"question": question}, content_type="application/json")
    assert response.status_code == 200, response.content
    return response.json()


def test_a_cache_miss_then_hit_moves_misses_hits_and_size(client, db, demo_corpus, resilience_config):
    question = "What does the pass statement do?"
    misses = scraped("ragsite_semcache_misses_total")
    exact = scraped("ragsite_semcache_hits_total", kind="exact")
    semantic = scraped("ragsite_semcache_hits_total", kind="semantic")
    size = scraped("ragsite_semcache_size")

    assert ask(client, question)["cache"] == "miss"
    assert ask(client, question.lower())["cache"] == "exact"

    assert scraped("ragsite_semcache_misses_total") == misses + 1
    assert scraped("ragsite_semcache_hits_total", kind="exact") == exact + 1
    assert scraped("ragsite_semcache_hits_total", kind="semantic") == semantic
    assert scraped("ragsite_semcache_size") == size + 1
    max_entries = runtime_config.current().cache.max_entries
    assert scraped("ragsite_semcache_fill_ratio") == pytest.approx((size + 1) / max_entries, abs=1e-4)


def test_cache_metrics_are_left_out_while_the_database_is_unreachable():
    # Without the db fixture every query fails, as with the database down: no zeros are exported.
    assert rag_metrics.cache_stats() is None
    assert scraped("ragsite_semcache_misses_total") is None
    assert scraped("ragsite_connection_pool_size", client="ollama", setting="pool_maxsize") is not None
