"""The query path against a faulty Ollama: degraded answers, never a 500, no waiting on an open breaker.

Everything goes over real sockets to the fake Ollama server.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from rag.models import Document
from resilience.breaker import get_breaker

pytestmark = pytest.mark.django_db

QUESTION = "What does the yield statement do?"


def ask(client, question=QUESTION, **extra):
    response = client.post("/api/query", json.dumps({"question": question, **extra}), content_type="application/json")
    assert response.status_code == 200, response.content
    return response.json()


@pytest.fixture
def ollama_generation(fake_ollama, resilience_config):
    """Local embeddings (the demo corpus's), answers from the fake Ollama."""
    resilience_config(provider={"ollama_base_url": fake_ollama.url, "generation_backend": "ollama"})
    return fake_ollama


def test_generated_answer_comes_from_ollama(client, demo_corpus, ollama_generation):
    body = ask(client)
    assert body["generator"] == "ollama"
    assert body["answer"].startswith("According to [1]")
    assert body["degraded"] is False
    assert ollama_generation.count("/api/chat") == 1


@pytest.mark.parametrize(
    ("mode", "params", "reason"),
    [
        ("down", {}, "connection refused"),
        ("status", {"status": 500}, "HTTP 500"),
        ("status", {"status": 503, "retry_after": 1}, "HTTP 503"),
        ("malformed", {}, "malformed response"),
        ("reset", {}, "connection reset"),
        ("hang", {}, "timeout"),
    ],
)
def test_generation_fault_gives_a_degraded_extractive_answer(
    client, demo_corpus, ollama_generation, mode, params, reason
):
    if mode == "down":
        ollama_generation.set_mode(mode)
    else:
        ollama_generation.set_mode(mode, paths=["/api/chat"], **params)
    body = ask(client)
    assert body["degraded"] is True
    assert body["degraded_reason"].startswith("generation unavailable: ")
    assert reason in body["degraded_reason"]
    assert body["generator"] == "extractive"
    assert "[1]" in body["answer"] and "yield" in body["answer"].lower()
    assert body["sources"][0]["source"] == "pydoc:yield"


def test_unknown_model_is_reported_and_does_not_open_the_breaker(
    client, demo_corpus, ollama_generation, resilience_config
):
    resilience_config(provider={"generation_model": "no-such-model"})
    ollama_generation.models = {"all-minilm"}
    for _ in range(6):
        body = ask(client)
        assert body["degraded"] is True
        assert body["degraded_reason"] == "generation unavailable: upstream error 404: model not found"
    assert get_breaker("chat").state == "closed"
    assert ollama_generation.count("/api/chat") == 6  # never retried, never short-circuited


# What a misconfigured or hostile upstream might put in an error body.
SECRET = "Bearer sk-live-7f3a9c for http://10.0.0.7:11434/internal"


@pytest.mark.parametrize(
    ("status", "params", "reason"),
    [
        (403, {"error": SECRET}, "upstream error 403"),
        (401, {"body": SECRET}, "upstream error 401"),
        (404, {"error": f"model {SECRET} not found"}, "upstream error 404: model not found"),
    ],
)
def test_upstream_error_bodies_stay_in_the_logs(client, demo_corpus, ollama_generation, caplog, status, params, reason):
    ollama_generation.set_mode("status", paths=["/api/chat"], status=status, **params)
    with caplog.at_level(logging.WARNING, logger="resilience.client"):
        body = ask(client, use_cache=False)
    assert body["degraded"] is True
    assert body["degraded_reason"] == f"generation unavailable: {reason}"
    assert "sk-live" not in json.dumps(body) and "10.0.0.7" not in json.dumps(body)
    assert SECRET in caplog.text  # operators still see what the upstream said


def test_embedding_error_bodies_stay_in_the_logs(client, ollama_facilities):
    ollama_facilities.set_mode("status", paths=["/api/embed"], status=403, error=SECRET)
    body = ask(client, "Where do staff park?", collection="facilities", use_cache=False)
    assert body["degraded_reason"].startswith("embeddings unavailable: upstream error 403")
    assert "sk-live" not in json.dumps(body)


def test_embedding_fault_falls_back_to_full_text_retrieval(client, ollama_facilities):
    ollama_facilities.set_mode("down")
    body = ask(client, "When is lunch served in the canteen?", collection="facilities")
    assert body["degraded"] is True
    assert body["degraded_reason"].startswith("embeddings unavailable: connection refused")
    assert body["sources"][0]["source"].endswith("lunch.txt")
    assert "[1]" in body["answer"]


def test_wrong_dimension_is_a_failure_not_a_silent_mismatch(client, ollama_facilities):
    ollama_facilities.set_mode("wrong_dim", paths=["/api/embed"], dim=100)
    body = ask(client, "Where do staff park?", collection="facilities")
    assert body["degraded"] is True
    assert "malformed response" in body["degraded_reason"]
    assert body["sources"][0]["source"].endswith("parking.txt")


def test_healthy_ollama_answers_from_both_retrievers(client, ollama_facilities):
    body = ask(client, "Where do staff park?", collection="facilities")
    assert body["degraded"] is False
    assert body["generator"] == "ollama"
    assert body["sources"][0]["source"].endswith("parking.txt")
    assert ollama_facilities.count("/api/embed") == 1 and ollama_facilities.count("/api/chat") == 1


def test_open_breaker_answers_without_touching_the_network(client, ollama_facilities, resilience_config):
    resilience_config(breaker={"failure_threshold": 2, "recovery_timeout": 60.0})
    ollama_facilities.set_mode("status", status=500)
    for _ in range(2):
        ask(client, "Where do staff park?", collection="facilities")
    assert get_breaker("embed").state == "open" and get_breaker("chat").state == "open"
    before = ollama_facilities.total_requests
    for _ in range(5):
        body = ask(client, "Where do staff park?", collection="facilities")
        assert body["degraded_reason"] == "embeddings unavailable: circuit open; generation unavailable: circuit open"
        assert body["sources"][0]["source"].endswith("parking.txt")
    assert ollama_facilities.total_requests == before


def test_service_recovers_by_itself_when_ollama_comes_back(client, ollama_facilities, resilience_config):
    resilience_config(breaker={"failure_threshold": 1, "recovery_timeout": 0.2, "success_threshold": 1})
    ollama_facilities.set_mode("down")
    assert ask(client, "Where do staff park?", collection="facilities")["degraded"] is True
    assert get_breaker("embed").state == "open"
    ollama_facilities.set_mode("healthy")
    time.sleep(0.3)  # the recovery timeout: the next call is a half-open trial
    body = ask(client, "Where do staff park?", collection="facilities")
    assert body["degraded"] is False and body["generator"] == "ollama"
    assert get_breaker("embed").state == "closed" and get_breaker("chat").state == "closed"


def test_ingestion_stops_cleanly_when_embeddings_fail_and_a_rerun_resumes(fake_ollama, resilience_config, write_files):
    resilience_config(
        provider={"ollama_base_url": fake_ollama.url, "embedding_backend": "ollama", "embedding_batch_size": 1}
    )
    root = write_files({"a.txt": "Alpha document about apples."})
    call_command("ingest", str(root), "--collection", "resume", "--no-progress", stdout=StringIO())
    write_files({"b.txt": "Beta document about bananas.", "c.txt": "Gamma document about cherries."})
    fake_ollama.set_mode("down")
    with pytest.raises(CommandError, match=r"Stopped: embeddings unavailable: connection refused.*run again to resume"):
        call_command(
            "ingest", str(root), "--collection", "resume", "--no-progress", stdout=StringIO(), stderr=StringIO()
        )
    names = sorted(
        Path(s).name for s in Document.objects.filter(collection__name="resume").values_list("source", flat=True)
    )
    assert names == ["a.txt"]  # the finished file is kept, the failed one left nothing

    fake_ollama.set_mode("healthy")
    out = StringIO()
    call_command("ingest", str(root), "--collection", "resume", "--no-progress", stdout=out)
    assert "2 new, 0 updated, 1 unchanged, 0 failed" in out.getvalue()


def test_unreachable_database_is_a_503_for_the_api_and_the_page(tmp_path):
    script = (
        "import django, json; django.setup();"
        "from django.test import Client;"
        "r = Client().post('/api/query', json.dumps({'question': 'hi?'}), content_type='application/json');"
        "p = Client().get('/', {'q': 'hi?'});"
        "print(json.dumps({'status': r.status_code, 'retry': r.headers.get('Retry-After'), 'body': r.json(),"
        " 'page_status': p.status_code, 'page': p.content.decode()}))"
    )
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "ragsite.settings",
        "DATABASE_URL": f"postgresql://postgres@/postgres?host={tmp_path}",
        "RAGSITE_LOG_LEVEL": "CRITICAL",
    }
    root = Path(__file__).resolve().parent.parent
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, cwd=root, capture_output=True, text=True, timeout=60
    )
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome["status"] == 503
    assert outcome["retry"] == "5"
    assert outcome["body"]["error"]["code"] == "database_unavailable"
    assert outcome["page_status"] == 503
    assert "temporarily unavailable" in outcome["page"]
