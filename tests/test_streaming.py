"""POST /api/query with "stream": true: NDJSON events meta, tokens, done (or error)."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.django_db

QUESTION = "What does the yield statement do?"


def stream(client, question=QUESTION, **extra):
    body = json.dumps({"question": question, "stream": True, **extra})
    response = client.post("/api/query", body, content_type="application/json")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/x-ndjson"
    lines = b"".join(response.streaming_content).decode().splitlines()
    return [json.loads(line) for line in lines]


def tokens(events):
    return "".join(e["text"] for e in events if e["type"] == "token")


@pytest.fixture
def ollama_chat(fake_ollama, resilience_config):
    resilience_config(provider={"ollama_base_url": fake_ollama.url, "generation_backend": "ollama"})
    return fake_ollama


def test_extractive_answer_streams_sources_first_then_tokens_then_timings(client, demo_corpus):
    events = stream(client, use_cache=False)
    assert [e["type"] for e in events[:1]] == ["meta"] and events[-1]["type"] == "done"
    meta, done = events[0], events[-1]
    assert meta["sources"][0]["source"] == "pydoc:yield" and meta["degraded"] is False
    assert tokens(events) == done["answer"] and "[1]" in done["answer"]
    assert done["timings_ms"]["total"] > 0 and done["generator"] == "extractive"


def test_ollama_tokens_are_passed_on_as_they_stream(client, demo_corpus, ollama_chat):
    events = stream(client, use_cache=False)
    token_events = [e for e in events if e["type"] == "token"]
    assert len(token_events) > 3  # the fake streams word by word
    assert tokens(events).startswith("According to [1]")
    assert events[-1]["type"] == "done" and events[-1]["generator"] == "ollama"
    assert events[-1]["answer"] == tokens(events).strip()
    assert ollama_chat.count("/api/chat") == 1


def test_a_cache_hit_streams_the_cached_answer(client, demo_corpus, ollama_chat):
    first = stream(client, "What does the yield statement really do?")
    second = stream(client, "what does the yield statement really do")
    assert second[0]["cache"] == "exact"
    assert tokens(second) == first[-1]["answer"]
    assert ollama_chat.count("/api/chat") == 1


def test_a_failure_mid_stream_ends_with_an_error_line(client, demo_corpus, ollama_chat):
    ollama_chat.set_mode("stream_error", after=2, error="model runner crashed")
    events = stream(client, use_cache=False)
    assert events[0]["type"] == "meta"
    assert events[-1]["type"] == "error"
    assert "generation unavailable" in events[-1]["error"]["message"]
    assert len([e for e in events if e["type"] == "token"]) == 2


def test_an_upstream_error_text_never_reaches_the_stream(client, demo_corpus, ollama_chat):
    ollama_chat.set_mode("stream_error", after=1, error="runner at http://10.0.0.7:11434 key sk-live-7f3a9c")
    events = stream(client, use_cache=False)
    assert events[-1] == {
        "type": "error",
        "error": {"code": "generation_failed", "message": "generation unavailable: stream error"},
    }
    assert "sk-live" not in json.dumps(events) and "10.0.0.7" not in json.dumps(events)


def test_a_failure_before_the_first_token_falls_back_to_extractive(client, demo_corpus, ollama_chat):
    ollama_chat.set_mode("down")
    events = stream(client, use_cache=False)
    done = events[-1]
    assert done["type"] == "done" and done["degraded"] is True
    assert done["degraded_reason"].startswith("generation unavailable: connection refused")
    assert done["generator"] == "extractive" and tokens(events) == done["answer"]


def test_unknown_collection_is_a_plain_404_before_streaming(client, db):
    body = json.dumps({"question": "hi?", "stream": True, "collection": "nope"})
    response = client.post("/api/query", body, content_type="application/json")
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
