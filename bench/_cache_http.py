"""``python -m bench cache --http``: cache hits over HTTP through gunicorn, against ``GET /health/live``.

``make serve``'s server (gunicorn, ragsite/gunicorn_conf.py, 2 workers x 8 threads by default) on
a free loopback port, on the database ``make run`` leaves (the demo corpus in ``default``), with
the settings it has: throttles on at their defaults, so the questions carry API keys (one a kind,
each well inside the per-key budget), as a client's would. One client, keep-alive, interleaving:

- ``GET /health/live`` (no I/O: what the server costs without the database);
- an exact hit: a question asked before, in other case and spacing;
- a semantic hit whose question was asked (and so embedded) before: no model call.

Goals (issue 15): an exact hit <= 2x /health/live, a semantic hit <= 3x. It deletes what it added
(cached answers, embeddings, query log rows, keys, throttle rows) and sets the counters back.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import requests

from bench._stats import load_average
from ragsite.liveserver import serve

ROOT = Path(__file__).resolve().parent.parent
BASE_QUESTION = "How do I raise an exception?"
EXACT_QUESTION = "how do i RAISE an   exception"
PARAPHRASE = "How can I raise an exception?"  # similarity 0.994 with the local model


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench cache --http")
    parser.add_argument("--repeat", type=int, default=300, help="Requests of each kind.")
    parser.add_argument("--workers", type=int, default=int(os.environ.get("RAGSITE_WORKERS", "2")))
    parser.add_argument("--threads", type=int, default=int(os.environ.get("RAGSITE_THREADS", "8")))
    args = parser.parse_args(argv)
    print(f"load average at start: {load_average()}")

    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    from bench import _tidy
    from rag.models import ApiKey, Chunk, Collection
    from resilience import config

    if os.environ.get("DATABASE_URL"):
        raise SystemExit("bench cache --http runs against the embedded Postgres (unset DATABASE_URL)")
    call_command("ingest", "--demo", "--if-empty", "--no-progress")
    corpus = Collection.objects.get(name="default")
    chunks = Chunk.objects.filter(collection=corpus).count()
    access = config.current().access
    counters_before = _tidy.counters()
    newest = _tidy.newest()
    keys = {kind: ApiKey.issue(name=f"bench cache http {kind}") for kind in ("warm", "exact", "semantic")}
    connection.close()
    log_path = ROOT / "var" / f"bench-cache-http-{os.getpid()}.log"
    live, exact, semantic = [], [], []
    outcomes: dict[str, set[str]] = {"exact": set(), "semantic": set()}
    with _tidy.embedded_server_env() as env:
        try:
            with serve(log_path, workers=args.workers, threads=args.threads, env=env, ready_timeout=240) as base:
                sessions = {kind: requests.Session() for kind in keys}
                for kind, (_, key) in keys.items():
                    sessions[kind].headers["Authorization"] = f"Bearer {key}"
                probe = requests.Session()

                def ask(kind: str, question: str) -> tuple[float, dict]:
                    body = {"question": question, "collection": "default"}
                    started = time.perf_counter()
                    response = sessions[kind].post(f"{base}/api/query", json=body, timeout=120)
                    elapsed = (time.perf_counter() - started) * 1000
                    if response.status_code != 200:
                        raise SystemExit(f"{kind} question answered {response.status_code}: {response.text[:300]}")
                    return elapsed, response.json()

                def probe_live() -> float:
                    started = time.perf_counter()
                    response = probe.get(f"{base}/health/live", timeout=10)
                    elapsed = (time.perf_counter() - started) * 1000
                    assert response.status_code == 200
                    return elapsed

                ask("warm", BASE_QUESTION)  # stored (a miss, or a hit of an earlier run)
                ask("warm", PARAPHRASE)  # embedded and cached: the semantic hits below need no model
                for _ in range(20):  # every worker and thread has its connection, settings and key
                    probe_live()
                    ask("exact", EXACT_QUESTION)
                    ask("semantic", PARAPHRASE)
                # Interleaved, so that the load of other processes weighs on every kind alike.
                for _ in range(args.repeat):
                    live.append(probe_live())
                    ms, body = ask("exact", EXACT_QUESTION)
                    exact.append(ms)
                    outcomes["exact"].add(body["cache"])
                    ms, body = ask("semantic", PARAPHRASE)
                    semantic.append(ms)
                    outcomes["semantic"].add(body["cache"])
        finally:
            for row, _ in keys.values():
                row.revoke()
            with connection.cursor() as cursor:
                cursor.execute(
                    "DELETE FROM rag_throttlecount WHERE key = ANY(%s)",
                    [[f"throttle_key_{r.pk}" for r, _ in keys.values()]],
                )
                _tidy.drop_newer(cursor, newest, log_collection="default")
                _tidy.take_back_counters(cursor, counters_before)

    if outcomes != {"exact": {"exact"}, "semantic": {"semantic"}}:
        raise SystemExit(f"the questions were not the hits they should be: {outcomes}")
    live_ms, exact_ms, semantic_ms = (statistics.median(v) for v in (live, exact, semantic))
    exact_ratio, semantic_ratio = exact_ms / live_ms, semantic_ms / live_ms
    load_end = load_average()
    print(
        f"gunicorn {args.workers} workers x {args.threads} threads, one keep-alive client a kind, "
        f"{args.repeat} requests each, interleaved; corpus 'default' ({chunks} chunks, the demo corpus); "
        f"throttles {access.ip_rate or 'off'} per address, {access.key_rate or 'off'} per key"
    )
    print(f"  {'':28} {'median ms':>10} {'p95 ms':>8} {'x /health/live':>15} {'goal':>6}")
    print(f"  {'GET /health/live':28} {live_ms:>10.2f} {statistics.quantiles(live, n=20)[-1]:>8.2f} {1:>15.2f}")
    print(
        f"  {'exact hit':28} {exact_ms:>10.2f} {statistics.quantiles(exact, n=20)[-1]:>8.2f} "
        f"{exact_ratio:>15.2f} {'<= 2':>6}"
    )
    print(
        f"  {'semantic hit (embedded before)':28} {semantic_ms:>10.2f} "
        f"{statistics.quantiles(semantic, n=20)[-1]:>8.2f} {semantic_ratio:>15.2f} {'<= 3':>6}"
    )
    print(f"  load average at the end: {load_end}")
    summary = {
        "mode": "http",
        "corpus": f"default: {chunks} chunks (demo)",
        "workers": args.workers,
        "threads": args.threads,
        "requests_each": args.repeat,
        "throttle_ip_rate": access.ip_rate,
        "throttle_key_rate": access.key_rate,
        "health_live_median_ms": round(live_ms, 3),
        "exact_hit_median_ms": round(exact_ms, 3),
        "semantic_hit_median_ms": round(semantic_ms, 3),
        "exact_hit_over_live_ratio": round(exact_ratio, 2),
        "semantic_hit_over_live_ratio": round(semantic_ratio, 2),
        "goal_exact_le_2x_met": exact_ratio <= 2,
        "goal_semantic_le_3x_met": semantic_ratio <= 3,
        "load_average_end": load_end,
    }
    print(json.dumps(summary))
    return 0
