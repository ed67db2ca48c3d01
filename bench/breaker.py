"""/api/query latency while Ollama black-holes connections: first calls vs an open breaker.

The fake Ollama holds its port with a full accept queue, so connects hang until the client's
connect timeout (10 s by default, as in production). Embeddings and generation both point at it.
The first queries wait for the timeout until the breakers open; after that every query is
answered at once, degraded (full-text retrieval, extractive answer), without touching the network.

It runs on the database as it is (the one ``make run`` leaves), throttles included: the queries
carry an API key issued for the run (revoked at the end), as a client of the service would. The
corpus is the ``default`` collection; the demo corpus is ingested first when it is empty.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import threading
import time

from bench._stats import nearest_rank


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench breaker")
    parser.add_argument("--open-calls", type=int, default=300, help="queries timed once the breakers are open")
    parser.add_argument("--connect-timeout", type=float, default=10.0, help="seconds (production default 10)")
    args = parser.parse_args(argv)

    import django

    django.setup()
    from django.core.management import call_command
    from django.test import Client

    from rag.models import ApiKey, Chunk, Collection
    from resilience import config
    from resilience.breaker import clear_registry, get_breaker
    from resilience.client import reset_client
    from resilience.fake_ollama import FakeOllama

    call_command("ingest", "--demo", "--if-empty", "--no-progress", stdout=io.StringIO())
    corpus = Collection.objects.get(name="default")
    chunks = Chunk.objects.filter(collection=corpus).count()
    documents = corpus.documents.count()
    print(f"corpus: collection 'default', {documents} documents, {chunks} chunks")
    key_row, key = ApiKey.issue(name="bench breaker")
    client = Client(HTTP_AUTHORIZATION=f"Bearer {key}")

    def query(n: int) -> tuple[float, dict]:
        body = {"question": f"What does the yield statement do? ({n})", "use_cache": False}
        t = time.perf_counter()
        response = client.post("/api/query", json.dumps(body), content_type="application/json")
        elapsed = (time.perf_counter() - t) * 1000
        if response.status_code != 200:
            raise SystemExit(f"unexpected status {response.status_code}: {response.content[:200]!r}")
        return elapsed, response.json()

    with FakeOllama() as fake:
        fake.set_mode("blackhole")
        base = config.current()
        config.override(
            config.replace(
                base,
                provider={
                    "ollama_base_url": fake.url,
                    "embedding_backend": "ollama",
                    "embedding_model": "all-minilm",
                    "generation_backend": "ollama",
                },
                pool={"connect_timeout": args.connect_timeout},
            )
        )
        clear_registry()
        reset_client()
        try:
            # The first wave: as many concurrent queries as it takes to open the breakers.
            threshold = config.current().breaker.failure_threshold
            first: list[float] = []
            lock = threading.Lock()

            def first_call(n: int) -> None:
                from django.db import connection

                elapsed, _ = query(n)
                with lock:
                    first.append(elapsed)
                connection.close()

            threads = [threading.Thread(target=first_call, args=(n,)) for n in range(threshold)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            states = {name: get_breaker(name).state for name in ("embed", "chat")}

            requests_before = fake.total_requests
            query(-1)  # warm the open path (first use of the extractive code, caches)
            open_ms = []
            reasons = set()
            for n in range(args.open_calls):
                elapsed, body = query(1000 + n)
                open_ms.append(elapsed)
                reasons.add(body["degraded_reason"])
            network_requests = fake.total_requests - requests_before
        finally:
            config.override(None)
            clear_registry()
            reset_client()
            key_row.revoke()

    timeout_first = min(first)
    open_median = statistics.median(open_ms)
    open_p99 = nearest_rank(open_ms, 0.99)
    ratio = timeout_first / open_p99
    print(f"breakers after the first {threshold} concurrent queries: {states}")
    print(f"first queries (waited for the connect timeout): min {min(first):.0f} ms, max {max(first):.0f} ms")
    print(f"open breaker, {len(open_ms)} queries: median {open_median:.2f} ms, p99 {open_p99:.2f} ms")
    print(f"degraded_reason: {sorted(reasons)}; requests reaching Ollama meanwhile: {network_requests}")
    print(f"ratio first/open-p99: {ratio:.0f}x (goal >= 1000x, open p99 < 15 ms)")
    print(
        json.dumps(
            {
                "corpus": f"default: {documents} documents, {chunks} chunks",
                "timeout_first_ms": round(timeout_first),
                "timeout_first_max_ms": round(max(first)),
                "open_median_ms": round(open_median, 2),
                "open_p99_ms": round(open_p99, 2),
                "open_calls": len(open_ms),
                "network_requests_while_open": network_requests,
                "ratio": round(ratio),
            }
        )
    )
    return 0
