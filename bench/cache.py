"""Semantic cache: lookup latency, end-to-end hit latency, and hit/false-hit rates by threshold.

``python -m bench cache [--sizes 1000,10000,100000] [--queries 300] [--repeat 40]``
``python -m bench cache --http [--repeat 300]``: exact and semantic hits over HTTP through gunicorn
against ``GET /health/live`` of the same server (bench/_cache_http.py).

1. Lookup: ``rag.answer_cache.lookup_semantic`` (the project's lookup: scope in the WHERE, HNSW,
   the near-miss guard, the hit bookkeeping) with 1k, 10k and 100k cached entries of 384
   dimensions, perturbations of real question embeddings, all in one scope; beside it, in the
   same run, a numpy linear scan over the same vectors (what an in-process cache pays). At the
   largest size a 1k scope of another collection shares the table, and the plan of the scoped
   query is printed. Goal: p95 <= 5 ms at 100k.
2. End to end: median ``POST /api/query`` through Django's test client for an exact hit, a
   semantic hit and a miss (the fake Ollama answers chat in 200 ms), next to ``GET /health`` in
   the same run. Goal: a hit costs at most 3x /health.
3. A paraphrase workload from the demo corpus's topics: base questions, paraphrases that should
   hit, near misses that must not, at thresholds 0.90/0.92/0.95, with the near-miss guard (what
   the cache does) and by similarity alone.

It runs on the configured database (the embedded one in var/pgdata by default) in scratch
collections and a scratch embedding-model name; it deletes what it created and sets the shared
counters back.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from bench._stats import pct, timed, unit

WORKLOAD: list[tuple[str, list[str], list[str]]] = [
    # (base question, paraphrases that should hit it, near misses that must not hit anything)
    (
        "What does the yield statement do?",
        ["How does the yield statement work?", "What is the purpose of the yield statement?", "Explain yield."],
        ["What does the return statement do?", "What does the yield from statement do?"],
    ),
    (
        "What is a lambda expression?",
        ["What are lambda expressions?", "Explain lambda expressions", "What is a lambda expression used for?"],
        ["What is a generator expression?", "What is a conditional expression?"],
    ),
    (
        "What is allowed in a lambda?",
        ["What is allowed inside a lambda?", "what is allowed in a lambda"],
        ["What is not allowed in a lambda?"],
    ),
    (
        "How does the global statement work?",
        ["What does the global statement do?", "What is the global statement used for?"],
        ["How does the return statement work?"],
    ),
    (
        "How do I raise an exception?",
        ["How can I raise an exception?", "How to raise exceptions?"],
        ["How do I catch an exception?", "How do I re-raise an exception?"],
    ),
    (
        "What does the with statement do?",
        ["What is the with statement used for?", "How does the with statement work?"],
        ["What does the while statement do?"],
    ),
    (
        "How does the break statement work?",
        ["What does the break statement do?"],
        ["How does the continue statement work?"],
    ),
    (
        "What does the del statement do?",
        ["What is the purpose of the del statement?", "What does del do?"],
        ["What does the try statement do?"],
    ),
    (
        "What is the difference between is and ==?",
        ["What's the difference between is and ==?"],
        ["What is the difference between is and !=?", "What is the difference between == and !=?"],
    ),
    (
        "How are floating point numbers represented?",
        ["How are floating-point numbers represented?"],
        ["How are integer numbers represented?", "How are complex numbers represented?"],
    ),
    (
        "What does the assert statement do?",
        ["How does the assert statement work?", "What is the assert statement used for?"],
        ["What does the assert statement not do?"],
    ),
    (
        "How do I define a class?",
        ["How can I define a class?", "How to define classes?"],
        ["How do I define a function?"],
    ),
    (
        "What are the rules for operator precedence?",
        ["What are the operator precedence rules?"],
        ["What are the rules for name binding?"],
    ),
    (
        "How does the import statement work?",
        ["What does the import statement do?", "Explain the import statement"],
        ["How does the from import statement work?"],
    ),
    (
        "What is a decorator?",
        ["What are decorators?", "Explain decorators"],
        ["What is a context manager?"],
    ),
    (
        "How do f-strings work?",
        ["How do formatted string literals work?", "How do f-strings work in Python?"],
        ["How do byte strings work?"],
    ),
    (
        "What happens when a function has no return statement?",
        ["What happens if a function has no return statement?"],
        ["What happens when a function has a return statement?"],
    ),
    (
        "How many arguments can a function take?",
        ["How many arguments can a function accept?"],
        ["How many arguments can a lambda take?", "How many arguments can a function take in Python 2?"],
    ),
    (
        "What does the nonlocal statement do?",
        ["What is the nonlocal statement used for?"],
        ["What does the if statement do?"],
    ),
    (
        "How does a for loop work?",
        ["How do for loops work?"],
        ["How does a while loop work?"],
    ),
    (
        "What is the else clause of a loop for?",
        ["What is the purpose of the else clause on a loop?"],
        ["What is the else clause of an if statement for?"],
    ),
    (
        "Which values are false in Python?",
        ["Which values are considered false in Python?"],
        ["Which values are true in Python?"],
    ),
    (
        "What does the pass statement do?",
        ["What is the pass statement for?"],
        ["What does the continue statement do?"],
    ),
    (
        "What is a coroutine?",
        ["What are coroutines?"],
        ["What is a generator?"],
    ),
]
THRESHOLDS = (0.90, 0.92, 0.95)
E2E_TOPICS = ["yield", "return", "with", "global", "nonlocal", "import", "assert", "del", "pass", "raise", "break"]
E2E_TOPICS += ["continue", "try", "while", "for", "lambda", "if"]
QUESTION_TEMPLATES = [
    "What does the {} statement do?",
    "How does {} work in Python?",
    "What is {} used for?",
    "Explain {} in Python",
    "When should I use {}?",
    "What are the rules for {}?",
]


# 1. LOOKUP LATENCY


def copy_entries(collection_id: int, model: str, questions: list[str], vectors: np.ndarray, start: int) -> None:
    """Load entries with binary COPY (the index is built afterwards, as a bulk load should)."""
    from django.db import connection
    from pgvector.psycopg import register_vector
    from psycopg.types.json import Jsonb

    from rag import answer_cache as cache
    from rag.generation import PROMPT_VERSION

    connection.ensure_connection()
    raw = connection.connection
    register_vector(raw)
    now = datetime.now(UTC)
    columns = (
        "collection_ids, corpus_versions, embedding_model, generation, prompt_version, k, question_hash, "
        "question, embedding, answer, sources, generator, created_at"
    )
    types = ["int8[]", "int8[]", "varchar", "varchar", "varchar", "int2", "varchar", "text", "vector", "text"]
    types += ["jsonb", "varchar", "timestamptz"]
    with raw.cursor() as cursor, cursor.copy(f"COPY {cache.ANSWERS} ({columns}) FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types(types)
        for i, (question, vector) in enumerate(zip(questions, vectors, strict=True), start=start):
            row = ([collection_id], [1], model, "bench", PROMPT_VERSION, 5, f"{i:064x}", question, vector)
            copy.write_row((*row, f"answer {i}", Jsonb([]), "extractive", now))


def build_index(model: str) -> float:
    from django.db import connection

    from rag import answer_cache as cache
    from rag.models import ANSWER_HNSW_EF_CONSTRUCTION, ANSWER_HNSW_M
    from rag.sql import hnsw_index_name

    name = hnsw_index_name("cachedanswer", model, 384)
    t = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute(f"DROP INDEX IF EXISTS {name}")
        cursor.execute("SET maintenance_work_mem = '1GB'")
        cursor.execute(
            f"CREATE INDEX {name} ON {cache.ANSWERS} USING hnsw ((embedding::vector(384)) vector_cosine_ops) "
            f"WITH (m = {ANSWER_HNSW_M}, ef_construction = {ANSWER_HNSW_EF_CONSTRUCTION}) WHERE embedding_model = %s",
            [model],
        )
        cursor.execute("RESET maintenance_work_mem")
        cursor.execute(f"ANALYZE {cache.ANSWERS}")
    return time.perf_counter() - t


def scoped_plan(scope: Any, vector: np.ndarray) -> list[str]:
    """EXPLAIN ANALYZE of the scoped nearest-neighbour query, the vector literal elided."""
    from django.db import connection, transaction

    from rag import answer_cache as cache
    from rag.sql import vector_literal

    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL hnsw.ef_search = %s", [cache.EF_SEARCH])
        literal = vector_literal(vector)
        cursor.execute(
            f"EXPLAIN (ANALYZE, COSTS OFF) SELECT id FROM {cache.ANSWERS} WHERE {cache._SCOPE_SQL} "
            "AND created_at > %s ORDER BY (embedding::vector(384)) <=> %s::vector(384) LIMIT 5",
            [*scope.params(), cache.now() - timedelta(hours=1), literal],
        )
        lines = [row[0] for row in cursor.fetchall()]
    return [re.sub(r"'\[[^\]]*\]'", "'[...]'", line) for line in lines]


def exact_plan(scope: Any) -> list[str]:
    """EXPLAIN ANALYZE of the exact lookup (a probe of the unique index: question hash in scope)."""
    from django.db import connection, transaction

    from rag import answer_cache as cache
    from rag.text import question_hash

    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            f"EXPLAIN (ANALYZE, COSTS OFF) {cache._EXACT_SQL}",
            [*scope.params(), question_hash("no such question"), cache.now() - timedelta(hours=1), cache.now()],
        )
        return [row[0] for row in cursor.fetchall()]


def plan_kind(plan: list[str]) -> str:
    text = "\n".join(plan)
    if "hnsw" in text:
        return "hnsw"
    return "exact scan" if "Sort" in text else "other"


def measure_lookups(scope: Any, questions: list[str], query_vectors: np.ndarray, matrix: np.ndarray) -> dict[str, Any]:
    from rag import answer_cache as cache
    from rag import cache_counters
    from resilience import config

    for i in range(20):  # warm-up: connection, plan cache, index pages
        cache.lookup_semantic(scope, questions[i % len(questions)], query_vectors[i % len(query_vectors)])
    threshold = config.current().cache.similarity_threshold
    exact_ms = [timed(lambda q=q: cache.lookup_exact(scope, q))[0] for q in questions]
    # Three passes, each timed on its own: interleaved, the numpy scan of 100k vectors would evict
    # the caches the lookups use, and the other way round.
    lookup_ms, hits = [], 0
    for question, vector in zip(questions, query_vectors, strict=True):
        ms, hit = timed(lambda q=question, v=vector: cache.lookup_semantic(scope, q, v))
        lookup_ms.append(ms)
        hits += hit is not None
    scan_ms, bests = [], []
    for vector in query_vectors:
        ms, best = timed(lambda v=vector: float(np.max(matrix @ v)))
        scan_ms.append(ms)
        bests.append(best)
    gaps, exact_top, same_decision = [], 0, 0
    for vector, best in zip(query_vectors, bests, strict=True):
        top = cache_counters.safely("nearest", _nearest, scope, vector, default=[])
        found = top[0][2] if top else -1.0
        gaps.append(max(0.0, best - found))
        exact_top += abs(found - best) < 1e-4
        same_decision += (found >= threshold) == (best >= threshold)
    return {
        "exact_p50_ms": pct(exact_ms, 50),
        "exact_p95_ms": pct(exact_ms, 95),
        "lookup_p50_ms": pct(lookup_ms, 50),
        "lookup_p95_ms": pct(lookup_ms, 95),
        "numpy_p50_ms": pct(scan_ms, 50),
        "numpy_p95_ms": pct(scan_ms, 95),
        "hit_rate": hits / len(questions),
        "recall_at_1": exact_top / len(questions),
        "decision_agreement": same_decision / len(questions),
        "similarity_gap_p95": pct(gaps, 95),
    }


def _nearest(scope: Any, vector: np.ndarray) -> list[tuple]:
    from rag import answer_cache as cache

    return cache.nearest(scope, vector, valid_after=cache.now() - timedelta(hours=1))


def lookup_benchmark(
    sizes: list[int], n_queries: int, base_questions: list[str], base_vectors: np.ndarray, pid: int
) -> tuple[dict[str, Any], list[str]]:
    from rag import answer_cache as cache
    from rag.generation import PROMPT_VERSION
    from rag.models import Collection

    rng = np.random.default_rng(42)
    model = f"bench/perturbed-minilm-{pid}"
    big = Collection.objects.create(name=f"bench-cache-{pid}-lookup")
    small = Collection.objects.create(name=f"bench-cache-{pid}-small")
    scope = cache.Scope((big.pk,), (1,), model, "bench", PROMPT_VERSION, 5)
    small_scope = cache.Scope((small.pk,), (1,), model, "bench", PROMPT_VERSION, 5)
    results: dict[str, Any] = {}
    stored_vectors = np.zeros((0, 384), dtype=np.float32)
    stored_base: list[int] = []
    plan: list[str] = []
    print(
        f"{'entries':>8} {'plan':>10} {'index s':>8} {'exact p50':>10} {'p95':>7} {'semantic p50':>13} {'p95':>7} "
        f"{'numpy p50':>10} {'p95':>7} {'hits':>5} {'recall@1':>8} {'gap p95':>8} {'same hit/miss as exact':>22}"
    )

    def perturb(count: int) -> tuple[list[int], np.ndarray]:
        # Paraphrase-like spread: similarity to the base question between about 0.8 and 0.97.
        which = rng.integers(len(base_vectors), size=count)
        sigma = rng.uniform(0.008, 0.03, size=(count, 1))
        return list(which), unit(base_vectors[which] + rng.normal(size=(count, 384)) * sigma)

    for size in sizes:
        which, vectors = perturb(size - len(stored_vectors))
        copy_entries(big.pk, model, [base_questions[w] for w in which], vectors, start=len(stored_vectors))
        stored_vectors = np.concatenate([stored_vectors, vectors])
        stored_base += which
        if size == sizes[-1]:
            # Another collection's small scope in the same table, with the same model.
            s_which, s_vectors = perturb(1000)
            copy_entries(small.pk, model, [base_questions[w] for w in s_which], s_vectors, start=10_000_000)
        build_s = build_index(model)
        # Half the queries repeat a cached question closely (hits), half are new perturbations.
        picks = rng.integers(len(stored_vectors), size=n_queries // 2)
        near = unit(stored_vectors[picks] + rng.normal(size=(len(picks), 384)) * 0.004)
        fresh_which, fresh = perturb(n_queries - len(picks))
        questions = [base_questions[stored_base[p]] for p in picks] + [base_questions[w] for w in fresh_which]
        queries = np.concatenate([near, fresh])
        plan = scoped_plan(scope, queries[0])
        row = measure_lookups(scope, questions, queries, stored_vectors)
        label = f"{size // 1000}k"
        results[label] = {**row, "plan": plan_kind(plan), "index_build_s": build_s}
        print(
            f"{size:>8} {plan_kind(plan):>10} {build_s:>8.1f} {row['exact_p50_ms']:>8.2f}ms "
            f"{row['exact_p95_ms']:>5.2f}ms {row['lookup_p50_ms']:>11.2f}ms "
            f"{row['lookup_p95_ms']:>5.2f}ms {row['numpy_p50_ms']:>8.2f}ms {row['numpy_p95_ms']:>5.2f}ms "
            f"{row['hit_rate']:>5.2f} {row['recall_at_1']:>8.2f} {row['similarity_gap_p95']:>8.4f} "
            f"{row['decision_agreement']:>22.3f}"
        )
    # The small scope inside the large table: the planner reads it by its b-tree and sorts.
    s_picks = rng.integers(len(base_vectors), size=n_queries)
    s_queries = unit(base_vectors[s_picks] + rng.normal(size=(n_queries, 384)) * 0.01)
    s_questions = [base_questions[p] for p in s_picks]
    ms = [
        timed(lambda q=q, v=v: cache.lookup_semantic(small_scope, q, v))[0]
        for q, v in zip(s_questions, s_queries, strict=True)
    ]
    small_plan = plan_kind(scoped_plan(small_scope, s_queries[0]))
    results["small_scope_1k_in_table"] = {
        "lookup_p50_ms": pct(ms, 50),
        "lookup_p95_ms": pct(ms, 95),
        "plan": small_plan,
    }
    print(
        f"a 1000-entry scope inside the same table ({small_plan}): p50 {pct(ms, 50):.2f} ms, p95 {pct(ms, 95):.2f} ms"
    )
    plan = [*plan, "exact lookup:", *exact_plan(scope)]
    return results, plan


# 2. END TO END


def e2e_benchmark(pid: int, repeat: int) -> dict[str, float]:
    from django.test import Client

    from rag.ingestion import ingest_items
    from rag.models import ApiKey, Collection
    from rag.sources import demo_items
    from resilience import config
    from resilience.fake_ollama import FakeOllama

    name = f"bench-cache-{pid}-e2e"
    items = [item for item in demo_items() if item.source.removeprefix("pydoc:") in E2E_TOPICS]
    report = ingest_items(items, collection_name=name)
    if report.failures:
        raise SystemExit(f"ingest failed: {report.failures}")
    # Throttles stay on, at their defaults: the questions carry a key, as a client's would.
    key_row, key = ApiKey.issue(name="bench cache")
    client = Client(HTTP_AUTHORIZATION=f"Bearer {key}")

    def post(question: str) -> tuple[float, dict]:
        body = json.dumps({"question": question, "collection": name})
        ms, response = timed(lambda: client.post("/api/query", body, content_type="application/json"))
        assert response.status_code == 200, response.content
        return ms, response.json()

    with FakeOllama() as fake:
        fake.set_mode("slow", seconds=0.2, paths=["/api/chat"])
        base = config.current()
        provider = {"generation_backend": "ollama", "ollama_base_url": fake.url}
        config.override(config.replace(base, provider=provider))
        try:
            miss, semantic_new = [], []
            for topic in E2E_TOPICS:
                ms, body = post(f"What does the {topic} statement do?")
                if body["cache"] == "miss" and body["generator"] == "ollama":
                    miss.append(ms)
            for topic in E2E_TOPICS:
                for template in ("How does the {} statement work?", "What is the {} statement used for?"):
                    ms, body = post(template.format(topic))
                    if body["cache"] == "semantic":
                        semantic_new.append(ms)
            paraphrase = "How does the yield statement work?"
            assert post(paraphrase)[1]["cache"] == "semantic"
            for _ in range(10):  # warm-up
                health_status = client.get("/health").status_code
                client.get("/health/live")
                post("what does the yield STATEMENT do")
            # Interleaved, so that the load of other processes weighs on every kind alike.
            health, live, exact, repeated = [], [], [], []
            for i in range(repeat):
                health.append(timed(lambda: client.get("/health"))[0])
                live.append(timed(lambda: client.get("/health/live"))[0])
                exact.append(post(f"what does the {E2E_TOPICS[i % 3]} STATEMENT do")[0])
                ms, body = post(paraphrase)
                if body["cache"] == "semantic":
                    repeated.append(ms)
            chat_calls = fake.count("/api/chat")
        finally:
            config.override(base)
            key_row.revoke()
    Collection.objects.filter(name=name).delete()
    out = {
        "health_median_ms": statistics.median(health),
        "health_live_median_ms": statistics.median(live),
        "exact_hit_median_ms": statistics.median(exact),
        "semantic_hit_median_ms": statistics.median(repeated) if repeated else float("nan"),
        "semantic_new_phrasing_median_ms": statistics.median(semantic_new) if semantic_new else float("nan"),
        "miss_median_ms": statistics.median(miss) if miss else float("nan"),
    }
    h = out["health_median_ms"]
    note = "" if health_status == 200 else f"; it answered {health_status}: see its body"
    print(f"GET /health                          median {h:7.2f} ms   (n={len(health)}{note})")
    print(f"GET /health/live                     median {out['health_live_median_ms']:7.2f} ms")
    print(
        f"exact hit                            median {out['exact_hit_median_ms']:7.2f} ms   "
        f"{out['exact_hit_median_ms'] / h:.1f}x /health (n={len(exact)})"
    )
    print(
        f"semantic hit, phrasing seen before   median {out['semantic_hit_median_ms']:7.2f} ms   "
        f"{out['semantic_hit_median_ms'] / h:.1f}x /health (n={len(repeated)}; its vector is in the embedding cache)"
    )
    print(
        f"semantic hit, new phrasing           median {out['semantic_new_phrasing_median_ms']:7.2f} ms   "
        f"{out['semantic_new_phrasing_median_ms'] / h:.1f}x /health (n={len(semantic_new)}; pays one local embed)"
    )
    print(f"miss (chat answers in 200 ms)        median {out['miss_median_ms']:7.2f} ms   (n={len(miss)})")
    print(f"chat requests that reached the fake Ollama: {chat_calls} (one per miss)")
    return out


# 3. PARAPHRASE WORKLOAD


def workload_benchmark(pid: int, embedder: Any) -> dict[str, dict[str, float]]:
    from rag import answer_cache as cache
    from rag.models import Collection
    from rag.visibility import OPERATOR, resolve
    from resilience import config

    collection = Collection.objects.create(name=f"bench-cache-{pid}-workload")
    scope = cache.Scope.for_query(resolve(OPERATOR, [collection.name]), embedding_model=embedder.name, k=5)
    bases = [b for b, _, _ in WORKLOAD]
    base_vectors = embedder.embed(bases)
    for question, vector in zip(bases, base_vectors, strict=True):
        cache.store(scope, question, vector, f"answer to {question}", [], "extractive")
    paraphrases = [(p, b) for b, ps, _ in WORKLOAD for p in ps]
    near_misses = [n for _, _, ns in WORKLOAD for n in ns]
    p_vectors = embedder.embed([p for p, _ in paraphrases])
    n_vectors = embedder.embed(near_misses)
    answer_of = {f"answer to {b}": b for b in bases}
    base_matrix = np.asarray(base_vectors)

    def guarded(question: str, vector: np.ndarray) -> str | None:
        hit = cache.lookup_exact(scope, question) or cache.lookup_semantic(scope, question, vector)
        return answer_of[hit.answer] if hit else None

    def similarity_only(vector: np.ndarray, threshold: float) -> str | None:
        sims = base_matrix @ vector
        best = int(np.argmax(sims))
        return bases[best] if sims[best] >= threshold else None

    table: dict[str, dict[str, float]] = {}
    base_cfg = config.current()
    print(
        f"{len(bases)} cached questions, {len(paraphrases)} paraphrases that should hit, "
        f"{len(near_misses)} near misses that must not"
    )
    print(
        f"{'threshold':>9} | {'guard: para hit':>15} {'wrong':>5} {'near-miss hit':>13} | "
        f"{'similarity only: para hit':>25} {'wrong':>5} {'near-miss hit':>13}"
    )
    try:
        for threshold in THRESHOLDS:
            config.override(config.replace(base_cfg, cache={"similarity_threshold": threshold}))
            row: dict[str, float] = {}
            for mode in ("guard", "similarity"):
                right = wrong = false = 0
                for (question, base), vector in zip(paraphrases, p_vectors, strict=True):
                    got = guarded(question, vector) if mode == "guard" else similarity_only(vector, threshold)
                    right += got == base
                    wrong += got is not None and got != base
                for question, vector in zip(near_misses, n_vectors, strict=True):
                    got = guarded(question, vector) if mode == "guard" else similarity_only(vector, threshold)
                    false += got is not None
                row[f"{mode}_paraphrase_hit_rate"] = right / len(paraphrases)
                row[f"{mode}_paraphrase_wrong_hits"] = wrong
                row[f"{mode}_near_miss_false_hit_rate"] = false / len(near_misses)
            table[f"{threshold:.2f}"] = row
            print(
                f"{threshold:>9.2f} | {row['guard_paraphrase_hit_rate']:>15.0%} {row['guard_paraphrase_wrong_hits']:>5}"
                f" {row['guard_near_miss_false_hit_rate']:>13.0%} | {row['similarity_paraphrase_hit_rate']:>25.0%}"
                f" {row['similarity_paraphrase_wrong_hits']:>5} {row['similarity_near_miss_false_hit_rate']:>13.0%}"
            )
        config.override(config.replace(base_cfg, cache={"similarity_threshold": THRESHOLDS[0]}))
        leaks = [n for n, v in zip(near_misses, n_vectors, strict=True) if guarded(n, v) is not None]
        if leaks:
            print(f"near misses the guard lets through at {THRESHOLDS[0]:.2f}: {leaks}")
    finally:
        config.override(base_cfg)
    Collection.objects.filter(pk=collection.pk).delete()
    return table


# MAIN


def main(argv: list[str]) -> int:
    if "--http" in argv:
        from bench import _cache_http

        return _cache_http.main([a for a in argv if a != "--http"])
    parser = argparse.ArgumentParser(prog="python -m bench cache")
    parser.add_argument("--sizes", default="1000,10000,100000", help="Cached entries per lookup stage.")
    parser.add_argument("--queries", type=int, default=300, help="Lookups timed per stage.")
    parser.add_argument("--repeat", type=int, default=100, help="Requests per end-to-end median.")
    args = parser.parse_args(argv)
    sizes = sorted(int(s) for s in args.sizes.split(","))

    import logging

    import django

    django.setup()
    logging.getLogger("rag.answer_cache").setLevel(logging.ERROR)
    from django.db import connection
    from django.db.migrations.recorder import MigrationRecorder

    from bench import _tidy
    from rag import answer_cache as cache
    from rag.embeddings import LocalEmbedder
    from rag.models import CachedEmbedding, Collection, QueryLog
    from rag.sql import hnsw_index_name
    from resilience import config

    applied = MigrationRecorder(connection).applied_migrations()
    if not {("rag", "0003_querylog"), ("resilience", "0001_initial")} <= set(applied):
        print("The cache tables are missing: run `python manage.py migrate` first.")
        return 2

    pid = os.getpid()
    counters_before = _tidy.counters()
    last_embedding = CachedEmbedding.objects.order_by("-id").values_list("id", flat=True).first() or 0
    # Nothing real may be evicted while the benchmark fills the table.
    config.override(config.replace(config.current(), cache={"max_entries": 10_000_000, "enabled": True}))
    model = f"bench/perturbed-minilm-{pid}"
    embedder = LocalEmbedder()
    embedder.model()
    try:
        from pydoc_data.topics import topics

        names = sorted({key.replace("-", " ") for key in topics})
        base_questions = [t.format(name) for name in names for t in QUESTION_TEMPLATES]
        base_vectors = embedder.embed(base_questions)
        print(f"== lookup: {len(base_questions)} real questions, perturbed; {args.queries} lookups a stage")
        lookups, plan = lookup_benchmark(sizes, args.queries, base_questions, base_vectors, pid)
        print(f"plans at {sizes[-1]} entries, semantic (nearest in scope) then exact:")
        for line in plan:
            print("   ", line)
        Collection.objects.filter(name__startswith=f"bench-cache-{pid}-").delete()
        with connection.cursor() as cursor:
            cursor.execute(f"DROP INDEX IF EXISTS {hnsw_index_name('cachedanswer', model, 384)}")
        print("\n== end to end, Django test client")
        e2e = e2e_benchmark(pid, args.repeat)
        print("\n== paraphrase workload (demo corpus topics)")
        table = workload_benchmark(pid, embedder)
    finally:
        config.override(None)
        Collection.objects.filter(name__startswith=f"bench-cache-{pid}-").delete()
        QueryLog.objects.filter(collection__startswith=f"bench-cache-{pid}-").delete()
        CachedEmbedding.objects.filter(id__gt=last_embedding).delete()
        with connection.cursor() as cursor:
            cursor.execute(f"DROP INDEX IF EXISTS {hnsw_index_name('cachedanswer', model, 384)}")
            _tidy.take_back_counters(cursor, counters_before)
            cursor.execute(f"VACUUM ANALYZE {cache.ANSWERS}")

    largest = f"{sizes[-1] // 1000}k"
    summary: dict[str, Any] = {}
    for label, row in lookups.items():
        if "exact_p50_ms" in row:
            summary[f"exact_lookup_p50_ms_{label}"] = round(row["exact_p50_ms"], 3)
            summary[f"exact_lookup_p95_ms_{label}"] = round(row["exact_p95_ms"], 3)
        summary[f"semantic_lookup_p50_ms_{label}"] = round(row["lookup_p50_ms"], 3)
        summary[f"semantic_lookup_p95_ms_{label}"] = round(row["lookup_p95_ms"], 3)
        if "numpy_p95_ms" in row:
            summary[f"numpy_scan_p50_ms_{label}"] = round(row["numpy_p50_ms"], 3)
            summary[f"numpy_scan_p95_ms_{label}"] = round(row["numpy_p95_ms"], 3)
            summary[f"recall_at_1_{label}"] = round(row["recall_at_1"], 3)
            summary[f"hit_decision_agreement_{label}"] = round(row["decision_agreement"], 3)
            summary[f"similarity_gap_p95_{label}"] = round(row["similarity_gap_p95"], 5)
    summary["semantic_lookup_goal_p95_le_5ms_met"] = lookups[largest]["lookup_p95_ms"] <= 5.0
    summary.update({f"e2e_{k}": round(v, 2) for k, v in e2e.items()})
    summary["exact_hit_over_health_ratio"] = round(e2e["exact_hit_median_ms"] / e2e["health_median_ms"], 2)
    summary["semantic_hit_over_health_ratio"] = round(e2e["semantic_hit_median_ms"] / e2e["health_median_ms"], 2)
    for threshold, row in table.items():
        t = threshold.replace(".", "_")
        summary[f"paraphrase_hit_rate_at_{t}"] = round(row["guard_paraphrase_hit_rate"], 3)
        summary[f"near_miss_false_hit_rate_at_{t}"] = round(row["guard_near_miss_false_hit_rate"], 3)
        summary[f"similarity_only_near_miss_false_hit_rate_at_{t}"] = round(
            row["similarity_near_miss_false_hit_rate"], 3
        )
    print(json.dumps(summary))
    return 0
