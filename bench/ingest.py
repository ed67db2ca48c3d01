"""Ingestion throughput vs the embedding model's raw encode() rate on the same chunks.

Ingests the demo corpus into a scratch collection (deleted afterwards) and, in the same run,
times ``encode()`` alone on exactly the texts ingestion embeds. Goal: ingestion reaches at least
80 % of the raw rate, i.e. reading, chunking and writing cost little next to the model.
"""

from __future__ import annotations

import argparse
import json
import time


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench ingest")
    parser.add_argument("--limit", type=int, default=0, help="Only the first N demo topics (0: all).")
    args = parser.parse_args(argv)

    import django

    django.setup()
    from django.conf import settings

    from rag.chunking import chunk_sections
    from rag.embeddings import LocalEmbedder
    from rag.ingestion import demo_items, embedding_input, ingest_items
    from rag.models import Collection
    from rag.readers import parse_bytes

    items = list(demo_items())
    if args.limit:
        items = items[: args.limit]
    texts = []
    for item in items:
        parsed = parse_bytes(item.data, item.media_type, fallback_title=item.fallback_title)
        chunks = chunk_sections(
            parsed.sections,
            title=parsed.title,
            size=settings.RAGSITE_CHUNK_SIZE,
            overlap=settings.RAGSITE_CHUNK_OVERLAP,
        )
        texts.extend(embedding_input(heading, chunk) for heading, chunk in chunks)

    embedder = LocalEmbedder()
    t = time.perf_counter()
    embedder.model()
    load_s = time.perf_counter() - t
    embedder.embed(texts[:64])  # warm-up: first batches pay one-off allocation costs

    def raw_encode() -> float:
        t = time.perf_counter()
        embedder.embed(texts)
        return time.perf_counter() - t

    # Raw encode runs before and after ingestion and the two are averaged, so a change in the
    # machine's load during the run weighs on both sides alike.
    raw_before = raw_encode()
    name = f"bench-ingest-{int(time.time())}"
    # The embedding cache would answer for chunks embedded before: the model must do the work.
    try:
        report = ingest_items(iter(items), collection_name=name, embedder=embedder, use_embedding_cache=False)
    finally:
        Collection.objects.filter(name=name).delete()
    raw_s = (raw_before + raw_encode()) / 2
    raw_rate = len(texts) / raw_s
    if report.failures:
        print("failures:", [(f.source, f.reason) for f in report.failures])
        return 1
    ingest_rate = report.chunks / report.seconds
    ratio = ingest_rate / raw_rate
    print(f"documents:        {len(items)}  chunks: {report.chunks} (raw encode set: {len(texts)})")
    print(f"model load:       {load_s:.1f} s")
    print(f"raw encode():     {raw_rate:.1f} chunks/s  ({raw_s:.1f} s)")
    print(f"ingest pipeline:  {ingest_rate:.1f} chunks/s  ({report.seconds:.1f} s)")
    print(f"ratio:            {ratio:.2f}  (goal >= 0.80)")
    print(
        json.dumps(
            {
                "documents": len(items),
                "chunks": report.chunks,
                "model_load_s": round(load_s, 2),
                "raw_encode_chunks_per_s": round(raw_rate, 2),
                "ingest_chunks_per_s": round(ingest_rate, 2),
                "ratio": round(ratio, 3),
            }
        )
    )
    return 0
