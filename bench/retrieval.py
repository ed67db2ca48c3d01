"""Retrieval cost as the corpus grows: hybrid retrieval at 10k, 100k and 1M chunks.

``python -m bench retrieval [--sizes 10000,100000,1000000] [--ef-search 40,100,200,400,1000] [--m 32]``

The corpus is synthetic: the demo corpus's chunks (the ``default`` collection, ingested first when
it is empty) repeated until there are N of them, each copy keeping its chunk's text and full-text
vector, its embedding moved towards a neighbouring chunk's and perturbed (bench/_synthetic.py;
in the demo corpus itself a chunk's nearest other chunk has a median similarity of 0.80). Word
frequencies stay those of the demo corpus: a word in a tenth of its chunks is in a tenth of the
synthetic ones.

Per size, the new rows are loaded with COPY (into a temporary table, then one INSERT ... SELECT
that takes each copy's text from its original) while the collection has no vector index, and
the index is then built by the project's own ``rag.sql.create_hnsw_index`` with the server's
settings (ragsite/pgtuning.py for the embedded server), timed. Then, for the tuning half of the
golden questions:

- recall@10 of the vector part (``rag.retrieval.vector_search``, as hybrid retrieval calls it)
  against an exact scan, for each ``hnsw.ef_search`` of ``--ef-search``; the bench chooses the
  smallest that reaches 0.95;
- p50/p95 of ``rag.retrieval.hybrid_search`` (the project's, not a copy: one SQL statement, its
  full-text ranking over a bounded pool, rag.hybrid) with the ef_search it ships and with the
  chosen one, and of its vector and full-text parts alone, and how many retrievals its timeout
  cancelled (those answers are ranked by vectors alone);
- the exact scan's latency beside the index's, the index size, the build time and rate next to
  inserting into a live index row by row, and the database's memory (PSS of its processes).

Everything lives in a scratch collection under a scratch embedding-model name (so the synthetic
rows never enter the live index of the default model); it is deleted, its index dropped and the
table vacuumed at the end, even after an error or Ctrl-C. Nothing in the settings changes.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench._stats import load_average, pct, timed
from bench._synthetic import SyntheticCorpus

GOALS = {100_000: (20.0, None), 1_000_000: (50.0, 0.95)}  # size: (hybrid p95 ms, recall@10)
RECALL_GOAL = 0.95
LIVE_INSERT_ROWS = 1000


def golden_questions() -> list[str]:
    path = Path(__file__).resolve().parent.parent / "rag" / "golden" / "demo-tune.jsonl"
    return [json.loads(line)["question"] for line in path.read_text().splitlines() if line.strip()]


def database_memory_mb() -> float | None:
    """PSS of the server's processes (shared buffers counted once), or None for a remote server."""
    import psutil
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        backend = cursor.fetchone()[0]
    try:
        postmaster = psutil.Process(psutil.Process(backend).ppid())
        processes = [postmaster, *postmaster.children(recursive=True)]
        return sum(p.memory_full_info().pss for p in processes) / 2**20
    except (psutil.Error, OSError):
        return None


def relation_mb(name: str) -> float:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_relation_size(%s::regclass)", [name])
        return cursor.fetchone()[0] / 2**20


def exact_scan_ms(collection: Any, model: str, queries: np.ndarray) -> list[float]:
    """The same nearest-neighbour query without the HNSW index (what every query would pay)."""
    from django.db import connection, transaction

    from rag.sql import vector_literal

    out = []
    for vector in queries:
        literal = vector_literal(vector)
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SET LOCAL enable_indexscan = off")
            ms, _ = timed(
                cursor.execute,
                "SELECT id FROM rag_chunk WHERE embedding_model = %s AND collection_id = %s "
                "ORDER BY (embedding::vector(384)) <=> %s::vector(384) LIMIT 20",
                [model, collection.pk, literal],
            )
        out.append(ms)
    return out


def vector_plan(collection: Any, model: str, vector: np.ndarray) -> str:
    from django.db import connection, transaction

    from rag.sql import vector_literal

    literal = vector_literal(vector)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            "EXPLAIN SELECT id FROM rag_chunk WHERE embedding_model = %s AND collection_id = %s "
            "ORDER BY (embedding::vector(384)) <=> %s::vector(384) LIMIT 20",
            [model, collection.pk, literal],
        )
        plan = "\n".join(row[0] for row in cursor.fetchall())
    return "hnsw" if "hnsw" in plan else "exact"


def measure(
    corpus: SyntheticCorpus, questions: list[str], queries: np.ndarray, efs: list[int], repeat: int, budget_s: float
) -> dict:
    from rag import retrieval
    from rag import vector_plan as plans
    from rag.visibility import OPERATOR, resolve

    # The search's plan follows the collection's size (rag.vector_plan): estimate it afresh now
    # that the corpus has grown. At a size an exact scan covers, every ef_search finds all.
    plans.forget_estimates()
    scope = resolve(OPERATOR, [corpus.collection.name])
    ids = list(scope.ids)
    shipped = plans.EF_SEARCH
    exact = corpus.exact_top(queries)
    for question, vector in zip(questions[:20], queries[:20], strict=True):  # warm-up
        retrieval.hybrid_search(scope, question, 5, model_name=corpus.model, query_vector=vector)
    sweep: dict[int, dict[str, float]] = {}
    try:
        for ef in efs:
            plans.EF_SEARCH = ef
            ms, recalls, gaps = [], [], []
            for vector, (right, kth) in zip(queries, exact, strict=True):
                t, hits = timed(retrieval.vector_search, ids, corpus.model, vector, 20)
                ms.append(t)
                recalls.append(len({chunk_id for chunk_id, _ in hits[:10]} & right) / 10)
                # How much less similar the 10th chunk found is than the true 10th (0: none).
                gaps.append(max(0.0, kth - hits[9][1]) if len(hits) >= 10 else 1.0)
            sweep[ef] = {
                "recall": float(np.mean(recalls)),
                "p50": pct(ms, 50),
                "p95": pct(ms, 95),
                "gap": pct(gaps, 95),
            }
        good = [ef for ef in efs if sweep[ef]["recall"] >= RECALL_GOAL]
        chosen = min(good) if good else max(efs)
        hybrid: dict[int, list[float]] = {shipped: [], chosen: []}
        text_ms: list[float] = []
        # A full-text search past RAGSITE_RETRIEVAL_TIMEOUT_MS is cancelled (and logged): the
        # answer is then ranked by vectors alone. Counted here instead of printed.
        cancelled = CountingHandler()
        logger = logging.getLogger("rag.retrieval")
        logger.addHandler(cancelled)
        logger.propagate = False
        # Interleaved, so other processes' load weighs on both alike; past the time budget (a
        # large corpus's full-text part can take seconds) only the first 20 questions are timed.
        deadline = time.monotonic() + budget_s
        for _ in range(repeat):
            for n, (question, vector) in enumerate(zip(questions, queries, strict=True)):
                if n >= 20 and time.monotonic() > deadline:
                    break
                for ef in hybrid:
                    plans.EF_SEARCH = ef
                    hybrid[ef].append(
                        timed(
                            retrieval.hybrid_search,
                            scope,
                            question,
                            5,
                            model_name=corpus.model,
                            query_vector=vector,
                        )[0]
                    )
                text_ms.append(timed(retrieval.text_search, ids, question, 20)[0])
    finally:
        plans.EF_SEARCH = shipped
        logging.getLogger("rag.retrieval").propagate = True
    searches = len(text_ms) + sum(len(times) for times in hybrid.values())
    return {
        "sweep": sweep,
        "chosen": chosen,
        "shipped": shipped,
        "hybrid": hybrid,
        "text": text_ms,
        "text_cancelled_share": cancelled.count / searches if searches else 0.0,
    }


class CountingHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += "cancelled" in record.getMessage()


def live_insert_rows_per_s(corpus: SyntheticCorpus) -> float:
    """Rows a second inserted into the collection while its index exists (then deleted again)."""
    from django.db import connection

    before = len(corpus)
    _, insert_s = corpus.grow(before + LIVE_INSERT_ROWS)
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM rag_chunk WHERE id = ANY(%s)", [corpus.ids[before:].tolist()])
    corpus.ids, corpus.vectors = corpus.ids[:before], corpus.vectors[:before]
    return LIVE_INSERT_ROWS / insert_s


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench retrieval")
    parser.add_argument("--sizes", default="10000,100000,1000000", help="Corpus sizes in chunks, comma-separated.")
    parser.add_argument(
        "--ef-search",
        default="40,100,200,400,1000",
        help="hnsw.ef_search values to try (1000 is the most pgvector allows).",
    )
    parser.add_argument("--m", type=int, default=0, help="HNSW m (0: what the chunks' index ships with).")
    parser.add_argument("--ef-construction", type=int, default=0, help="HNSW ef_construction (0: as shipped).")
    parser.add_argument("--repeat", type=int, default=2, help="Passes over the questions for the hybrid timings.")
    parser.add_argument("--queries", type=int, default=0, help="Only the first N golden questions (0: all).")
    parser.add_argument(
        "--budget", type=float, default=180.0, help="Seconds per size for the hybrid timings (at least 20 questions)."
    )
    args = parser.parse_args(argv)
    sizes = sorted(int(s) for s in args.sizes.split(","))
    efs = sorted(int(s) for s in args.ef_search.split(","))
    started = time.monotonic()
    print(f"load average at start: {load_average()}  ({os.cpu_count()} cores)")

    import io

    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    from rag import sql
    from rag.embeddings import LocalEmbedder
    from rag.models import CHUNK_HNSW_EF_CONSTRUCTION, CHUNK_HNSW_M, DEFAULT_MODEL, Chunk, Collection

    args.m = args.m or CHUNK_HNSW_M
    args.ef_construction = args.ef_construction or CHUNK_HNSW_EF_CONSTRUCTION

    call_command("ingest", "--demo", "--if-empty", "--no-progress", stdout=io.StringIO())
    source = Collection.objects.get(name="default")
    n_base = Chunk.objects.filter(collection=source, embedding_model=DEFAULT_MODEL).count()
    if Chunk.objects.filter(collection=source).exclude(embedding_model=DEFAULT_MODEL).exists() or not n_base:
        raise SystemExit(f"bench retrieval copies the default collection's {DEFAULT_MODEL} vectors: it has others")
    questions = golden_questions()[: args.queries or None]
    queries = LocalEmbedder().embed(questions)
    with connection.cursor() as cursor:
        cursor.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
        pgvector = cursor.fetchone()[0]
        shown = {}
        for name in ("shared_buffers", "maintenance_work_mem", "max_parallel_maintenance_workers", "work_mem"):
            cursor.execute(f"SHOW {name}")
            shown[name] = cursor.fetchone()[0]
    print(
        f"corpus: synthetic, copies of collection 'default' ({source.documents.count()} documents, {n_base} chunks), "
        f"vectors moved towards a neighbour and perturbed, texts reused; {len(questions)} golden questions"
    )
    print(f"server: pgvector {pgvector}; {', '.join(f'{k} {v}' for k, v in shown.items())}")
    shipping = f"{CHUNK_HNSW_M} / {CHUNK_HNSW_EF_CONSTRUCTION}"
    print(f"index: HNSW m {args.m}, ef_construction {args.ef_construction} (shipped: {shipping})")
    halfvec = tuple(int(p) for p in pgvector.split(".")[:2]) >= (0, 7)
    print(
        "halfvec: "
        + (
            "available, but the project's index and queries cast to vector(384): measured as float4"
            if halfvec
            else f"not in pgvector {pgvector} (0.7+): the index stores float4, twice halfvec's size"
        )
    )

    pid = os.getpid()
    model = f"bench/retrieval-{pid}"
    index = sql.hnsw_index_name("chunk_emb", model, 384)
    collection = Collection.objects.create(name=f"bench-retrieval-{pid}")
    corpus = SyntheticCorpus(source, collection, model)
    results: dict[str, Any] = {}
    header = (
        f"{'chunks':>8} {'load s':>7} {'build s':>8} {'rows/s build':>12} {'live':>6} {'index MB':>9} "
        f"{'ef':>4} {'recall@10':>9} {'hybrid p50':>10} {'p95':>6} {'(ef 200) p95':>12} {'vector p95':>10} "
        f"{'text p95':>8} {'exact p50':>9} {'db MB':>7} {'load avg':>15}"
    )
    rows: list[str] = []
    try:
        for size in sizes:
            with connection.cursor() as cursor:
                cursor.execute(f"DROP INDEX IF EXISTS {index}")
            copy_s, insert_s = corpus.grow(size)
            with connection.cursor() as cursor:
                cursor.execute("ANALYZE rag_chunk")
            build_ms, _ = timed(
                sql.create_hnsw_index,
                table="rag_chunk",
                prefix="chunk_emb",
                model_name=model,
                dimensions=384,
                m=args.m,
                ef_construction=args.ef_construction,
            )
            with connection.cursor() as cursor:
                cursor.execute("ANALYZE rag_chunk")
            live = live_insert_rows_per_s(corpus)
            plan = vector_plan(collection, model, queries[0])
            m = measure(corpus, questions, queries, efs, args.repeat, args.budget)
            exact_ms = exact_scan_ms(collection, model, queries[:5])
            chosen, shipped = m["chosen"], m["shipped"]
            row = {
                "load_s": copy_s + insert_s,
                "build_s": build_ms / 1000,
                "build_rows_per_s": size / (build_ms / 1000),
                "live_insert_rows_per_s": live,
                "index_mb": relation_mb(index),
                "plan": plan,
                "chosen_ef_search": chosen,
                "recall_at_10": m["sweep"][chosen]["recall"],
                "similarity_gap_p95": m["sweep"][chosen]["gap"],
                "recall_at_10_by_ef": {ef: round(s["recall"], 4) for ef, s in m["sweep"].items()},
                "vector_p95_ms_by_ef": {ef: round(s["p95"], 2) for ef, s in m["sweep"].items()},
                "hybrid_timed": len(m["hybrid"][chosen]),
                "hybrid_p50_ms": pct(m["hybrid"][chosen], 50),
                "hybrid_p95_ms": pct(m["hybrid"][chosen], 95),
                "hybrid_shipped_p50_ms": pct(m["hybrid"][shipped], 50),
                "hybrid_shipped_p95_ms": pct(m["hybrid"][shipped], 95),
                "vector_p50_ms": m["sweep"][chosen]["p50"],
                "vector_p95_ms": m["sweep"][chosen]["p95"],
                "text_p50_ms": pct(m["text"], 50),
                "text_p95_ms": pct(m["text"], 95),
                "text_cancelled_share": m["text_cancelled_share"],
                "exact_scan_p50_ms": pct(exact_ms, 50),
                "database_memory_mb": database_memory_mb(),
                "load_average": load_average(),
            }
            results[str(size)] = row
            for ef, s in m["sweep"].items():
                print(
                    f"  {size} chunks, ef_search {ef:>4}: recall@10 {s['recall']:.3f} (10th found less similar "
                    f"than the true 10th by {s['gap']:.4f} at p95), vector p50 {s['p50']:.2f} ms, p95 {s['p95']:.2f} ms"
                )
            rows.append(
                f"{size:>8} {row['load_s']:>7.1f} {row['build_s']:>8.1f} {row['build_rows_per_s']:>12.0f} "
                f"{live:>6.0f} {row['index_mb']:>9.0f} {chosen:>4} {row['recall_at_10']:>9.3f} "
                f"{row['hybrid_p50_ms']:>8.2f}ms {row['hybrid_p95_ms']:>4.1f}ms "
                f"{row['hybrid_shipped_p95_ms']:>10.1f}ms "
                f"{row['vector_p95_ms']:>8.2f}ms {row['text_p95_ms']:>6.1f}ms {row['exact_scan_p50_ms']:>7.0f}ms "
                f"{row['database_memory_mb'] or float('nan'):>7.0f} {row['load_average']:>15}"
            )
            print(
                f"  {size} chunks: plan of the vector query: {plan}; shipped ef_search {shipped}; "
                f"hybrid timed {row['hybrid_timed']} times at each ef_search; full-text searches cancelled by "
                f"the retrieval timeout: {row['text_cancelled_share']:.0%}"
            )
            print(header)
            print("\n".join(rows), flush=True)
    finally:
        t = time.perf_counter()
        connection.close()  # an interrupted statement may have left it unusable; the next use reconnects
        with connection.cursor() as cursor:
            cursor.execute(f"DROP INDEX IF EXISTS {index}")  # first: vacuuming an HNSW index is slow
            cursor.execute("DELETE FROM rag_chunk WHERE collection_id = %s", [collection.pk])
            cursor.execute("DELETE FROM rag_document WHERE collection_id = %s", [collection.pk])
            cursor.execute("DROP TABLE IF EXISTS bench_retrieval_stage")
        collection.delete()
        with connection.cursor() as cursor:
            cursor.execute("VACUUM ANALYZE rag_chunk")
            cursor.execute("VACUUM ANALYZE rag_document")
        print(f"clean-up (rows deleted, index dropped, tables vacuumed): {time.perf_counter() - t:.0f} s")

    minutes = (time.monotonic() - started) / 60
    print(f"run time {minutes:.1f} min; load average at the end: {load_average()}")
    summary: dict[str, Any] = {
        "corpus": f"synthetic copies of 'default' ({n_base} chunks)",
        "pgvector": pgvector,
        "hnsw_m": args.m,
        "hnsw_ef_construction": args.ef_construction,
    }
    for size, row in results.items():
        label = f"{int(size) // 1000}k" if int(size) < 1_000_000 else f"{int(size) // 1_000_000}m"
        for key in (
            "hybrid_p50_ms", "hybrid_p95_ms", "hybrid_shipped_p95_ms", "vector_p95_ms", "text_p95_ms",
            "exact_scan_p50_ms", "recall_at_10", "chosen_ef_search", "index_mb", "build_s", "build_rows_per_s",
            "live_insert_rows_per_s", "load_s", "database_memory_mb", "hybrid_timed", "similarity_gap_p95",
            "text_cancelled_share",
        ):  # fmt: skip
            value = row[key]
            summary[f"{key}_{label}"] = round(value, 3) if isinstance(value, float) else value
        goal = GOALS.get(int(size))
        if goal:
            p95_goal, recall_goal = goal
            met = row["hybrid_p95_ms"] <= p95_goal and (recall_goal is None or row["recall_at_10"] >= recall_goal)
            summary[f"goal_met_{label}"] = met
    summary["run_minutes"] = round(minutes, 1)
    summary["load_average_end"] = load_average()
    print(json.dumps(summary))
    return 0
