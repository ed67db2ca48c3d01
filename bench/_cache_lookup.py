"""``python -m bench cache``, part 1: semantic lookup latency by cache size, beside a numpy scan.

The entries are loaded by binary COPY and indexed afterwards; the plans of the scoped and exact
lookups are read with EXPLAIN ANALYZE.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from bench._stats import pct, timed, unit


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
