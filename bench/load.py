"""Load with faults: gunicorn (2 workers) on loopback, 50 concurrent clients, Ollama or Postgres failing mid-run.

``python -m bench load`` (default ``--fault ollama``): the fake Ollama answers chat in 200 ms; at
20 s it goes down for 20 s, then comes back. Checks: no 500s, degraded answers only while Ollama
was down (plus the breaker's recovery timeout), the breakers closed again after recovery.

``python -m bench load --fault postgres``: the same load, and at 20 s the Postgres server is
stopped for 10 s, then started again. Checks: only 503s during the outage (no 500s), full
recovery after, and every document whose POST was answered 201 is still there at the end.

``python -m bench load --profile seed``: the seed service's workload instead (bench/_load_seed.py).

Bounded: the clients stop by themselves after ``--seconds``; every request has a timeout; only
127.0.0.1 is contacted.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import random
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import requests

from bench._stats import nearest_rank
from ragsite.liveserver import serve

ROOT = Path(__file__).resolve().parent.parent
POPULAR = [
    "What does the yield statement do?",
    "What is a lambda expression?",
    "What does the global statement do?",
    "How do I raise an exception?",
    "What does the assert statement do?",
    "How does the with statement work?",
    "What is slicing?",
    "What does the nonlocal statement do?",
    "How are integers represented?",
    "What does the pass statement do?",
]
TOPICS = ["yield", "lambda", "global", "raise", "assert", "with", "slicing", "import", "class", "for loop", "while"]


@dataclass
class Sample:
    started: float  # seconds since the load began
    latency_ms: float
    status: int
    degraded: bool = False
    cache: str = ""
    kind: str = "query"

    @property
    def ended(self) -> float:
        return self.started + self.latency_ms / 1000


def warm_up(base: str) -> None:
    """Both workers load the model before the clock starts: a few answered queries in a row."""
    for _ in range(4):
        requests.post(f"{base}/api/query", json={"question": "warm up?"}, timeout=60)


def main(argv: list[str]) -> int:
    profile = argparse.ArgumentParser(add_help=False)
    profile.add_argument("--profile", choices=["faults", "seed"], default="faults")
    chosen, argv = profile.parse_known_args(argv)
    if chosen.profile == "seed":
        from bench import _load_seed

        return _load_seed.main(argv)
    parser = argparse.ArgumentParser(prog="python -m bench load", parents=[profile])
    parser.add_argument("--fault", choices=["ollama", "postgres"], default="ollama")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--fault-at", type=float, default=20.0)
    parser.add_argument("--fault-for", type=float, default=None, help="default: 20 s (ollama), 10 s (postgres)")
    parser.add_argument("--recovery-timeout", type=float, default=5.0, help="breaker recovery timeout for the run")
    args = parser.parse_args(argv)
    fault_for = args.fault_for if args.fault_for is not None else (20.0 if args.fault == "ollama" else 10.0)

    import django

    django.setup()
    from django.db import connection

    from bench import _tidy
    from ragsite import embedded_db
    from resilience.fake_ollama import FakeOllama
    from resilience.testing import saved_settings

    data_dir = Path(connection.settings_dict.get("OPTIONS", {}).get("embedded_data_dir") or ROOT / "var" / "pgdata")
    if os.environ.get("DATABASE_URL"):
        raise SystemExit("bench load runs against the embedded Postgres (unset DATABASE_URL)")
    from rag.models import ApiKey, Collection

    run_id = os.getpid()
    log_path = ROOT / "var" / f"bench-load-{run_id}.log"
    samples: list[Sample] = []
    created: list[int] = []
    lock = threading.Lock()
    # Undone in reverse: the server stops, Postgres is started again whatever happened, the
    # settings rows are restored, the fake Ollama stops, the metrics files go, and last the
    # documents the writer added and the run's key, whether the run finished or stopped on an error.
    with contextlib.ExitStack() as stack:
        key_row, api_key = ApiKey.issue(name="bench load", all_collections=True, can_write=True)

        def forget() -> None:
            connection.close()  # Postgres may have been restarted under the old connection
            Collection.objects.filter(name="bench-load").delete()
            key_row.delete()

        stack.callback(forget)
        subprocess.run(
            [sys.executable, "manage.py", "ingest", "--demo", "--if-empty", "--no-progress"], cwd=ROOT, check=True
        )
        connection.close()
        # Workers connect through the socket and cannot restart the server themselves, so a
        # stopped Postgres stays down for as long as the benchmark keeps it down.
        env = {
            **stack.enter_context(_tidy.embedded_server_env()),
            "RAGSITE_LOG_LEVEL": "INFO",  # breaker transitions are counted from the workers' logs
        }
        fake = stack.enter_context(FakeOllama(latency=0.2))
        # The workers read these from the admin-edited settings rows.
        stack.enter_context(
            saved_settings(
                provider={"ollama_base_url": fake.url, "generation_backend": "ollama"},
                breaker={"recovery_timeout": args.recovery_timeout},
                pool={"connect_timeout": 2.0, "read_timeout": 10.0},
                # 50 clients on one address: the per-address throttle would turn most of the load into 429s.
                access={"ip_rate": ""},
            )
        )
        stack.callback(embedded_db.socket_dir, data_dir)
        connection.close()
        base = stack.enter_context(serve(log_path, workers=2, threads=16, env=env, ready_timeout=120))
        warm_up(base)
        start = time.monotonic()
        stop_at = start + args.seconds
        fault_start, fault_end = args.fault_at, args.fault_at + fault_for

        def client(number: int) -> None:
            rng = random.Random(number)
            session = requests.Session()
            n = 0
            while time.monotonic() < stop_at:
                n += 1
                if rng.random() < 0.5:
                    question = rng.choice(POPULAR)
                else:
                    question = f"What does {rng.choice(TOPICS)} do in case {number}-{n}?"
                t0 = time.monotonic()
                try:
                    response = session.post(f"{base}/api/query", json={"question": question}, timeout=30)
                    status = response.status_code
                    body = (
                        response.json()
                        if response.headers.get("content-type", "").startswith("application/json")
                        else {}
                    )
                except requests.RequestException:
                    status, body = 0, {}
                sample = Sample(
                    t0 - start,
                    (time.monotonic() - t0) * 1000,
                    status,
                    bool(body.get("degraded")),
                    body.get("cache", ""),
                )
                with lock:
                    samples.append(sample)

        def writer() -> None:
            session = requests.Session()
            session.headers["Authorization"] = f"Bearer {api_key}"
            n = 0
            while time.monotonic() < stop_at:
                n += 1
                t0 = time.monotonic()
                payload = {
                    "title": f"Load note {run_id}-{n}",
                    "text": f"Load test note number {n} about lighthouses.",
                    "collection": "bench-load",
                }
                try:
                    response = session.post(f"{base}/api/documents", json=payload, timeout=30)
                    status = response.status_code
                    if status == 201:
                        with lock:
                            created.append(response.json()["document"]["id"])
                except requests.RequestException:
                    status = 0
                with lock:
                    samples.append(Sample(t0 - start, (time.monotonic() - t0) * 1000, status, kind="write"))
                time.sleep(0.5)

        threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(args.clients)]
        threads.append(threading.Thread(target=writer, daemon=True))
        for thread in threads:
            thread.start()

        time.sleep(max(0.0, start + fault_start - time.monotonic()))
        if args.fault == "ollama":
            fake.set_mode("down")
        else:
            embedded_db.stop(data_dir)
        time.sleep(max(0.0, start + fault_end - time.monotonic()))
        if args.fault == "ollama":
            fake.set_mode("healthy")
        else:
            embedded_db.socket_dir(data_dir)
        for thread in threads:
            thread.join(timeout=args.seconds + 60)

        # After the load: the service is whole again.
        time.sleep(args.recovery_timeout + 1)
        final = [
            requests.post(f"{base}/api/query", json={"question": f"After the load {i}?"}, timeout=30) for i in range(6)
        ]
        final_ok = all(r.status_code == 200 and not r.json()["degraded"] for r in final)
        docs_after_ids = set()
        page = f"{base}/api/documents?collection=bench-load"
        while page:
            response = requests.get(page, timeout=10)
            if response.status_code != 200:
                raise SystemExit(
                    f"listing documents after the load failed: {response.status_code} {response.text[:200]}"
                )
            listing = response.json()
            docs_after_ids.update(d["id"] for d in listing["results"])
            page = listing["next"]
        lost = sorted(set(created) - docs_after_ids)

    transitions = collections.Counter(
        re.findall(r"breaker (\w+): (\w+(?:_\w+)?) -> (\w+(?:_\w+)?)", log_path.read_text())
    )
    phases = {
        "before": (0.0, fault_start),
        "fault": (fault_start, fault_end),
        "after": (fault_end, args.seconds),
    }
    report: dict[str, object] = {"fault": args.fault, "clients": args.clients, "seconds": args.seconds}
    print(
        f"gunicorn 2 workers x 16 threads, {args.clients} clients, "
        f"fault '{args.fault}' from {fault_start:.0f} s to {fault_end:.0f} s"
    )
    for name, (lo, hi) in phases.items():
        phase = [s for s in samples if lo <= s.started < hi and s.kind == "query"]
        ok = [s.latency_ms for s in phase if s.status == 200]
        statuses = collections.Counter(s.status for s in phase)
        degraded = sum(1 for s in phase if s.degraded)
        rps = len(phase) / (hi - lo)
        p50, p95, p99 = (nearest_rank(ok, q, empty=0.0) for q in (0.5, 0.95, 0.99))
        print(
            f"  {name:>6} [{lo:4.0f}-{hi:4.0f} s]: {rps:6.1f} req/s  p50 {p50:7.1f} ms  p95 {p95:7.1f} ms  "
            f"p99 {p99:7.1f} ms  statuses {dict(sorted(statuses.items()))}  degraded {degraded}"
        )
        report[f"{name}_rps"] = round(rps, 1)
        report[f"{name}_p50_ms"] = round(p50, 1)
        report[f"{name}_p95_ms"] = round(p95, 1)
        report[f"{name}_p99_ms"] = round(p99, 1)
        report[f"{name}_degraded"] = degraded
        report[f"{name}_statuses"] = {str(k): v for k, v in sorted(statuses.items())}
    all_statuses = collections.Counter(s.status for s in samples)
    writes = collections.Counter(s.status for s in samples if s.kind == "write")
    hits = sum(1 for s in samples if s.cache in ("exact", "semantic"))
    print(
        f"  all statuses: {dict(sorted(all_statuses.items()))}; "
        f"writes: {dict(sorted(writes.items()))}; cache hits: {hits}"
    )
    print(f"  breaker transitions (both workers): {dict(transitions)}")

    checks: dict[str, bool] = {
        "no_500s": all_statuses.get(500, 0) == 0,
        "no_connection_errors": all_statuses.get(0, 0) == 0,
    }
    grace = args.recovery_timeout + 2.0
    if args.fault == "ollama":
        # A query counts as "while down" when any part of it overlapped the outage, or the
        # breaker's recovery timeout after it (the breaker waits that long before a trial call).
        checks["degraded_only_while_down"] = not any(
            s.degraded for s in samples if s.ended < fault_start or s.started >= fault_end + grace
        )
        checks["degraded_while_down"] = report["fault_degraded"] > 0
        closed_again = all(
            transitions.get((b, "half_open", "closed"), 0) >= 1 for b, _, to in transitions if to == "open"
        )
        checks["breakers_closed_after_recovery"] = closed_again and final_ok
    else:
        outage = [s for s in samples if fault_start <= s.started < fault_end and s.status not in (200, 201)]
        checks["only_503_during_outage"] = all(s.status == 503 for s in outage)
        checks["full_recovery"] = final_ok and not any(
            s.status != 200 for s in samples if s.kind == "query" and s.started >= fault_end + grace
        )
        checks["no_document_lost"] = not lost
        report["documents_created"] = len(created)
        report["documents_lost"] = len(lost)
    report["cache_hits"] = hits
    report["status_counts"] = {str(k): v for k, v in sorted(all_statuses.items())}
    report["breaker_transitions"] = sum(transitions.values())
    report["checks_passed"] = all(checks.values())
    for name, passed in checks.items():
        print(f"  check {name}: {'ok' if passed else 'FAILED'}")
    print(json.dumps(report))
    return 0 if all(checks.values()) else 1
