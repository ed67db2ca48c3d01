"""Ingestion jobs: documents per second with 1 and 2 worker processes, queries while the queue
drains, and how fast a 300-page PDF upload is accepted.

``python -m bench jobs``, on the database ``make run`` leaves, with its settings as they are
(throttles included: every request carries an API key issued for the run, revoked at the end).

- 200 small generated notes (one chunk each) are queued in one transaction, and drained by 1, then
  (another 200) by 2 worker processes (``manage.py procrastinate worker``). The workers embed with
  the fake Ollama (a real HTTP server in this process, 20 ms a request by default): they are
  pointed at it through their environment (RAGSITE_SETTINGS_SOURCE=environment), so the site's
  stored settings are never changed.
- POST /api/query (the demo corpus, the local model, the cache bypassed) against gunicorn with 2
  workers, 8 questions a second, first idle, then while each queue drains: p95 while draining
  against idle (goal <= 2x).
- POST /api/documents with a 300-page PDF: the time to the 202 (goal < 200 ms). Those jobs are
  cancelled through the API before any worker runs, which also measures nothing else.

Bounded: every loop ends by itself, every request has a timeout, only 127.0.0.1 is contacted.
Everything it creates (collections, jobs, the key) is deleted or revoked at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import requests

from bench._pdf import pdf_with_pages
from bench._stats import nearest_rank
from ragsite.liveserver import serve

ROOT = Path(__file__).resolve().parent.parent
QUESTIONS = [
    "What does the yield statement do?",
    "How does the with statement work?",
    "What is a lambda expression?",
    "What does the global statement do?",
    "How do I raise an exception?",
    "What is slicing?",
]


def note(run: str, n: int) -> bytes:
    words = ["harbour", "library", "canteen", "parking", "budget", "garden", "laboratory", "archive"]
    topic = words[n % len(words)]
    text = (
        f"Note {n} of run {run} about the {topic}.\n\n"
        f"The {topic} team met on day {n} and agreed on item {n}. Everyone read report {n} before the "
        f"meeting, and the minutes of meeting {n} were filed with the {topic} office that afternoon. "
        f"Questions about the {topic} go to the desk on floor {n % 7}, open from nine to five."
    )
    return text.encode()


class Workers:
    """Worker processes in their own sessions; stopped (SIGTERM) together."""

    def __init__(self, count: int, env: dict[str, str], log_dir: Path) -> None:
        self.logs = [log_dir / f"bench-jobs-worker-{os.getpid()}-{i}.log" for i in range(count)]
        self.processes = []
        for log in self.logs:
            with log.open("w") as out:
                self.processes.append(
                    subprocess.Popen(
                        [sys.executable, "manage.py", "procrastinate", "worker"],
                        cwd=ROOT,
                        env=env,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
        deadline = time.monotonic() + 90
        while not all("Starting worker" in log.read_text() for log in self.logs):
            if any(p.poll() is not None for p in self.processes) or time.monotonic() > deadline:
                self.stop()
                raise SystemExit(f"a worker did not start: {self.logs[0].read_text()[-2000:]}")
            time.sleep(0.2)

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=60)
        for log in self.logs:
            log.unlink(missing_ok=True)


class Asker:
    """Asks questions at a fixed rate in a thread; each sample is (seconds since start, ms)."""

    def __init__(self, base: str, key: str, rate: float) -> None:
        self.base, self.rate = base, rate
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {key}"
        self.samples: list[tuple[float, float]] = []
        self.errors: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        n, start = 0, time.monotonic()
        while not self._stop.is_set():
            body = {"question": QUESTIONS[n % len(QUESTIONS)], "use_cache": False}
            t0 = time.monotonic()
            try:
                status = self.session.post(f"{self.base}/api/query", json=body, timeout=30).status_code
            except requests.RequestException:
                status = 0
            elapsed = (time.monotonic() - t0) * 1000
            if status == 200:
                self.samples.append((t0 - start, elapsed))
            else:
                self.errors.append(status)
            n += 1
            self._stop.wait(max(0.0, start + n / self.rate - time.monotonic()))

    def __enter__(self) -> Asker:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    def latencies(self) -> list[float]:
        return [ms for _, ms in self.samples]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench jobs")
    parser.add_argument("--documents", type=int, default=200, help="notes queued per run (default 200)")
    parser.add_argument("--embed-ms", type=float, default=20.0, help="the fake Ollama's time per request")
    parser.add_argument("--rate", type=float, default=8.0, help="questions a second (default 8)")
    parser.add_argument("--idle-seconds", type=float, default=20.0)
    parser.add_argument("--pages", type=int, default=300)
    args = parser.parse_args(argv)

    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection, transaction

    from rag import jobs
    from rag.models import ApiKey, Collection, Job, JobStatus
    from ragsite import embedded_db
    from resilience.fake_ollama import FakeOllama

    if os.environ.get("DATABASE_URL"):
        database_url = os.environ["DATABASE_URL"]
    else:
        data_dir = Path(connection.settings_dict["OPTIONS"]["embedded_data_dir"])
        database_url = f"postgresql://postgres@/postgres?host={embedded_db.socket_dir(data_dir)}"
    call_command("ingest", "--demo", "--if-empty", "--no-progress", stdout=io.StringIO())
    corpus = Collection.objects.get(name="default")
    print(
        f"queries: collection 'default', {corpus.documents.count()} documents (the demo corpus), "
        "local model, cache bypassed"
    )
    run = f"{int(time.time())}"
    collections = [f"bench-jobs-{run}-1", f"bench-jobs-{run}-2"]
    print(
        f"jobs: {args.documents} generated notes per run ({len(note(run, 0))} bytes, one chunk each), "
        f"embedded by the fake Ollama ({args.embed_ms:g} ms a request)"
    )
    key_row, key = ApiKey.issue(name="bench jobs", all_collections=True, can_write=True)
    created: list[int] = []
    var = ROOT / "var"
    metrics_dir = var / f"bench-jobs-prometheus-{os.getpid()}"
    results: dict[str, float] = {}
    with contextlib.ExitStack() as stack:
        stack.callback(key_row.revoke)
        stack.callback(lambda: Collection.objects.filter(name__in=collections).delete())
        stack.callback(lambda: Job.objects.filter(pk__in=created).delete())
        stack.callback(shutil.rmtree, metrics_dir, True)
        fake = stack.enter_context(FakeOllama(latency=args.embed_ms / 1000))
        worker_env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "RAGSITE_SETTINGS_SOURCE": "environment",
            "RAGSITE_EMBEDDING_BACKEND": "ollama",
            "RAGSITE_EMBEDDING_MODEL": "all-minilm",
            "OLLAMA_BASE_URL": fake.url,
        }
        connection.close()
        server_env = {"DATABASE_URL": database_url, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
        base = stack.enter_context(serve(var / f"bench-jobs-{os.getpid()}.log", workers=2, threads=8, env=server_env))
        stack.callback((var / f"bench-jobs-{os.getpid()}.log").unlink, True)
        for question in QUESTIONS:  # both gunicorn workers load the model before the clock starts
            requests.post(
                f"{base}/api/query",
                json={"question": question},
                headers={"Authorization": f"Bearer {key}"},
                timeout=120,
            )

        # 1. A 300-page PDF upload: the time to the 202, with no worker running.
        pdf = pdf_with_pages(args.pages)
        upload_ms = []
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {key}"
        for n in range(5):
            t0 = time.monotonic()
            response = session.post(
                f"{base}/api/documents",
                files={"file": (f"handbook-{n}.pdf", pdf, "application/pdf")},
                data={"collection": collections[0]},
                timeout=60,
            )
            upload_ms.append((time.monotonic() - t0) * 1000)
            if response.status_code != 202:
                raise SystemExit(f"upload answered {response.status_code}: {response.text[:300]}")
            job = response.json()["job"]
            created.append(job["id"])
            if session.delete(f"{base}{job['url']}", timeout=30).json()["status"] != "cancelled":
                raise SystemExit("the upload's job could not be cancelled")
        print(
            f"{args.pages}-page PDF ({len(pdf) / 1e6:.1f} MB) upload to 202: "
            f"median {statistics.median(upload_ms):.0f} ms, max {max(upload_ms):.0f} ms (goal < 200 ms)"
        )

        # 2. Queries while nothing else runs.
        with Asker(base, key, args.rate) as idle:
            time.sleep(args.idle_seconds)
        idle_p50 = nearest_rank(idle.latencies(), 0.5, empty=0.0)
        idle_p95 = nearest_rank(idle.latencies(), 0.95, empty=0.0)
        print(f"idle: {len(idle.samples)} queries, p50 {idle_p50:.0f} ms, p95 {idle_p95:.0f} ms")

        # 3. Drain the queue with 1, then 2 worker processes, asking questions all along.
        for count, collection in zip((1, 2), collections, strict=True):
            workers = Workers(count, worker_env, var)
            try:
                # Warm-up, not timed: each worker's first jobs open connections and caches.
                warm = [
                    jobs.queue_document(
                        collection_name=collection,
                        source=f"warm:{run}:{n}",
                        data=note(run, -n),
                        media_type="text/plain",
                    ).pk
                    for n in range(1, 4 * count + 1)
                ]
                created.extend(warm)
                while (
                    Job.objects.filter(pk__in=warm, status=JobStatus.QUEUED).exists()
                    or Job.objects.filter(pk__in=warm, status=JobStatus.RUNNING).exists()
                ):
                    time.sleep(0.05)
                with transaction.atomic():  # one commit: the workers are told of all of them at once
                    queued = [
                        jobs.queue_document(
                            collection_name=collection,
                            source=f"bench:{run}:{n}",
                            data=note(run, n),
                            media_type="text/plain",
                        ).pk
                        for n in range(args.documents)
                    ]
                created.extend(queued)
                t0 = time.monotonic()
                with Asker(base, key, args.rate) as busy:
                    while (
                        Job.objects.filter(pk__in=queued)
                        .exclude(status__in=[JobStatus.DONE, JobStatus.FAILED])
                        .exists()
                    ):
                        if time.monotonic() - t0 > 600:
                            raise SystemExit("the queue did not drain in 10 minutes")
                        time.sleep(0.05)
                    seconds = time.monotonic() - t0
            finally:
                workers.stop()
            failed = Job.objects.filter(pk__in=queued, status=JobStatus.FAILED).count()
            if failed:
                raise SystemExit(
                    f"{failed} jobs failed: {Job.objects.filter(pk__in=queued, status='failed').first().reason}"
                )
            rate = args.documents / seconds
            p95 = nearest_rank(busy.latencies(), 0.95, empty=0.0)
            results[f"workers_{count}"] = rate
            results[f"busy_p95_{count}"] = p95
            errors = f", {len(busy.errors)} errors {sorted(set(busy.errors))}" if busy.errors else ""
            print(
                f"{count} worker process(es): {args.documents} documents in {seconds:.1f} s = {rate:.1f} documents/s; "
                f"queries meanwhile: {len(busy.samples)}, p95 {p95:.0f} ms ({p95 / idle_p95:.2f}x idle){errors}"
            )

    ratio = results["workers_2"] / results["workers_1"]
    worst = max(results["busy_p95_1"], results["busy_p95_2"])
    print(f"2 workers / 1 worker: {ratio:.2f}x; query p95 draining / idle: {worst / idle_p95:.2f}x (goal <= 2x)")
    print(
        json.dumps(
            {
                "documents": args.documents,
                "fake_embed_ms": args.embed_ms,
                "docs_per_s_1_worker": round(results["workers_1"], 1),
                "docs_per_s_2_workers": round(results["workers_2"], 1),
                "workers_2_over_1_ratio": round(ratio, 2),
                "query_p95_idle_ms": round(idle_p95, 1),
                "query_p95_draining_1_worker_ms": round(results["busy_p95_1"], 1),
                "query_p95_draining_2_workers_ms": round(results["busy_p95_2"], 1),
                "query_p95_draining_over_idle_ratio": round(worst / idle_p95, 2),
                "pdf_pages": args.pages,
                "pdf_upload_202_median_ms": round(statistics.median(upload_ms), 1),
                "pdf_upload_202_max_ms": round(max(upload_ms), 1),
            }
        )
    )
    return 0
