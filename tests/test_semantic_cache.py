"""The semantic answer cache: exact and semantic hits, near misses, TTL, LRU, scopes, freshness,
stale-if-error, single flight and failure isolation. Real Postgres, the real local model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from datetime import timedelta

import numpy as np
import pytest
from django.db import connection, connections, transaction
from django.test import Client

from rag import answer_cache as cache
from rag import cache_counters, sql
from rag.answers import answer_question, stream_answer
from rag.collections import delete_collection
from rag.embeddings import LocalEmbedder
from rag.ingestion import delete_document, ingest_document, ingest_items
from rag.models import CachedAnswer, Collection, Document, QueryLog
from rag.near_miss import near_miss_reason
from rag.sources import SourceItem
from rag.visibility import OPERATOR, resolve
from ragsite import liveserver
from tests import live

pytestmark = pytest.mark.django_db

COLLECTION = "cache-test"
YIELD_Q = "What does the yield statement do?"
DOCS = {
    "yield": (
        "The yield statement",
        "A yield statement is semantically equivalent to a yield expression. Using yield in a function "
        "body makes it a generator function: calling it returns a generator iterator, which runs the body "
        "until each yield and hands the value to its caller.",
    ),
    "lambda": (
        "Lambda expressions",
        "A lambda expression creates an anonymous function. Only a single expression is allowed in a "
        "lambda; statements are not allowed in a lambda, and neither are annotations.",
    ),
    "threads": (
        "Threads",
        "Call start() on a Thread object to start the thread: it runs its target in a new thread of "
        "control. A thread cannot be stopped from outside; to stop a thread, signal it with an Event "
        "and let it return.",
    ),
    "with": (
        "The with statement",
        "The with statement wraps the execution of a block with methods defined by a context manager, "
        "so that common try and finally patterns are encapsulated for reuse.",
    ),
}


def doc_items(prefix: str = "") -> list[SourceItem]:
    return [
        SourceItem(f"test:{key}", f"{title}\n\n{prefix}{text}".encode(), "text/plain", key)
        for key, (title, text) in DOCS.items()
    ]


class Clock:
    """The cache's clock, moved by hand."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def corpus(resilience_config) -> Collection:
    """A small collection (inside the test's transaction) and the default cache settings."""
    report = ingest_items(doc_items(), collection_name=COLLECTION)
    assert not report.failures
    return Collection.objects.get(name=COLLECTION)


@pytest.fixture
def clock(monkeypatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(cache, "timer", fake)
    return fake


@pytest.fixture
def empty_cache(db) -> None:
    """No entries but the test's own (other tests' processes may have committed some)."""
    CachedAnswer.objects.all().delete()


@pytest.fixture
def ollama_generation(fake_ollama, resilience_config):
    resilience_config(provider={"ollama_base_url": fake_ollama.url, "generation_backend": "ollama"})
    return fake_ollama


def ask(client, question: str, collection: str = COLLECTION, **extra) -> dict:
    body = {"question": question, "collection": collection, **extra}
    response = client.post("/api/query", json.dumps(body), content_type="application/json")
    assert response.status_code == 200, response.content
    return response.json()


def scope_of(*collections: Collection, **changes) -> cache.Scope:
    names = [collection.name for collection in collections]
    scope = cache.Scope.for_query(resolve(OPERATOR, names), embedding_model=LocalEmbedder().name, k=5)
    return cache.Scope(**{**scope.__dict__, **changes})


def remember(scope: cache.Scope, question: str, answer: str = "cached answer") -> np.ndarray:
    vector = LocalEmbedder().embed([question])[0]
    assert cache.store(scope, question, vector, answer, [], "extractive")
    return vector


def similarity(a: str, b: str) -> float:
    va, vb = LocalEmbedder().embed([a, b])
    return float(va @ vb)


# EXACT AND SEMANTIC HITS


def test_same_question_written_differently_hits_exact_without_embedding(client, corpus, monkeypatch):
    calls = []
    original = LocalEmbedder.embed

    def counting(self, texts):
        calls.append(list(texts))
        return original(self, texts)

    monkeypatch.setattr(LocalEmbedder, "embed", counting)
    first = ask(client, YIELD_Q)
    assert first["cache"] == "miss" and len(calls) == 1
    second = ask(client, "  what does the YIELD statement   do ")
    assert second["cache"] == "exact"
    assert len(calls) == 1  # the exact path never embeds
    assert second["answer"] == first["answer"]
    assert second["sources"] == first["sources"]
    assert second["question"] == "what does the YIELD statement   do"
    assert second["matched_question"] is None and second["similarity"] is None and second["stale"] is False


def test_close_paraphrase_hits_semantic_at_a_lowered_threshold(client, corpus, resilience_config):
    paraphrase = "What is the purpose of the yield statement?"
    ask(client, YIELD_Q)
    assert ask(client, paraphrase)["cache"] == "miss"  # 0.948 < 0.95, the default
    resilience_config(cache={"similarity_threshold": 0.92})
    body = ask(client, "what is the purpose of the yield statement, really?")
    assert body["cache"] == "semantic"
    assert body["matched_question"] in (YIELD_Q, paraphrase)
    assert 0.92 <= body["similarity"] < 1.0
    assert body["sources"][0]["source"] == "test:yield"


def test_unrelated_question_misses(client, corpus, resilience_config):
    resilience_config(cache={"similarity_threshold": 0.8})
    ask(client, YIELD_Q)
    body = ask(client, "How do I open a file for reading?")
    assert body["cache"] == "miss" and body["matched_question"] is None


NEAR_MISSES = [
    ("How do I stop a thread?", "How do I start a thread?"),
    ("What is allowed in a lambda?", "What is not allowed in a lambda?"),
    ("Is a lambda allowed to hold statements?", "Isn't a lambda allowed to hold statements?"),
    ("What changed in Python 3.11?", "What changed in Python 3.12?"),
    ("What is the difference between is and ==?", "What is the difference between is and !=?"),
]


@pytest.mark.parametrize("threshold", [0.95, 0.6])
@pytest.mark.parametrize(("cached", "asked"), NEAR_MISSES)
def test_negations_and_near_misses_never_hit(corpus, resilience_config, threshold, cached, asked):
    resilience_config(cache={"similarity_threshold": threshold})
    scope = scope_of(corpus)
    remember(scope, cached)
    if threshold < 0.95:
        assert similarity(cached, asked) >= threshold  # the guard, not the threshold, says no
    assert near_miss_reason(asked, cached)
    assert cache.lookup_semantic(scope, asked, LocalEmbedder().embed([asked])[0]) is None


def test_near_miss_guard_lets_paraphrases_through():
    assert near_miss_reason("What does the yield statement do?", "How does the yield statement work?") is None
    assert near_miss_reason("What isn't allowed in a lambda?", "What is not allowed in a lambda") is None
    assert near_miss_reason("How do I define functions?", "How to define a function") is None


def test_semantic_lookup_skips_a_nearer_near_miss_for_a_true_match(corpus, resilience_config):
    resilience_config(cache={"similarity_threshold": 0.6})
    scope = scope_of(corpus)
    remember(scope, "How do I stop a thread?", "stop answer")
    remember(scope, "How can I start threads?", "start answer")
    asked = "How do I start a thread?"
    hit = cache.lookup_semantic(scope, asked, LocalEmbedder().embed([asked])[0])
    assert hit is not None and hit.answer == "start answer" and hit.kind == "semantic"


# TTL, EXPIRY AND EVICTION


def test_entries_expire_after_the_ttl_and_hits_do_not_extend_it(client, corpus, clock, empty_cache, resilience_config):
    resilience_config(cache={"ttl_seconds": 100, "serve_stale_seconds": 50})
    before = cache_counters.stats()
    assert ask(client, YIELD_Q)["cache"] == "miss"
    clock.advance(99)
    assert ask(client, YIELD_Q)["cache"] == "exact"
    assert CachedAnswer.objects.get(collection_ids=[corpus.pk]).is_fresh(cache.now(), 100)
    clock.advance(2)  # 101 s after creation; the hit at 99 s did not restart the clock
    assert not CachedAnswer.objects.get(collection_ids=[corpus.pk]).is_fresh(cache.now(), 100)
    assert ask(client, YIELD_Q)["cache"] == "miss"  # answered afresh, replacing the expired entry
    assert CachedAnswer.objects.filter(collection_ids=[corpus.pk]).count() == 1
    assert cache_counters.stats()["expirations"] == before["expirations"] + 1
    clock.advance(1)
    assert ask(client, YIELD_Q)["cache"] == "exact"


def test_entries_past_the_stale_window_are_removed(corpus, clock, empty_cache, resilience_config):
    resilience_config(cache={"ttl_seconds": 100, "serve_stale_seconds": 50})
    scope = scope_of(corpus)
    remember(scope, "What is a lambda expression?")
    clock.advance(151)
    remember(scope, "What does the with statement do?")  # storing cleans up as it goes
    assert list(CachedAnswer.objects.values_list("question", flat=True)) == ["What does the with statement do?"]


def test_least_recently_used_entries_are_evicted_first(corpus, clock, empty_cache, resilience_config):
    resilience_config(cache={"max_entries": 3})
    scope = scope_of(corpus)
    before = cache_counters.stats()["evictions"]
    for question in ("What is a lambda?", "What is a thread?", "What is a generator?"):
        remember(scope, question)
        clock.advance(1)
    assert cache.lookup_exact(scope, "what is a lambda") is not None  # now the most recently used
    clock.advance(1)
    remember(scope, "What is a context manager?")
    remaining = set(CachedAnswer.objects.values_list("question", flat=True))
    assert remaining == {"What is a lambda?", "What is a generator?", "What is a context manager?"}
    clock.advance(1)
    remember(scope, "What is a decorator?")
    remaining = set(CachedAnswer.objects.values_list("question", flat=True))
    assert remaining == {"What is a lambda?", "What is a context manager?", "What is a decorator?"}
    assert cache_counters.stats()["evictions"] == before + 2
    assert CachedAnswer.objects.get(question="What is a lambda?").hits == 1
    assert CachedAnswer.objects.get(question="What is a decorator?").last_hit_at is None


# SCOPES AND FRESHNESS


def test_other_collections_models_and_generators_never_hit(corpus, resilience_config):
    resilience_config(cache={"similarity_threshold": 0.5})
    other = Collection.objects.create(name="cache-other")
    scope = scope_of(corpus)
    vector = remember(scope, YIELD_Q)
    for changed in (
        scope_of(other),
        scope_of(corpus, other),
        scope_of(corpus, embedding_model="ollama/all-minilm"),
        scope_of(corpus, generation="ollama/llama3.2"),
        scope_of(corpus, prompt_version="another prompt"),
        scope_of(corpus, k=3),
    ):
        assert cache.lookup_exact(changed, YIELD_Q) is None
        assert cache.lookup_semantic(changed, YIELD_Q, vector) is None
    assert cache.lookup_semantic(scope, YIELD_Q, vector).kind == "semantic"


def test_a_small_scope_inside_a_large_table_still_finds_its_nearest_entry(corpus, empty_cache):
    """The HNSW scan's candidates all belong to another scope; the lookup must not come back empty."""
    rng = np.random.default_rng(7)

    def unit(v: np.ndarray) -> np.ndarray:
        return (v / np.linalg.norm(v, axis=-1, keepdims=True)).astype(np.float32)

    query = unit(rng.normal(size=384))
    big = Collection.objects.create(name="cache-big")
    big_scope, small_scope = scope_of(big), scope_of(corpus)
    created = cache.now()

    def entry(collection: Collection, i: int, vector: np.ndarray) -> CachedAnswer:
        return CachedAnswer(
            collection_ids=[collection.pk],
            corpus_versions=[collection.corpus_version],
            embedding_model=big_scope.embedding_model,
            generation=big_scope.generation,
            prompt_version=big_scope.prompt_version,
            k=5,
            question_hash=f"{i:064x}",
            question=f"question {i}",
            embedding=vector,
            answer=f"answer {i}",
            generator="extractive",
            created_at=created,
        )

    # 400 entries of the big scope all nearer the query than anything in the small scope.
    crowd = unit(query + rng.normal(size=(400, 384)) * 0.01)
    CachedAnswer.objects.bulk_create([entry(big, i, v) for i, v in enumerate(crowd)])
    near = unit(query + rng.normal(size=384) * 0.015)
    others = unit(rng.normal(size=(2, 384)))
    CachedAnswer.objects.bulk_create([entry(corpus, 1000 + i, v) for i, v in enumerate([near, *others])])
    assert float(near @ query) < float((crowd @ query).min())

    with transaction.atomic(), connection.cursor() as cursor:
        # Make the planner take the HNSW index for the small scope too, as it may with other
        # statistics: its ef_search candidates then hold none of the scope.
        cursor.execute("SET LOCAL enable_sort = off")
        cursor.execute("SET LOCAL enable_bitmapscan = off")
        literal = sql.vector_literal(query)
        cursor.execute(
            f"EXPLAIN SELECT id FROM {cache.ANSWERS} WHERE {cache._SCOPE_SQL} AND created_at > %s "
            "ORDER BY (embedding::vector(384)) <=> %s::vector(384) LIMIT 5",
            [*small_scope.params(), created - timedelta(hours=1), literal],
        )
        plan = "\n".join(row[0] for row in cursor.fetchall())
        assert "cachedanswer_minilm_hnsw" in plan
        cursor.execute("SET LOCAL hnsw.ef_search = %s", [cache.EF_SEARCH])
        cursor.execute(
            f"SELECT id FROM {cache.ANSWERS} WHERE {cache._SCOPE_SQL} AND created_at > %s "
            "ORDER BY (embedding::vector(384)) <=> %s::vector(384) LIMIT 5",
            [*small_scope.params(), created - timedelta(hours=1), literal],
        )
        assert cursor.fetchall() == []  # the index scan alone comes back empty
        rows = cache.nearest(small_scope, query, valid_after=created - timedelta(hours=1))
    assert rows[0][1] == "question 1000"
    assert rows[0][2] == pytest.approx(float(near @ query), abs=1e-5)
    big_rows = cache.nearest(big_scope, query, valid_after=created - timedelta(hours=1))
    assert big_rows[0][2] == pytest.approx(float((crowd @ query).max()), abs=1e-5)


def test_reingesting_or_deleting_a_document_invalidates_cached_answers(client, corpus):
    assert ask(client, YIELD_Q)["cache"] == "miss"
    assert ask(client, YIELD_Q)["cache"] == "exact"
    ingest_document(
        collection_name=COLLECTION,
        source="test:yield",
        data=b"The yield statement\n\nYield now also means something new.",
        media_type="text/plain",
    )
    assert ask(client, YIELD_Q)["cache"] == "miss"
    corpus.refresh_from_db()
    versions = CachedAnswer.objects.filter(collection_ids=[corpus.pk]).values_list("corpus_versions", flat=True)
    assert list(versions) == [[corpus.corpus_version]]  # the old version's entry was cleaned up
    assert ask(client, YIELD_Q)["cache"] == "exact"
    delete_document(document=Document.objects.get(collection=corpus, source="test:yield"))
    body = ask(client, YIELD_Q)
    assert body["cache"] == "miss"
    assert all(s["source"] != "test:yield" for s in body["sources"])


def test_use_cache_false_neither_reads_nor_stores(client, corpus):
    assert ask(client, YIELD_Q, use_cache=False)["cache"] == "bypass"
    assert not CachedAnswer.objects.filter(collection_ids=[corpus.pk]).exists()
    assert ask(client, YIELD_Q)["cache"] == "miss"
    assert ask(client, YIELD_Q, use_cache=False)["cache"] == "bypass"
    assert ask(client, YIELD_Q)["cache"] == "exact"


def test_disabled_cache_is_bypassed(client, corpus, resilience_config):
    resilience_config(cache={"enabled": False})
    ask(client, YIELD_Q)
    assert ask(client, YIELD_Q)["cache"] == "bypass"
    assert not CachedAnswer.objects.filter(collection_ids=[corpus.pk]).exists()


# DEGRADATION, FAILURES, CONCURRENCY


def test_degraded_answers_are_never_cached(client, corpus, ollama_generation):
    ollama_generation.set_mode("status", status=500, paths=["/api/chat"])
    body = ask(client, YIELD_Q)
    assert body["degraded"] is True and body["cache"] == "miss"
    assert not CachedAnswer.objects.filter(collection_ids=[corpus.pk]).exists()
    ollama_generation.healthy()
    assert ask(client, YIELD_Q)["generator"] == "ollama"
    assert ask(client, YIELD_Q)["cache"] == "exact"
    assert ollama_generation.count("/api/chat") == 2


def test_an_expired_answer_is_served_stale_while_generation_is_down(
    client, corpus, clock, ollama_generation, resilience_config
):
    resilience_config(cache={"ttl_seconds": 100, "serve_stale_seconds": 1000})
    fresh = ask(client, YIELD_Q)
    assert fresh["generator"] == "ollama" and fresh["cache"] == "miss"
    clock.advance(101)
    ollama_generation.set_mode("down")
    stale = ask(client, "what does the yield statement do")
    assert stale["stale"] is True and stale["degraded"] is True and stale["cache"] == "exact"
    assert stale["answer"] == fresh["answer"] and stale["generator"] == "ollama"
    assert stale["degraded_reason"].startswith("generation unavailable: connection refused")
    assert stale["degraded_reason"].endswith("serving a stale cached answer")

    clock.advance(1000)  # past the stale window: a bare extractive answer
    bare = ask(client, YIELD_Q)
    assert bare["stale"] is False and bare["degraded"] is True and bare["generator"] == "extractive"


def stream_events(client, question: str, collection: str = COLLECTION) -> list[dict]:
    body = json.dumps({"question": question, "collection": collection, "stream": True})
    response = client.post("/api/query", body, content_type="application/json")
    assert response.status_code == 200, response.content
    return [json.loads(line) for line in b"".join(response.streaming_content).decode().splitlines()]


def test_a_streamed_question_is_served_stale_while_generation_is_down(
    client, corpus, clock, ollama_generation, resilience_config
):
    resilience_config(cache={"ttl_seconds": 100, "serve_stale_seconds": 1000})
    fresh = stream_events(client, YIELD_Q)[-1]
    assert fresh["type"] == "done" and fresh["generator"] == "ollama" and fresh["cache"] == "miss"
    clock.advance(101)
    ollama_generation.set_mode("down")
    events = stream_events(client, "what does the yield statement do")
    meta, done = events[0], events[-1]
    assert meta["type"] == "meta" and meta["stale"] is True and meta["cache"] == "exact"
    assert done["type"] == "done" and done["answer"] == fresh["answer"] and done["generator"] == "ollama"
    assert "".join(e["text"] for e in events if e["type"] == "token") == fresh["answer"]
    assert done["degraded_reason"].endswith("serving a stale cached answer")


def test_a_broken_cache_table_does_not_fail_queries(client, corpus):
    before = cache_counters.stats()["errors"]
    with connection.cursor() as cursor:
        cursor.execute(f"ALTER TABLE {cache.ANSWERS} RENAME TO broken_answers")
        cursor.execute("ALTER TABLE resilience_cachedembedding RENAME TO broken_embeddings")
    for _ in range(2):
        body = ask(client, YIELD_Q)
        assert body["cache"] == "miss" and body["degraded"] is False
        assert body["sources"][0]["source"] == "test:yield"
    page = client.get("/", {"q": YIELD_Q, "collection": COLLECTION})
    assert page.status_code == 200 and "cache: miss" in page.content.decode()
    with connection.cursor() as cursor:
        cursor.execute(f"ALTER TABLE broken_answers RENAME TO {cache.ANSWERS}")
    assert cache_counters.stats()["errors"] > before
    assert QueryLog.objects.filter(collection=COLLECTION).count() == 3


def test_stats_and_query_log_count_every_query(client, corpus, resilience_config):
    resilience_config(cache={"similarity_threshold": 0.9})
    before = cache_counters.stats()
    logged = QueryLog.objects.count()
    ask(client, YIELD_Q)
    ask(client, YIELD_Q.upper())
    ask(client, "How does the yield statement work?")
    ask(client, YIELD_Q, use_cache=False)
    client.get("/", {"q": YIELD_Q, "collection": COLLECTION})
    after = cache_counters.stats()
    assert after["misses"] - before["misses"] == 1
    assert after["exact_hits"] - before["exact_hits"] == 2
    assert after["semantic_hits"] - before["semantic_hits"] == 1
    assert after["hits"] - before["hits"] == 3
    assert after["bypasses"] - before["bypasses"] == 1
    assert after["size"] == CachedAnswer.objects.count()
    assert after["threshold"] == 0.9 and after["max_size"] == 1000 and after["ttl_seconds"] == 3600
    assert 0 <= after["hit_rate"] <= 1 and after["fill_ratio"] == round(after["size"] / 1000, 4)
    rows = list(QueryLog.objects.order_by("id")[logged:].values_list("cache", "degraded", "collection"))
    assert [r[0] for r in rows] == ["miss", "exact", "semantic", "bypass", "exact"]
    assert all(not degraded and collection == COLLECTION for _, degraded, collection in rows)


@pytest.fixture(scope="module")
def shared_corpus(django_db_setup, django_db_blocker):
    """A committed collection, so that threads with their own connections see it."""
    name = f"cache-shared-{os.getpid()}"
    with django_db_blocker.unblock():
        assert not ingest_items(doc_items(), collection_name=name).failures
    yield name
    with django_db_blocker.unblock():
        delete_collection(collection=Collection.objects.get(name=name))
        QueryLog.objects.filter(collection=name).delete()


def test_identical_concurrent_misses_make_one_model_call(shared_corpus, ollama_generation, resilience_config):
    # Waiters give up after about one model call's timeout (connect + read): well above 0.5 s.
    resilience_config(pool={"read_timeout": 10.0})
    ollama_generation.set_mode("slow", seconds=0.5, paths=["/api/chat"])
    barrier = threading.Barrier(6)
    answers = []

    def worker() -> None:
        try:
            barrier.wait()
            answers.append(answer_question(question=YIELD_Q, caller=OPERATOR, collection_name=shared_corpus))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert ollama_generation.count("/api/chat") == 1
    assert sorted(a.cache for a in answers) == ["exact"] * 5 + ["miss"]
    assert len({a.answer for a in answers}) == 1 and answers[0].generator == "ollama"
    assert CachedAnswer.objects.filter(collection_ids=[Collection.objects.get(name=shared_corpus).pk]).count() == 1


def test_identical_concurrent_streamed_misses_make_one_model_call(shared_corpus, ollama_generation, resilience_config):
    resilience_config(pool={"read_timeout": 10.0})
    ollama_generation.set_mode("slow", seconds=0.5, paths=["/api/chat"])
    barrier = threading.Barrier(4)
    done: list[dict] = []

    def worker() -> None:
        try:
            barrier.wait()
            # Not YIELD_Q: the plain single-flight test above has cached that one in this collection.
            events = list(
                stream_answer(
                    question="How is a yield statement evaluated?", caller=OPERATOR, collection_name=shared_corpus
                )
            )
            done.append(events[-1])
        finally:
            connections.close_all()

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert ollama_generation.count("/api/chat") == 1
    assert sorted(d["cache"] for d in done) == ["exact"] * 3 + ["miss"]
    assert len({d["answer"] for d in done}) == 1 and all(d["type"] == "done" for d in done)


ASK_IN_A_SUBPROCESS = """
import json, sys, django
django.setup()
from resilience import config
config.override(config.replace(config.current(), provider=json.loads(sys.argv[1])))
from rag.answers import answer_question
from rag.visibility import OPERATOR
answer = answer_question(question=sys.argv[2], caller=OPERATOR, collection_name=sys.argv[3])
print(json.dumps({"cache": answer.cache, "generator": answer.generator}))
"""


def test_identical_misses_in_two_processes_make_one_model_call(shared_corpus, fake_ollama, resilience_config):
    # Ollama embeddings on both sides: the same scope, and no local model to load in the child.
    provider = {
        "ollama_base_url": fake_ollama.url,
        "generation_backend": "ollama",
        "embedding_backend": "ollama",
        "embedding_model": "all-minilm",
    }
    resilience_config(provider=provider, pool={"read_timeout": 10.0})  # the wait on the lock: 10.5 s at most
    fake_ollama.set_mode("slow", seconds=1.0, paths=["/api/chat"])
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "ragsite.settings", "DATABASE_URL": live.test_database_url()}
    child = subprocess.Popen(
        [sys.executable, "-c", ASK_IN_A_SUBPROCESS, json.dumps(provider), YIELD_Q, shared_corpus],
        cwd=liveserver.ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while fake_ollama.count("/api/chat") == 0:  # the child holds the question's lock now
            assert child.poll() is None and time.monotonic() < deadline, child.stderr.read()
            time.sleep(0.02)
        here = answer_question(question=YIELD_Q, caller=OPERATOR, collection_name=shared_corpus)
        out, err = child.communicate(timeout=30)
    finally:
        child.kill()
    there = json.loads(out.strip().splitlines()[-1])
    assert there == {"cache": "miss", "generator": "ollama"}, err
    assert here.cache == "exact" and here.generator == "ollama"
    assert fake_ollama.count("/api/chat") == 1


def test_one_anonymous_caller_cannot_flush_everyone_s_answers(client, corpus, api_key, empty_cache, resilience_config):
    resilience_config(cache={"max_entries": 5})
    keyed = Client(HTTP_AUTHORIZATION=f"Bearer {api_key}")
    kept = [f"What does the statement number {n} do?" for n in range(5)]
    for question in kept:  # a full cache of key holders' answers
        assert ask(keyed, question)["cache"] == "miss"
    unadmitted = cache_counters.stats()["unadmitted"]
    for n in range(20):  # a flood of new questions from one anonymous address
        assert ask(client, f"Why is flood question {n} here?")["cache"] == "miss"
    assert [ask(keyed, question)["cache"] for question in kept] == ["exact"] * 5
    assert cache_counters.stats()["unadmitted"] == unadmitted + 20


def test_an_anonymous_question_that_repeats_still_enters_a_full_cache(client, corpus, empty_cache, resilience_config):
    resilience_config(cache={"max_entries": 1})
    assert ask(client, "What does the pass statement do?")["cache"] == "miss"  # room: cached at once
    question = "What does the del statement do?"
    assert ask(client, question)["cache"] == "miss"  # full, and new: answered, not stored
    assert ask(client, question)["cache"] == "miss"  # asked before: stored, evicting the LRU entry
    assert ask(client, question)["cache"] == "exact"
