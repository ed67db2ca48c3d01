"""The Prometheus metrics of the domain: questions answered, ingestion, the answer cache.

Queries and ingests are events, counted where they happen (under gunicorn in prometheus_client's
multiprocess files, summed at scrape time). The answer cache's numbers live in the database and
are already shared by every worker, so ``CacheCollector`` reads them when Prometheus scrapes:
written to per-worker files they would be counted once per worker.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Iterator
from typing import Any

from django.db import connection
from prometheus_client import Counter, Histogram
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

from rag import cache_counters
from resilience.metrics import label_value

logger = logging.getLogger(__name__)

QUERY_DURATION = Histogram(
    "ragsite_query_duration_seconds",
    "Time to answer a question, by cache outcome and whether the answer was degraded.",
    ["cache", "degraded"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
QUERIES = Counter("ragsite_queries", "Questions answered.", ["cache", "degraded"])
INGEST_CHUNKS = Counter("ragsite_ingest_chunks", "Chunks written by ingestion (new and updated documents).")
INGEST_FILES = Counter(
    "ragsite_ingest_files", "Documents seen by ingestion, by result (new, updated, unchanged, failed).", ["result"]
)


def record_query(*, cache: str, degraded: bool, seconds: float) -> None:
    """Count one answered question; ``cache`` is the answer's cache outcome (hit, miss, ...)."""
    labels = (label_value(cache), "true" if degraded else "false")
    QUERIES.labels(*labels).inc()
    QUERY_DURATION.labels(*labels).observe(seconds)


def record_ingest(*, statuses: Iterable[str], chunks: int) -> None:
    """Count the documents of one ingestion run by result, and the chunks it wrote."""
    files: dict[str, int] = defaultdict(int)
    for status in statuses:
        files[label_value(status)] += 1
    for result, count in files.items():
        INGEST_FILES.labels(result).inc(count)
    if chunks:
        INGEST_CHUNKS.inc(chunks)


def cache_stats() -> dict[str, Any] | None:
    """The answer cache's numbers, or None when they cannot be read."""
    try:
        # stats() answers zeros when the database is down; exported, those would read as counter
        # resets and the next scrape as a burst of hits. Ask the database first.
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return cache_counters.stats()
    except Exception as exc:  # a scrape must still answer when the database does not
        logger.warning("semantic cache stats unavailable: %s", exc)
        return None


class CacheCollector:
    """The answer cache's numbers, read when Prometheus scrapes.

    They are stored in the database, so every worker (and every replica) sees the same numbers:
    exporting them once per scrape is exact, and a sum over replicas is not (use ``max`` across
    instances).
    """

    def describe(self) -> Iterable[Metric]:
        # Names only: a registry asks at registration, in AppConfig.ready(), where no I/O belongs.
        return list(self._families(None))

    def collect(self) -> Iterable[Metric]:
        return list(self._families(cache_stats()))

    def _families(self, cache: dict[str, Any] | None) -> Iterator[Metric]:
        hits = CounterMetricFamily("ragsite_semcache_hits", "Semantic cache hits, by kind.", labels=["kind"])
        misses = CounterMetricFamily("ragsite_semcache_misses", "Semantic cache misses.")
        evictions = CounterMetricFamily("ragsite_semcache_evictions", "Entries evicted to keep the cache bounded.")
        entries = GaugeMetricFamily("ragsite_semcache_size", "Entries in the semantic cache.")
        fill = GaugeMetricFamily("ragsite_semcache_fill_ratio", "Entries in the semantic cache over its capacity.")
        if cache is not None:
            hits.add_metric(["exact"], cache.get("exact_hits", 0))
            hits.add_metric(["semantic"], cache.get("semantic_hits", 0))
            misses.add_metric([], cache.get("misses", 0))
            evictions.add_metric([], cache.get("evictions", 0))
            entries.add_metric([], cache.get("size", 0))
            fill.add_metric([], cache.get("fill_ratio", 0.0))
        yield from (hits, misses, evictions, entries, fill)


cache_collector = CacheCollector()
