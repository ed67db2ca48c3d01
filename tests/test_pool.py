"""The pooled session: connection reuse, capped retries on POST, Retry-After and the retry budget."""

from __future__ import annotations

import dataclasses
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from resilience.config import PoolConfig
from resilience.fake_ollama import FakeOllama
from resilience.pool import PoolStats, RetryBudget, build_retry, build_session
from tests.fixtures_resilience import EMBED_MODEL, FakeClock, make_client

EMBED = {"model": EMBED_MODEL, "input": ["hello"]}


def session_for(pool: PoolConfig, **changes: object) -> tuple[requests.Session, PoolStats]:
    pool = dataclasses.replace(pool, **changes)
    stats = PoolStats()
    return build_session(pool, stats, RetryBudget.from_config(pool)), stats


def test_session_mounts_one_adapter_with_the_pool_settings(fast_pool: PoolConfig) -> None:
    session, _ = session_for(fast_pool, pool_maxsize=7, pool_block=True)
    adapter = session.get_adapter("http://127.0.0.1:11434/api/embed")
    assert adapter is session.get_adapter("https://ollama.example/api/embed")
    assert adapter._pool_maxsize == 7
    assert adapter._pool_block is True
    retry = adapter.max_retries
    assert retry.total == fast_pool.max_retries
    assert "POST" in retry.allowed_methods
    assert retry.raise_on_status is False
    assert retry.retry_after_max == fast_pool.retry_after_max


def test_post_status_retries_fire(fake_ollama: FakeOllama, fast_pool: PoolConfig) -> None:
    session, stats = session_for(fast_pool, max_retries=2)
    fake_ollama.set_mode("status", status=503, times=2)
    response = session.post(fake_ollama.url + "/api/embed", json=EMBED)
    assert response.status_code == 200
    assert fake_ollama.count("/api/embed") == 3
    assert stats.snapshot() == {
        "total_requests": 1,
        "retries_total": 2,
        "retries_by_reason": {"status_503": 2},
        "budget_exhausted": 0,
    }


def test_last_response_is_returned_when_retries_run_out(fake_ollama: FakeOllama, fast_pool: PoolConfig) -> None:
    session, _ = session_for(fast_pool, max_retries=2)
    fake_ollama.set_mode("status", status=503)
    response = session.post(fake_ollama.url + "/api/embed", json=EMBED)
    assert response.status_code == 503  # for the client to turn into "HTTP 503"
    assert fake_ollama.count("/api/embed") == 3


def test_statuses_outside_the_list_are_not_retried(fake_ollama: FakeOllama, fast_pool: PoolConfig) -> None:
    session, _ = session_for(fast_pool)
    fake_ollama.set_mode("status", status=500)
    assert session.post(fake_ollama.url + "/api/embed", json=EMBED).status_code == 500
    assert fake_ollama.count("/api/embed") == 1


def test_retry_after_is_honoured(fake_ollama: FakeOllama, fast_pool: PoolConfig) -> None:
    session, _ = session_for(fast_pool, retry_after_max=5.0)
    fake_ollama.set_mode("status", status=503, retry_after=1, times=1)
    started = time.perf_counter()
    assert session.post(fake_ollama.url + "/api/embed", json=EMBED).status_code == 200
    assert 1.0 <= time.perf_counter() - started < 2.0


def test_retry_after_is_capped(fake_ollama: FakeOllama, fast_pool: PoolConfig) -> None:
    session, _ = session_for(fast_pool, retry_after_max=0.2)
    fake_ollama.set_mode("status", status=429, retry_after=3600, times=1)
    started = time.perf_counter()
    assert session.post(fake_ollama.url + "/api/embed", json=EMBED).status_code == 200
    assert 0.2 <= time.perf_counter() - started < 1.0


def test_connection_errors_are_retried(fake_ollama: FakeOllama, fast_pool: PoolConfig) -> None:
    session, stats = session_for(fast_pool, max_retries=2)
    fake_ollama.set_mode("down")
    with pytest.raises(requests.ConnectionError):
        session.post(fake_ollama.url + "/api/embed", json=EMBED)
    assert stats.snapshot()["retries_by_reason"] == {"connect": 2}


def test_resets_are_retried(fake_ollama: FakeOllama, fast_pool: PoolConfig) -> None:
    session, stats = session_for(fast_pool, max_retries=2)
    fake_ollama.set_mode("reset", times=1)
    assert session.post(fake_ollama.url + "/api/embed", json=EMBED).status_code == 200
    assert stats.snapshot()["retries_by_reason"] == {"read": 1}


def test_read_timeouts_are_not_retried(fake_ollama: FakeOllama, fast_pool: PoolConfig) -> None:
    session, stats = session_for(fast_pool, max_retries=3, read_timeout=0.2)
    fake_ollama.set_mode("hang")
    with pytest.raises(requests.ReadTimeout):
        session.post(fake_ollama.url + "/api/chat", json={"model": "m", "messages": []})
    assert fake_ollama.count("/api/chat") == 1
    assert stats.retries_total == 0


def test_timeout_is_applied_when_the_caller_forgets_it(fake_ollama: FakeOllama, fast_pool: PoolConfig) -> None:
    session, _ = session_for(fast_pool, read_timeout=0.2)
    fake_ollama.set_mode("hang")
    started = time.perf_counter()
    with pytest.raises(requests.ReadTimeout):
        session.get(fake_ollama.url + "/api/version")
    assert time.perf_counter() - started < 1


def test_retry_budget_allows_a_ratio_of_recent_requests_with_a_floor() -> None:
    clock = FakeClock()
    budget = RetryBudget(ratio=0.2, min_retries=3, window=10.0, timer=clock)
    assert [budget.try_spend() for _ in range(4)] == [True, True, True, False]
    for _ in range(30):
        budget.record_request()
    assert budget.available() == 3  # 20 % of 30 = 6 allowed, 3 spent
    assert [budget.try_spend() for _ in range(4)] == [True, True, True, False]
    clock.advance(10.0)
    assert budget.available() == 3  # the window slid past everything: back to the floor


def test_retry_budget_stops_retries_when_exhausted(fake_ollama: FakeOllama, fast_pool: PoolConfig) -> None:
    session, stats = session_for(fast_pool, max_retries=3, retry_budget_min=2, retry_budget_ratio=0.0)
    fake_ollama.set_mode("status", status=503)
    assert session.post(fake_ollama.url + "/api/embed", json=EMBED).status_code == 503
    assert fake_ollama.count("/api/embed") == 3  # two retries, then the budget ran dry
    assert session.post(fake_ollama.url + "/api/embed", json=EMBED).status_code == 503
    assert fake_ollama.count("/api/embed") == 4  # no retry at all
    snap = stats.snapshot()
    assert (snap["retries_total"], snap["budget_exhausted"]) == (2, 2)


def test_retries_are_counted_by_reason() -> None:
    stats = PoolStats()
    retry = build_retry(PoolConfig(), stats, None)
    assert retry.new(total=1).stats is stats  # urllib3 copies the Retry on every attempt
    stats.record_retry("connect")
    stats.record_retry("status_503")
    stats.record_retry("status_503")
    assert stats.snapshot()["retries_by_reason"] == {"connect": 1, "status_503": 2}


def test_sequential_calls_reuse_one_connection(fake_ollama: FakeOllama, fast_pool: PoolConfig) -> None:
    client = make_client(fake_ollama.url, fast_pool)
    for _ in range(200):
        client.embed(["hello"], EMBED_MODEL)
    assert fake_ollama.count("/api/embed") == 200
    assert fake_ollama.connections_accepted == 1
    assert client.stats.total_requests == 200


def test_concurrent_calls_share_one_session_and_the_pool(fake_ollama: FakeOllama, fast_pool: PoolConfig) -> None:
    client = make_client(fake_ollama.url, fast_pool, pool_maxsize=4, pool_block=True)
    fake_ollama.latency = 0.005
    sessions = set()
    lock = threading.Lock()

    def work(i: int) -> None:
        with lock:
            sessions.add(id(client.session))
        client.embed([f"text {i}"], EMBED_MODEL)

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(work, range(80)))
    assert len(sessions) == 1
    assert fake_ollama.count("/api/embed") == 80
    assert fake_ollama.connections_accepted <= 4


def test_new_pool_config_swaps_the_session_without_breaking_calls_in_flight(
    fake_ollama: FakeOllama, fast_pool: PoolConfig
) -> None:
    client = make_client(fake_ollama.url, fast_pool)
    old_session = client.session
    fake_ollama.set_mode("slow", seconds=0.3, paths=["/api/chat"])
    results: list[str] = []
    thread = threading.Thread(target=lambda: results.append(client.chat([], "m").content))
    thread.start()
    time.sleep(0.1)
    client.configure(dataclasses.replace(fast_pool, pool_maxsize=3))
    assert client.session is not old_session
    assert client.pool_config.pool_maxsize == 3
    assert len(client.embed(["new call"], EMBED_MODEL)) == 1
    thread.join(2)
    assert results  # the call in flight finished on the old session
    current = client.session
    client.configure(dataclasses.replace(fast_pool, pool_maxsize=3))
    assert client.session is current  # an unchanged config keeps the session
