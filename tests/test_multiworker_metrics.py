"""Under gunicorn with two workers, /metrics counts every worker's requests, each exactly once."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from tests.live import live_server

pytestmark = pytest.mark.slow

QUESTIONS = [
    "What does the yield statement do?",
    "How does the with statement work?",
    "What is a lambda expression?",
    "What does the pass statement do?",
]
QUERY_VIEW = {"view": "api-query", "method": "POST"}
HTTP_BY_VIEW = "django_http_requests_total_by_view_transport_method_total"


@pytest.fixture
def gunicorn(demo_corpus, tmp_path, django_db_blocker) -> Iterator[tuple[str, Path]]:
    """gunicorn with 2 workers on the test database; yields (base URL, its metrics directory)."""
    from resilience.testing import saved_settings

    with (
        django_db_blocker.unblock(),
        # Cached answers would be committed to the shared test database and surprise later tests.
        saved_settings(cache={"enabled": False}),
        live_server(tmp_path, workers=2) as url,
    ):
        yield url, next(tmp_path.glob("prometheus-*"))


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
    # Until both workers have answered: one that is still starting (loading the model) leaves the
    # other to take every connection, for as long as its start takes on a busy machine.
    deadline = time.monotonic() + 120
    with ThreadPoolExecutor(max_workers=8) as pool:
        while True:
            statuses = list(pool.map(lambda i: ask(url, QUESTIONS[i % len(QUESTIONS)]), range(8)))
            assert statuses == [200] * 8
            sent += 8
            answered = per_worker(metrics_dir, HTTP_BY_VIEW, QUERY_VIEW)
            if sum(1 for count in answered.values() if count > 0) >= 2 or time.monotonic() > deadline:
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
    assert scraped(text, "ragsite_queries_total") == sent
    assert scraped(text, "ragsite_query_duration_seconds_count") == sent
