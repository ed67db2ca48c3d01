"""Under gunicorn with two workers, /metrics counts every worker's requests, each exactly once."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import quote

import pytest
import requests
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.slow

BASE_DIR = Path(__file__).resolve().parent.parent
QUESTIONS = [
    "What does the yield statement do?",
    "How does the with statement work?",
    "What is a lambda expression?",
    "What does the pass statement do?",
]
QUERY_VIEW = {"view": "api-query", "method": "POST"}
HTTP_BY_VIEW = "django_http_requests_total_by_view_transport_method_total"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_database_url() -> str:
    """A DATABASE_URL for the test database this session created (and committed the corpus to)."""
    from django.db import connection

    db = connection.settings_dict
    name = quote(db["NAME"])
    if db["HOST"].startswith("/"):  # a unix socket directory: the embedded server's
        return f"postgresql://{quote(db['USER'] or 'postgres')}@/{name}?host={quote(db['HOST'])}"
    credentials = quote(db["USER"]) + (f":{quote(db['PASSWORD'])}" if db["PASSWORD"] else "")
    port = f":{db['PORT']}" if db["PORT"] else ""
    return f"postgresql://{credentials}@{db['HOST']}{port}/{name}"


test_database_url.__test__ = False  # a helper, not a test


@pytest.fixture
def gunicorn(demo_corpus, tmp_path) -> Iterator[tuple[str, Path]]:
    """gunicorn with 2 workers on a free port, serving the test database; yields (url, metrics dir)."""
    port = free_port()
    metrics_dir = tmp_path / "prometheus"
    env = {
        **os.environ,
        "DATABASE_URL": test_database_url(),
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        "RAGSITE_BIND": f"127.0.0.1:{port}",
        "RAGSITE_WORKERS": "2",
        "RAGSITE_THREADS": "4",
        "RAGSITE_ACCESS_LOG": "0",
        # Cached answers would be committed to the shared test database and surprise later tests.
        "RAGSITE_CACHE_ENABLED": "0",
    }
    log = (tmp_path / "gunicorn.log").open("w")
    server = subprocess.Popen(
        [str(Path(sys.executable).with_name("gunicorn")), "-c", "ragsite/gunicorn_conf.py", "ragsite.wsgi"],
        cwd=BASE_DIR,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, (tmp_path / "gunicorn.log").read_text()
            try:
                if requests.get(f"{url}/health/live", timeout=2).status_code == 200:
                    break
            except requests.RequestException:  # refused, or queued while the workers load the model
                pass
            assert time.monotonic() < deadline, "gunicorn did not start: " + (tmp_path / "gunicorn.log").read_text()
            time.sleep(0.2)
        yield url, metrics_dir
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()


def per_worker(metrics_dir: Path, sample_name: str, labels: dict[str, str]) -> dict[str, float]:
    """The sample's value in each worker's own counter file (what /metrics must add up)."""
    values = {}
    for path in sorted(metrics_dir.glob("counter_*.db")):
        for family in MultiProcessCollector.merge([str(path)], accumulate=False):
            for sample in family.samples:
                if sample.name == sample_name and labels.items() <= sample.labels.items():
                    values[path.stem] = values.get(path.stem, 0) + sample.value
    return values


def scraped(text: str, sample_name: str, labels: dict[str, str] | None = None) -> float:
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == sample_name and (labels or {}).items() <= sample.labels.items()
    )


def ask(url: str, question: str) -> int:
    # A new connection per question, so the kernel spreads them over both workers' accept queues.
    return requests.post(f"{url}/api/query", json={"question": question}, timeout=60).status_code


def test_metrics_sum_the_workers_and_count_each_query_once(gunicorn):
    url, metrics_dir = gunicorn
    sent = 0
    with ThreadPoolExecutor(max_workers=8) as pool:
        for _ in range(20):
            statuses = list(pool.map(lambda i: ask(url, QUESTIONS[i % len(QUESTIONS)]), range(8)))
            assert statuses == [200] * 8
            sent += 8
            answered = per_worker(metrics_dir, HTTP_BY_VIEW, QUERY_VIEW)
            if sum(1 for count in answered.values() if count > 0) >= 2:
                break
    assert sum(1 for count in answered.values() if count > 0) == 2, f"one worker took every query: {answered}"

    response = requests.get(f"{url}/metrics", timeout=10)
    assert response.status_code == 200
    text = response.text
    assert scraped(text, HTTP_BY_VIEW, QUERY_VIEW) == sent
    # The scrape-time collector is in the merged output too, exactly once.
    assert text.count('ragsite_connection_pool_size{client="ollama",setting="pool_maxsize"}') == 1
    # Gauges merge to one series per breaker, not one per worker.
    assert text.count('ragsite_circuit_breaker_state{breaker="embed"} 0.0') == 1
    if "record_query" in (BASE_DIR / "rag" / "services.py").read_text():  # drop the condition once wired
        assert scraped(text, "ragsite_queries_total") == sent
        assert scraped(text, "ragsite_query_duration_seconds_count") == sent
