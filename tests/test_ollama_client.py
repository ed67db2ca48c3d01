"""OllamaClient against the fake server: answers, validation, error mapping and the breakers."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable

import pytest

from resilience.breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker, get_breaker
from resilience.client import ChatResult, OllamaClient, get_client
from resilience.config import PoolConfig, RuntimeConfig
from resilience.errors import CircuitOpenError, OllamaConfigError, OllamaUnavailable
from resilience.fake_models import fake_answer
from resilience.fake_ollama import FakeOllama
from tests.fixtures_resilience import CHAT_MODEL, EMBED_MODEL, FakeClock, breaker_config, make_client

QUESTION = [
    {"role": "system", "content": "Answer from the numbered passages and cite them."},
    {"role": "user", "content": "[1] Tea comes from China. It spread west.\n\nQuestion: where is tea from?"},
]


def embed_unavailable(client: OllamaClient, texts: list[str] | None = None) -> OllamaUnavailable:
    with pytest.raises(OllamaUnavailable) as info:
        client.embed(texts or ["hello"], EMBED_MODEL)
    return info.value


# -- embeddings ------------------------------------------------------------------------------------


def test_embed_returns_one_vector_per_text(ollama: OllamaClient, fake_ollama: FakeOllama) -> None:
    vectors = ollama.embed(["first text", "second text"], EMBED_MODEL)
    assert vectors == [fake_ollama.embedding("first text"), fake_ollama.embedding("second text")]


def test_embed_splits_large_inputs_into_batches(fake_ollama: FakeOllama, fast_pool: PoolConfig) -> None:
    client = make_client(fake_ollama.url, fast_pool)
    client.embed_batch_size = 64
    texts = [f"chunk number {i}" for i in range(150)]
    vectors = client.embed(texts, EMBED_MODEL)
    assert fake_ollama.count("/api/embed") == 3
    assert vectors[149] == fake_ollama.embedding("chunk number 149")


def test_embed_of_nothing_makes_no_request(ollama: OllamaClient, fake_ollama: FakeOllama) -> None:
    assert ollama.embed([], EMBED_MODEL) == []
    assert fake_ollama.total_requests == 0


def test_falls_back_to_the_legacy_endpoint_on_an_old_server(ollama: OllamaClient, fake_ollama: FakeOllama) -> None:
    fake_ollama.set_mode("status", status=404, body="404 page not found", paths=["/api/embed"])
    vectors = ollama.embed(["old server", "still works"], EMBED_MODEL)
    assert vectors[0] == pytest.approx(fake_ollama.embedding("old server"))  # normalised again
    assert math.isclose(sum(x * x for x in vectors[1]), 1.0)
    ollama.embed(["remembered"], EMBED_MODEL)
    assert fake_ollama.requests_by_path == {"/api/embed": 1, "/api/embeddings": 3}


def test_unknown_model_is_a_config_error_not_a_breaker_failure(
    ollama: OllamaClient,
    fake_ollama: FakeOllama,
    breakers: dict[str, CircuitBreaker],
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake_ollama.models = {"all-minilm"}
    with caplog.at_level(logging.WARNING, logger="resilience.client"):
        for _ in range(10):
            with pytest.raises(OllamaConfigError) as info:
                ollama.embed(["x"], "nomic-embed-text")
    assert info.value.reason == "upstream error 404: model not found"
    assert (info.value.status, info.value.detail) == (404, "model 'nomic-embed-text' not found")
    assert fake_ollama.count("/api/embed") == 10  # never retried
    assert "model 'nomic-embed-text' not found" in caplog.text
    snap = breakers["embed"].snapshot()
    assert (snap["state"], snap["failure_count"]) == (CLOSED, 0)


def test_bad_request_is_a_config_error(ollama: OllamaClient, fake_ollama: FakeOllama) -> None:
    fake_ollama.set_mode("status", status=400, error="invalid input type")
    with pytest.raises(OllamaConfigError) as info:
        ollama.embed(["x"], EMBED_MODEL)
    assert (info.value.reason, info.value.detail) == ("upstream error 400", "invalid input type")


# -- faults → reasons ------------------------------------------------------------------------------


def test_server_down_is_connection_refused(ollama: OllamaClient, fake_ollama: FakeOllama) -> None:
    fake_ollama.set_mode("down")
    assert embed_unavailable(ollama).reason == "connection refused"


def test_hanging_server_is_a_timeout(fake_ollama: FakeOllama, fast_pool: PoolConfig) -> None:
    client = make_client(fake_ollama.url, fast_pool, read_timeout=0.2)
    fake_ollama.set_mode("hang")
    started = time.perf_counter()
    assert embed_unavailable(client).reason == "timeout"
    assert time.perf_counter() - started < 1
    assert fake_ollama.count("/api/embed") == 1


def test_blackholed_server_is_a_timeout_and_not_retried(fake_ollama: FakeOllama, fast_pool: PoolConfig) -> None:
    # Each retry of a connect timeout would add a whole connect_timeout to the caller's wait.
    client = make_client(fake_ollama.url, fast_pool, connect_timeout=0.1, max_retries=3)
    fake_ollama.set_mode("blackhole")
    started = time.perf_counter()
    assert embed_unavailable(client).reason == "timeout"
    assert time.perf_counter() - started < 1
    assert client.stats.snapshot()["retries_total"] == 0


def test_http_500_is_unavailable_without_retries(ollama: OllamaClient, fake_ollama: FakeOllama) -> None:
    fake_ollama.set_mode("status", status=500, error="llama runner process has terminated")
    error = embed_unavailable(ollama)
    assert (error.reason, error.status, error.detail) == (
        "HTTP 500",
        500,
        "llama runner process has terminated",
    )
    assert fake_ollama.count("/api/embed") == 1


def test_http_503_is_retried_then_unavailable(ollama: OllamaClient, fake_ollama: FakeOllama) -> None:
    fake_ollama.set_mode("status", status=503, retry_after=0)
    error = embed_unavailable(ollama)
    assert error.reason == "HTTP 503"
    assert error.retry_after == 0
    assert fake_ollama.count("/api/embed") == 1 + ollama.pool_config.max_retries


def test_http_429_is_unavailable(ollama: OllamaClient, fake_ollama: FakeOllama) -> None:
    fake_ollama.set_mode("status", status=429)
    assert embed_unavailable(ollama).reason == "HTTP 429"


def test_malformed_json_is_unavailable(ollama: OllamaClient, fake_ollama: FakeOllama) -> None:
    fake_ollama.set_mode("malformed")
    assert embed_unavailable(ollama).reason == "malformed response: invalid JSON"


def test_wrong_dimension_is_malformed(ollama: OllamaClient, fake_ollama: FakeOllama) -> None:
    ollama.embed(["sets the dimension"], EMBED_MODEL)
    fake_ollama.set_mode("wrong_dim", dim=768)
    assert embed_unavailable(ollama).reason == "malformed response: dimension 768, expected 384 for all-minilm"


def test_wrong_vector_count_is_malformed(ollama: OllamaClient, fake_ollama: FakeOllama) -> None:
    fake_ollama.set_mode("wrong_count")
    assert embed_unavailable(ollama, ["a", "b"]).reason == "malformed response: 1 vectors for 2 inputs"


def test_connection_reset_is_retried_then_unavailable(ollama: OllamaClient, fake_ollama: FakeOllama) -> None:
    fake_ollama.set_mode("reset")
    assert embed_unavailable(ollama).reason == "connection reset"
    assert fake_ollama.count("/api/embed") == 1 + ollama.pool_config.max_retries


def test_transient_failures_count_for_the_breaker(
    ollama: OllamaClient, fake_ollama: FakeOllama, breakers: dict[str, CircuitBreaker]
) -> None:
    fake_ollama.set_mode("malformed")
    embed_unavailable(ollama)
    assert breakers["embed"].failure_count == 1


# -- breaker and retries ---------------------------------------------------------------------------


def test_retries_then_success_is_one_breaker_success(
    ollama: OllamaClient, fake_ollama: FakeOllama, breakers: dict[str, CircuitBreaker]
) -> None:
    fake_ollama.set_mode("status", status=503, times=2)
    assert len(ollama.embed(["hello"], EMBED_MODEL)) == 1
    assert fake_ollama.count("/api/embed") == 3
    snap = breakers["embed"].snapshot()
    assert (snap["success_count"], snap["failure_count"], snap["total_calls"]) == (1, 0, 1)


def test_open_breaker_rejects_without_network(
    ollama: OllamaClient, fake_ollama: FakeOllama, breakers: dict[str, CircuitBreaker]
) -> None:
    fake_ollama.set_mode("status", status=500)
    for _ in range(breakers["embed"].config.failure_threshold):
        embed_unavailable(ollama)
    assert breakers["embed"].state == OPEN
    seen = fake_ollama.total_requests
    started = time.perf_counter()
    for _ in range(20):
        error = embed_unavailable(ollama)
        assert isinstance(error, CircuitOpenError)
        assert error.reason == "circuit open"
    assert time.perf_counter() - started < 0.05  # all twenty together
    assert fake_ollama.total_requests == seen


def test_breakers_are_per_operation(
    ollama: OllamaClient, fake_ollama: FakeOllama, breakers: dict[str, CircuitBreaker]
) -> None:
    fake_ollama.set_mode("status", status=500, paths=["/api/chat"])
    for _ in range(breakers["chat"].config.failure_threshold):
        with pytest.raises(OllamaUnavailable):
            ollama.chat(QUESTION, CHAT_MODEL)
    assert breakers["chat"].state == OPEN
    assert len(ollama.embed(["embedding still works"], EMBED_MODEL)) == 1


def test_recovers_after_the_server_comes_back(
    ollama: OllamaClient, fake_ollama: FakeOllama, breakers: dict[str, CircuitBreaker], clock: FakeClock
) -> None:
    breaker = breakers["embed"]
    breaker.configure(breaker_config(success_threshold=2))
    fake_ollama.set_mode("down")
    for _ in range(breaker.config.failure_threshold):
        embed_unavailable(ollama)
    assert breaker.state == OPEN
    fake_ollama.set_mode("healthy")
    clock.advance(breaker.config.recovery_timeout)
    ollama.embed(["trial one"], EMBED_MODEL)
    assert breaker.state == HALF_OPEN
    ollama.embed(["trial two"], EMBED_MODEL)
    assert breaker.state == CLOSED
    assert [t["to"] for t in breaker.transitions] == [OPEN, HALF_OPEN, CLOSED]


def test_half_open_lets_at_most_max_calls_reach_a_slow_server(
    ollama: OllamaClient, fake_ollama: FakeOllama, breakers: dict[str, CircuitBreaker], clock: FakeClock
) -> None:
    breaker = breakers["chat"]
    breaker.configure(breaker_config(half_open_max_calls=2, success_threshold=5))
    fake_ollama.set_mode("down")
    for _ in range(breaker.config.failure_threshold):
        with pytest.raises(OllamaUnavailable):
            ollama.chat(QUESTION, CHAT_MODEL)
    fake_ollama.set_mode("slow", seconds=0.3)
    fake_ollama.reset_counters()
    clock.advance(breaker.config.recovery_timeout)
    start = threading.Barrier(12)
    outcomes: list[str] = []

    def call() -> None:
        start.wait()
        try:
            ollama.chat(QUESTION, CHAT_MODEL)
            outcomes.append("ok")
        except CircuitOpenError:
            outcomes.append("rejected")

    threads = [threading.Thread(target=call) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(3)
    assert fake_ollama.count("/api/chat") == 2
    assert sorted(outcomes) == ["ok"] * 2 + ["rejected"] * 10
    assert breaker.state == HALF_OPEN


# -- chat ------------------------------------------------------------------------------------------


def test_chat_returns_the_answer_and_its_stats(ollama: OllamaClient) -> None:
    result = ollama.chat(QUESTION, CHAT_MODEL, options={"num_ctx": 4096}, keep_alive="5m")
    assert isinstance(result, ChatResult)
    assert result.content == "According to [1], Tea comes from China."
    assert result.model == CHAT_MODEL
    assert result.eval_count and result.prompt_eval_count
    assert result.total_duration_s == pytest.approx(0.001)
    assert result.raw["done"] is True


def test_chat_error_body_is_unavailable(ollama: OllamaClient, fake_ollama: FakeOllama) -> None:
    fake_ollama.set_mode("status", status=500, error="model runner crashed", paths=["/api/chat"])
    with pytest.raises(OllamaUnavailable) as info:
        ollama.chat(QUESTION, CHAT_MODEL)
    assert (info.value.reason, info.value.detail) == ("HTTP 500", "model runner crashed")


def test_chat_read_timeout_is_not_retried(fake_ollama: FakeOllama, fast_pool: PoolConfig) -> None:
    client = make_client(fake_ollama.url, fast_pool, read_timeout=0.2, max_retries=3)
    fake_ollama.set_mode("hang")
    with pytest.raises(OllamaUnavailable, match="timeout"):
        client.chat(QUESTION, CHAT_MODEL)
    assert fake_ollama.count("/api/chat") == 1


def test_chat_stream_yields_the_pieces(ollama: OllamaClient, breakers: dict[str, CircuitBreaker]) -> None:
    pieces = list(ollama.chat_stream(QUESTION, CHAT_MODEL))
    assert len(pieces) > 3
    assert "".join(pieces) == fake_answer(QUESTION)
    assert breakers["chat"].success_count == 1


def test_chat_stream_error_mid_stream_raises_and_is_not_retried(
    ollama: OllamaClient, fake_ollama: FakeOllama, breakers: dict[str, CircuitBreaker]
) -> None:
    fake_ollama.set_mode("stream_error", after=2, error="an error was encountered while running the model")
    stream = ollama.chat_stream(QUESTION, CHAT_MODEL)
    received = [next(stream), next(stream)]
    with pytest.raises(OllamaUnavailable) as info:
        next(stream)
    assert received == ["According ", "to "]
    assert info.value.reason == "stream error"
    assert info.value.detail == "an error was encountered while running the model"
    assert fake_ollama.count("/api/chat") == 1
    assert breakers["chat"].failure_count == 1


def test_chat_stream_abandoned_by_its_reader_is_not_a_failure(
    ollama: OllamaClient, breakers: dict[str, CircuitBreaker]
) -> None:
    stream = ollama.chat_stream(QUESTION, CHAT_MODEL)
    next(stream)
    stream.close()
    snap = breakers["chat"].snapshot()
    assert (snap["failure_count"], snap["success_count"], snap["ignored_count"]) == (0, 0, 1)


def test_chat_stream_rejected_by_an_open_breaker(ollama: OllamaClient, breakers: dict[str, CircuitBreaker]) -> None:
    breakers["chat"].force_open()
    with pytest.raises(CircuitOpenError):
        next(ollama.chat_stream(QUESTION, CHAT_MODEL))


# -- health, observers, shared client --------------------------------------------------------------


def test_version_and_tags_bypass_the_breakers(
    ollama: OllamaClient, fake_ollama: FakeOllama, breakers: dict[str, CircuitBreaker]
) -> None:
    for breaker in breakers.values():
        breaker.force_open()
    assert ollama.version() == FakeOllama.version
    assert {m["name"] for m in ollama.tags()} == {"all-minilm:latest", "llama3.2:latest"}


def test_health_reports_a_server_that_is_down(ollama: OllamaClient, fake_ollama: FakeOllama) -> None:
    fake_ollama.set_mode("down")
    with pytest.raises(OllamaUnavailable, match="connection refused"):
        ollama.version()


def test_observers_see_every_request_with_its_status_and_duration(
    ollama: OllamaClient, fake_ollama: FakeOllama, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[str, str, float]] = []
    monkeypatch.setattr("resilience.client.request_observers", [lambda *args: seen.append(args)])
    ollama.embed(["x"], EMBED_MODEL)
    fake_ollama.set_mode("down")
    embed_unavailable(ollama)
    assert [(endpoint, status) for endpoint, status, _ in seen] == [
        ("/api/embed", "200"),
        ("/api/embed", "connection_error"),
    ]
    assert all(seconds >= 0 for _, _, seconds in seen)


def test_get_client_is_shared_and_follows_the_config(
    fake_ollama: FakeOllama, resilience_config: Callable[..., RuntimeConfig]
) -> None:
    resilience_config(provider={"ollama_base_url": fake_ollama.url})
    client = get_client()
    assert get_client() is client
    session = client.session
    resilience_config(pool={"pool_maxsize": 5})
    assert get_client() is client
    assert client.session is not session
    assert client.pool_config.pool_maxsize == 5
    assert len(client.embed(["through the shared client"], EMBED_MODEL)) == 1
    assert get_breaker("embed").success_count == 1
    with FakeOllama() as other:
        resilience_config(provider={"ollama_base_url": other.url})
        assert get_client() is not client
        assert get_client().base_url == other.url
