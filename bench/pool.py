"""Pooled vs one-connection-per-call embed calls against the fake Ollama (2 ms service time).

``python -m bench pool [--calls 500] [--threads 8] [--latency 0.002]``

Both sides run in one process against the same server, one after the other: the pooled side
through ``OllamaClient`` (kept-alive connections, breaker, validation), the other with a new
``requests.Session`` per call, as a client without a shared session does. Each side runs once
with one caller and once with ``--threads`` concurrent callers (a threaded web worker); the JSON
headline is the concurrent run, with the sequential figures beside it under ``sequential_*``.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import requests

from resilience import config
from resilience.breaker import CircuitBreaker
from resilience.client import OllamaClient
from resilience.fake_ollama import FakeOllama
from resilience.pool import PoolStats

MODEL = "all-minilm"


def text(i: int) -> str:
    return f"benchmark passage number {i}"


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


def measure(fake: FakeOllama, calls: int, threads: int) -> dict[str, Any]:
    cfg = config.current()
    pool = cfg.pool
    timeout = (pool.connect_timeout, pool.read_timeout)

    def new_client() -> OllamaClient:
        breakers = {name: CircuitBreaker(name, cfg.breaker) for name in ("embed", "chat")}
        return OllamaClient(fake.url, pool, stats=PoolStats(), breakers=breakers.__getitem__)

    def unpooled(i: int) -> None:
        with requests.Session() as session:
            response = session.post(fake.url + "/api/embed", json={"model": MODEL, "input": [text(i)]}, timeout=timeout)
            response.raise_for_status()
            assert len(response.json()["embeddings"]) == 1

    warm = new_client()
    for i in range(10):  # imports and first-call costs, on neither measured side
        warm.embed([text(i)], MODEL)
        unpooled(i)
    client = new_client()  # fresh: its first connections are part of the measurement

    out: dict[str, Any] = {}
    for name, call in (("pooled", lambda i: client.embed([text(i)], MODEL)), ("unpooled", unpooled)):
        fake.reset_counters()
        seconds = run(calls, threads, call)
        assert fake.count("/api/embed") == calls
        out[f"{name}_calls_per_s"] = round(calls / seconds, 1)
        out[f"{name}_connections"] = fake.connections_accepted
    out["ratio"] = round(out["pooled_calls_per_s"] / out["unpooled_calls_per_s"], 2)
    return out


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench pool", description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=500, help="embed calls per side (default 500)")
    parser.add_argument("--threads", type=int, default=8, help="concurrent callers (default 8)")
    parser.add_argument("--latency", type=float, default=0.002, help="server time per request, s")
    args = parser.parse_args(argv)
    pool_maxsize = config.current().pool.pool_maxsize

    with FakeOllama(latency=args.latency) as fake:
        for i in range(args.calls):  # both sides then find the fake's vectors cached alike
            fake.embedding(text(i))
        sequential = measure(fake, args.calls, 1)
        concurrent = measure(fake, args.calls, args.threads)

    print(f"{args.calls} embed calls per side, {args.latency * 1000:g} ms service time, pool_maxsize {pool_maxsize}")
    for label, result in ((f"{'1 thread':>10}", sequential), (f"{args.threads:>3} threads", concurrent)):
        for side in ("pooled", "unpooled"):
            print(
                f"  {label} {side:>8}: {result[f'{side}_calls_per_s']:8.1f} calls/s, "
                f"{result[f'{side}_connections']:4d} TCP connections"
            )
        print(f"  {label}    ratio: {result['ratio']:.2f}x")
    summary = {
        "calls": args.calls,
        "threads": args.threads,
        "service_time_ms": args.latency * 1000,
        **concurrent,
        "pool_maxsize": pool_maxsize,
        **{f"sequential_{key}": value for key, value in sequential.items()},
    }
    print(json.dumps(summary))
    return 0
