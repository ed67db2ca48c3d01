"""The fake Ollama server itself: its API answers, fault modes and counters, over real sockets."""

from __future__ import annotations

import json
import math
import threading
import time

import pytest
import requests

from resilience.fake_models import fake_answer, fake_embedding
from resilience.fake_ollama import FakeOllama

CONTEXT = (
    "Answer from the passages.\n\n"
    "[1] Paris is the capital of France. It has many museums.\n"
    "[2] Berlin is the capital of Germany.\n\n"
    "Question: what is the capital of France?"
)


def post(fake: FakeOllama, path: str, body: dict, **kwargs: object) -> requests.Response:
    return requests.post(fake.url + path, json=body, timeout=(1, 2), **kwargs)


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def test_embed_returns_one_normalised_vector_per_input(fake_ollama: FakeOllama) -> None:
    response = post(fake_ollama, "/api/embed", {"model": "all-minilm", "input": ["a cat", "a dog"]})
    data = response.json()
    assert response.status_code == 200
    assert data["model"] == "all-minilm"
    assert len(data["embeddings"]) == 2
    assert all(len(v) == 384 for v in data["embeddings"])
    assert all(math.isclose(math.sqrt(sum(x * x for x in v)), 1.0) for v in data["embeddings"])
    assert {"total_duration", "load_duration", "prompt_eval_count"} <= data.keys()


def test_embed_accepts_a_single_string(fake_ollama: FakeOllama) -> None:
    data = post(fake_ollama, "/api/embed", {"model": "m", "input": "hello"}).json()
    assert data["embeddings"] == [fake_ollama.embedding("hello")]


def test_same_text_same_vector_and_shared_words_are_closer() -> None:
    cat = list(fake_embedding("the cat sat on the mat"))
    assert cat == list(fake_embedding("the cat sat on the mat"))
    near = list(fake_embedding("a cat on a mat"))
    far = list(fake_embedding("quarterly revenue forecast"))
    assert cosine(cat, near) > 0.3 > 0.1 > abs(cosine(cat, far))


def test_legacy_embeddings_endpoint_returns_an_unnormalised_vector(fake_ollama: FakeOllama) -> None:
    vector = post(fake_ollama, "/api/embeddings", {"model": "m", "prompt": "hello"}).json()["embedding"]
    norm = math.sqrt(sum(x * x for x in vector))
    assert norm == pytest.approx(3.0)
    assert [x / norm for x in vector] == pytest.approx(fake_ollama.embedding("hello"))


def test_chat_cites_the_first_numbered_passage(fake_ollama: FakeOllama) -> None:
    body = {"model": "llama3.2", "messages": [{"role": "user", "content": CONTEXT}], "stream": False}
    data = post(fake_ollama, "/api/chat", body).json()
    assert data["message"] == {
        "role": "assistant",
        "content": "According to [1], Paris is the capital of France.",
    }
    assert data["done"] is True
    assert data["done_reason"] == "stop"
    assert data["eval_count"] > 0


def test_chat_without_passages_says_so() -> None:
    assert fake_answer([{"role": "user", "content": "hi"}]) == "I found no numbered passages to answer from."


def test_chat_reply_can_be_set(fake_ollama: FakeOllama) -> None:
    fake_ollama.chat_reply = "Forty-two."
    body = {"model": "m", "messages": [{"role": "user", "content": "?"}], "stream": False}
    assert post(fake_ollama, "/api/chat", body).json()["message"]["content"] == "Forty-two."


def test_chat_stream_sends_ndjson_pieces_ending_with_done(fake_ollama: FakeOllama) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": CONTEXT}]}
    response = post(fake_ollama, "/api/chat", body, stream=True)
    assert response.headers["Content-Type"] == "application/x-ndjson"
    lines = [json.loads(line) for line in response.iter_lines() if line]
    assert "".join(line["message"]["content"] for line in lines) == fake_answer(body["messages"])
    assert [line["done"] for line in lines] == [False] * (len(lines) - 1) + [True]


def test_generate_answers_with_response_field(fake_ollama: FakeOllama) -> None:
    data = post(fake_ollama, "/api/generate", {"model": "m", "prompt": CONTEXT, "stream": False}).json()
    assert data["response"].startswith("According to [1]")


def test_unknown_model_is_404_with_an_ollama_error(fake_ollama: FakeOllama) -> None:
    fake_ollama.models = {"all-minilm:latest"}
    response = post(fake_ollama, "/api/embed", {"model": "nomic-embed-text", "input": "x"})
    assert response.status_code == 404
    assert response.json() == {"error": "model 'nomic-embed-text' not found"}
    assert post(fake_ollama, "/api/embed", {"model": "all-minilm", "input": "x"}).status_code == 200


def test_tags_and_version(fake_ollama: FakeOllama) -> None:
    tags = requests.get(fake_ollama.url + "/api/tags", timeout=1).json()
    assert {m["name"] for m in tags["models"]} == {"all-minilm:latest", "llama3.2:latest"}
    assert requests.get(fake_ollama.url + "/api/version", timeout=1).json() == {"version": "0.6.0-fake"}


def test_status_fault_for_the_next_n_requests_only(fake_ollama: FakeOllama) -> None:
    fake_ollama.set_mode("status", status=503, retry_after=7, times=2)
    first, second, third = (post(fake_ollama, "/api/embed", {"model": "m", "input": "x"}) for _ in range(3))
    assert (first.status_code, second.status_code, third.status_code) == (503, 503, 200)
    assert first.headers["Retry-After"] == "7"
    assert "maximum pending requests exceeded" in first.json()["error"]
    assert fake_ollama.mode == "healthy"


def test_fault_limited_to_some_paths(fake_ollama: FakeOllama) -> None:
    fake_ollama.set_mode("status", status=500, paths=["/api/chat"])
    chat = {"model": "m", "messages": [], "stream": False}
    assert post(fake_ollama, "/api/chat", chat).status_code == 500
    assert post(fake_ollama, "/api/embed", {"model": "m", "input": "x"}).status_code == 200


def test_raw_body_fault_imitates_an_old_server(fake_ollama: FakeOllama) -> None:
    fake_ollama.set_mode("status", status=404, body="404 page not found", paths=["/api/embed"])
    response = post(fake_ollama, "/api/embed", {"model": "m", "input": "x"})
    assert (response.status_code, response.text) == (404, "404 page not found")


def test_down_refuses_connections_and_comes_back_on_the_same_port(fake_ollama: FakeOllama) -> None:
    session = requests.Session()
    port = fake_ollama.port
    assert session.get(fake_ollama.url + "/api/version", timeout=1).ok
    fake_ollama.set_mode("down")
    with pytest.raises(requests.ConnectionError, match="refused"):
        session.get(fake_ollama.url + "/api/version", timeout=1)
    fake_ollama.set_mode("healthy")
    assert fake_ollama.port == port
    assert session.get(fake_ollama.url + "/api/version", timeout=1).ok


def test_blackhole_makes_connects_time_out(fake_ollama: FakeOllama) -> None:
    fake_ollama.set_mode("blackhole")
    started = time.perf_counter()
    with pytest.raises(requests.ConnectTimeout):
        requests.get(fake_ollama.url + "/api/version", timeout=(0.2, 1))
    assert time.perf_counter() - started < 1
    fake_ollama.healthy()
    assert requests.get(fake_ollama.url + "/api/version", timeout=1).ok


def test_hang_never_answers_and_does_not_block_stop() -> None:
    fake = FakeOllama().start()
    fake.set_mode("hang")
    with pytest.raises(requests.ReadTimeout):
        requests.get(fake.url + "/api/version", timeout=(1, 0.2))
    errors: list[BaseException] = []

    def waiting_client() -> None:
        try:
            requests.get(fake.url + "/api/version", timeout=(1, 5))
        except requests.RequestException as exc:
            errors.append(exc)

    thread = threading.Thread(target=waiting_client)
    thread.start()
    time.sleep(0.05)
    started = time.perf_counter()
    fake.stop()
    thread.join(2)
    assert time.perf_counter() - started < 1
    assert errors  # the hanging request was dropped, not answered


def test_slow_mode_delays_the_answer(fake_ollama: FakeOllama) -> None:
    fake_ollama.set_mode("slow", seconds=0.2)
    started = time.perf_counter()
    assert requests.get(fake_ollama.url + "/api/version", timeout=1).ok
    assert time.perf_counter() - started >= 0.2


def test_reset_mode_resets_the_connection(fake_ollama: FakeOllama) -> None:
    fake_ollama.set_mode("reset")
    with pytest.raises(requests.ConnectionError, match="reset"):
        requests.get(fake_ollama.url + "/api/version", timeout=1)


def test_malformed_mode_sends_broken_json(fake_ollama: FakeOllama) -> None:
    fake_ollama.set_mode("malformed")
    response = post(fake_ollama, "/api/embed", {"model": "m", "input": "x"})
    assert response.status_code == 200
    with pytest.raises(ValueError):
        response.json()


def test_wrong_dimension_and_wrong_count(fake_ollama: FakeOllama) -> None:
    fake_ollama.set_mode("wrong_dim", dim=10)
    data = post(fake_ollama, "/api/embed", {"model": "m", "input": ["a", "b"]}).json()
    assert [len(v) for v in data["embeddings"]] == [10, 10]
    fake_ollama.set_mode("wrong_count")
    data = post(fake_ollama, "/api/embed", {"model": "m", "input": ["a", "b"]}).json()
    assert len(data["embeddings"]) == 1


def test_stream_error_arrives_after_a_200(fake_ollama: FakeOllama) -> None:
    fake_ollama.set_mode("stream_error", after=2, error="model runner crashed")
    response = post(fake_ollama, "/api/chat", {"model": "m", "messages": []}, stream=True)
    lines = [json.loads(line) for line in response.iter_lines() if line]
    assert response.status_code == 200
    assert len(lines) == 3
    assert lines[-1] == {"error": "model runner crashed"}


def test_counters_count_requests_and_connections(fake_ollama: FakeOllama) -> None:
    session = requests.Session()
    for _ in range(3):
        session.post(fake_ollama.url + "/api/embed", json={"model": "m", "input": "x"}, timeout=1)
    requests.get(fake_ollama.url + "/api/tags", timeout=1)
    assert fake_ollama.requests_by_path == {"/api/embed": 3, "/api/tags": 1}
    assert fake_ollama.total_requests == 4
    assert fake_ollama.count("/api/embed") == 3
    assert fake_ollama.connections_accepted == 2  # the session kept its connection alive
    fake_ollama.reset_counters()
    assert (fake_ollama.total_requests, fake_ollama.connections_accepted) == (0, 0)
    assert fake_ollama.requests_by_path == {}


def test_latency_is_added_to_every_answer() -> None:
    with FakeOllama(latency=0.05) as fake:
        started = time.perf_counter()
        requests.get(fake.url + "/api/version", timeout=1)
        assert time.perf_counter() - started >= 0.05


def test_unknown_mode_is_rejected(fake_ollama: FakeOllama) -> None:
    with pytest.raises(ValueError, match="unknown mode"):
        fake_ollama.set_mode("flaky")
    with pytest.raises(ValueError, match="whole server"):
        fake_ollama.set_mode("down", times=1)
