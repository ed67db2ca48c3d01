"""Ingestion of the demo corpus as it was and as it is now, side by side, on the local model.

Two ways, in one run: ``before`` (every chunk and sentence embedded in the order found, 64 at a
time, as ingestion did) and ``arranged`` (the default: each distinct text once, in batches cut
from the texts sorted by their length in tokens, rag.ingestion). Each ingests the demo corpus into
a scratch collection (deleted afterwards) with the embedding cache off, so the model does all the
work. Beside them, the model's raw ``embed()`` rate on exactly the distinct texts ingestion embeds
(each chunk, and each of its sentences, which the reranker and the extractive answer use), in one
call. Goal: ``arranged`` ingests at least 2x the chunks a second of ``before``.

The ways alternate (``--rounds``; the order flips each round) and each one's best round counts,
since the machine is shared.
"""

from __future__ import annotations

import argparse
import json
import os
import time

WAYS = (("before", False), ("arranged", True))  # (name, texts arranged before batching)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench ingest")
    parser.add_argument("--limit", type=int, default=0, help="Only the first N demo topics (0: all).")
    parser.add_argument("--rounds", type=int, default=1, help="Rounds of each way (best counts).")
    args = parser.parse_args(argv)

    import django

    django.setup()
    from django.conf import settings

    from rag.chunking import answer_sentences, chunk_sections
    from rag.embeddings import LocalEmbedder
    from rag.ingestion import embedding_input, ingest_items
    from rag.models import Collection
    from rag.readers import parse_bytes
    from rag.sources import demo_items

    items = list(demo_items())
    if args.limit:
        items = items[: args.limit]
    chunks: list[str] = []
    sentences: list[str] = []
    for item in items:
        parsed = parse_bytes(item.data, item.media_type, fallback_title=item.fallback_title)
        size, overlap = settings.RAGSITE_CHUNK_SIZE, settings.RAGSITE_CHUNK_OVERLAP
        sections = chunk_sections(parsed.sections, title=parsed.title, size=size, overlap=overlap)
        chunks.extend(embedding_input(heading, chunk) for heading, chunk in sections)
        sentences.extend(sentence for _, chunk in sections for sentence in answer_sentences(chunk))
    distinct = list(dict.fromkeys(chunks + sentences))
    print(
        f"corpus: demo (pydoc topics), {len(items)} documents, {len(chunks)} chunks, {len(sentences)} sentences "
        f"({len(distinct)} distinct texts)"
    )

    embedder = LocalEmbedder()
    started = time.perf_counter()
    embedder.embed(["warm-up"])
    load_s = time.perf_counter() - started
    embedder.embed(distinct[:64])  # first batches pay one-off allocation costs
    raw: list[float] = []
    ingest: dict[str, list[tuple[float, int]]] = {way: [] for way, _ in WAYS}
    for n in range(args.rounds):
        started = time.perf_counter()
        embedder.embed(distinct)
        raw.append(time.perf_counter() - started)
        for way, arranged in WAYS if n % 2 == 0 else reversed(WAYS):
            name = f"bench-ingest-{way}-{os.getpid()}-{n}"
            try:
                report = ingest_items(
                    iter(items),
                    collection_name=name,
                    embedder=embedder,
                    use_embedding_cache=False,
                    arrange_batches=arranged,
                )
            finally:
                Collection.objects.filter(name=name).delete()
            if report.failures:
                print("failures:", [(f.source, f.reason) for f in report.failures])
                return 1
            ingest[way].append((report.seconds, report.chunks))
            print(
                f"round {n + 1} {way:8s}: {report.chunks / report.seconds:5.1f} chunks/s "
                f"({report.seconds:.1f} s)  load average {os.getloadavg()[0]:.1f}",
                flush=True,
            )

    best = {way: min(ingest[way]) for way, _ in WAYS}
    rate = {way: best[way][1] / best[way][0] for way, _ in WAYS}
    raw_rate = len(distinct) / min(raw)
    ratio = rate["arranged"] / rate["before"]
    print(f"model load:          {load_s:.1f} s")
    print(f"raw embed():         {raw_rate:.1f} texts/s ({len(distinct)} texts in {min(raw):.1f} s)")
    for way, _ in WAYS:
        print(f"ingest {way + ':':13s} {rate[way]:.1f} chunks/s ({best[way][0]:.1f} s)")
    print(f"goal: arranged ingests >= 2x the chunks a second of before: {ratio:.2f}x")
    print(
        json.dumps(
            {
                "corpus": "demo",
                "documents": len(items),
                "chunks": best["arranged"][1],
                "sentences": len(sentences),
                "distinct_texts": len(distinct),
                "model_load_s": round(load_s, 2),
                "raw_texts_per_s": round(raw_rate, 1),
                "before_chunks_per_s": round(rate["before"], 1),
                "arranged_chunks_per_s": round(rate["arranged"], 1),
                "before_s": round(best["before"][0], 1),
                "arranged_s": round(best["arranged"][0], 1),
                "arranged_over_before_ratio": round(ratio, 2),
                "rounds": args.rounds,
            }
        )
    )
    return 0
