"""Semantic cache: lookup latency, end-to-end hit latency, and hit/false-hit rates by threshold.

``python -m bench cache [--sizes 1000,10000,100000] [--queries 300] [--repeat 40]``
``python -m bench cache --http [--repeat 300]``: exact and semantic hits over HTTP through gunicorn
against ``GET /health/live`` of the same server (bench/_cache_http.py).

1. Lookup: ``rag.answer_cache.lookup_semantic`` (the project's lookup: scope in the WHERE, HNSW,
   the near-miss guard, the hit bookkeeping) with 1k, 10k and 100k cached entries of 384
   dimensions, perturbations of real question embeddings, all in one scope; beside it, in the
   same run, a numpy linear scan over the same vectors (what an in-process cache pays). At the
   largest size a 1k scope of another collection shares the table, and the plan of the scoped
   query is printed. Goal: p95 <= 5 ms at 100k (bench/_cache_lookup.py).
2. End to end: median ``POST /api/query`` through Django's test client for an exact hit, a
   semantic hit and a miss (the fake Ollama answers chat in 200 ms), next to ``GET /health`` in
   the same run. Goal: a hit costs at most 3x /health (bench/_cache_e2e.py).
3. A paraphrase workload from the demo corpus's topics: base questions, paraphrases that should
   hit, near misses that must not, at thresholds 0.90/0.92/0.95, with the near-miss guard (what
   the cache does) and by similarity alone (bench/_cache_workload.py).

It runs on the configured database (the embedded one in var/pgdata by default) in scratch
collections and a scratch embedding-model name; it deletes what it created and sets the shared
counters back.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from bench._cache_e2e import e2e_benchmark
from bench._cache_lookup import lookup_benchmark
from bench._cache_workload import workload_benchmark

QUESTION_TEMPLATES = [
    "What does the {} statement do?",
    "How does {} work in Python?",
    "What is {} used for?",
    "Explain {} in Python",
    "When should I use {}?",
    "What are the rules for {}?",
]


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
