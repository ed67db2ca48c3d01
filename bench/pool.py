"""Pooled vs one-connection-per-call embed calls against the fake Ollama (2 ms service time).

``python -m bench pool [--calls 500] [--threads 1] [--latency 0.002]``

Both sides run in one process against the same server, one after the other: the pooled side
through ``OllamaClient`` (kept-alive connections, breaker, validation), the other with a new
``requests.Session`` per call, as a client without a shared session does. Prints calls/s, the
ratio and the TCP connections the server accepted for each, then one line of JSON.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import requests

from resilience import config
from resilience.breaker import CircuitBreaker
from resilience.client import OllamaClient
from resilience.pool import PoolStats
from resilience.testing import FakeOllama

MODEL = "all-minilm"


def run(calls: int, threads: int, call: Callable[[int], None]) -> float:
    """Seconds taken by ``calls`` calls spread over ``threads`` threads."""
    started = time.perf_counter()
    if threads == 1:
        for i in range(calls):
            call(i)
    else:
        with ThreadPoolExecutor(max_workers=threads) as executor:
            list(executor.map(call, range(calls)))
    return time.perf_counter() - started


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench pool", description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=500, help="embed calls per side (default 500)")
    parser.add_argument("--threads", type=int, default=1, help="concurrent callers (default 1)")
    parser.add_argument("--latency", type=float, default=0.002, help="server time per request, s")
    args = parser.parse_args(argv)

    cfg = config.current()
    pool = cfg.pool
    breakers = {name: CircuitBreaker(name, cfg.breaker) for name in ("embed", "chat")}

    with FakeOllama(latency=args.latency) as fake:
        client = OllamaClient(fake.url, pool, stats=PoolStats(), breakers=breakers.__getitem__)
        timeout = (pool.connect_timeout, pool.read_timeout)

        def pooled(i: int) -> None:
            client.embed([f"benchmark passage number {i}"], MODEL)

        def unpooled(i: int) -> None:
            with requests.Session() as session:
                response = session.post(
                    fake.url + "/api/embed",
                    json={"model": MODEL, "input": [f"benchmark passage number {i}"]},
                    timeout=timeout,
                )
                response.raise_for_status()
                assert len(response.json()["embeddings"]) == 1

        results = {}
        for name, call in (("pooled", pooled), ("unpooled", unpooled)):
            run(20, args.threads, call)  # warm-up: imports, caches, the first connections
            fake.reset_counters()
            seconds = run(args.calls, args.threads, call)
            results[name] = (args.calls / seconds, fake.connections_accepted, fake.total_requests)

    pooled_rate, pooled_conns, _ = results["pooled"]
    unpooled_rate, unpooled_conns, _ = results["unpooled"]
    ratio = pooled_rate / unpooled_rate
    print(f"{args.calls} embed calls per side, {args.threads} thread(s), {args.latency * 1000:g} ms/request")
    for name, (rate, conns, requests_seen) in results.items():
        print(f"  {name:9}: {rate:8.1f} calls/s, {conns:4d} TCP connections, {requests_seen} requests")
    print(f"  ratio    : {ratio:.2f}x (goal >= 1.5x; pooled connections <= pool_maxsize {pool.pool_maxsize})")
    print(
        json.dumps(
            {
                "calls": args.calls,
                "threads": args.threads,
                "service_time_ms": args.latency * 1000,
                "pooled_calls_per_s": round(pooled_rate, 1),
                "unpooled_calls_per_s": round(unpooled_rate, 1),
                "ratio": round(ratio, 2),
                "pooled_connections": pooled_conns,
                "unpooled_connections": unpooled_conns,
                "pool_maxsize": pool.pool_maxsize,
            }
        )
    )
    return 0
