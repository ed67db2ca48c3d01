"""Every Prometheus metric RAGsite defines (django-prometheus adds the HTTP and database ones).

Three kinds of feed, chosen so that ``/metrics`` is right when gunicorn runs several workers:

- Events, counted where they happen: breaker outcomes and transitions (``resilience.breaker``
  observers), Ollama request durations (``resilience.client`` request observers), and queries and
  ingests (``record_query``/``record_ingest``, called by ``rag.services``). Under gunicorn these
  values live in prometheus_client's multiprocess files and the scrape sums them over workers.
- Pool counters: ``PoolStats`` counts in plain integers; after every Ollama request the worker
  that made it adds what changed since its last look to the Prometheus counters.
- Read at scrape time by ``ScrapeCollector``: pool sizes (configuration) and the semantic cache,
  whose numbers live in the database and are already shared by every worker. Written to
  per-worker files they would be counted once per worker.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator
from itertools import chain
from typing import TYPE_CHECKING, Any

from django.db import connection
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector

from resilience import breaker as breaker_module
from resilience import client as client_module
from resilience import config as runtime_config
from resilience.config import PoolConfig
from resilience.pool import PoolStats, process_stats

if TYPE_CHECKING:
    from rag.services import IngestReport

logger = logging.getLogger("resilience.metrics")

CLIENT = "ollama"  # the only pooled client today; the label leaves room for another upstream
KNOWN_BREAKERS = ("embed", "chat")  # the client's operations, shown even before their first call
STATE_VALUES = {breaker_module.CLOSED: 0, breaker_module.OPEN: 1, breaker_module.HALF_OPEN: 2}
POOL_SIZE_SETTINGS = ("pool_connections", "pool_maxsize")
_LABEL_VALUE = re.compile(r"[a-z0-9_]{1,24}")

# -- circuit breakers ---------------------------------------------------------------------------
# Each worker has its own breakers; a gauge shows the highest value among live workers.

BREAKER_STATE = Gauge(
    "ragsite_circuit_breaker_state",
    "Circuit breaker state: 0 closed, 1 open, 2 half-open (highest over live workers).",
    ["breaker"],
    multiprocess_mode="livemax",
)
BREAKER_CALLS = Counter(
    "ragsite_circuit_breaker_calls",
    "Calls offered to a circuit breaker, by result (success, failure, rejected, ignored).",
    ["breaker", "result"],
)
BREAKER_TRANSITIONS = Counter(
    "ragsite_circuit_breaker_transitions",
    "Circuit breaker state changes.",
    ["breaker", "from_state", "to_state"],
)
BREAKER_CONSECUTIVE_FAILURES = Gauge(
    "ragsite_circuit_breaker_consecutive_failures",
    "Failures in a row recorded by a circuit breaker (highest over live workers).",
    ["breaker"],
    multiprocess_mode="livemax",
)
BREAKER_LAST_CHANGE = Gauge(
    "ragsite_circuit_breaker_last_state_change_timestamp_seconds",
    "Unix time of a circuit breaker's last state change (latest over live workers).",
    ["breaker"],
    multiprocess_mode="livemax",
)

# -- the pooled HTTP client ---------------------------------------------------------------------

POOL_REQUESTS = Counter(
    "ragsite_connection_pool_requests",
    "HTTP requests sent through the pooled session (retries not included).",
    ["client"],
)
POOL_RETRIES = Counter(
    "ragsite_connection_pool_retries",
    "Retries made by the pooled session, by reason (connect, read, status_<code>, other).",
    ["client", "reason"],
)
POOL_BUDGET_EXHAUSTED = Counter(
    "ragsite_connection_pool_retry_budget_exhausted",
    "Retries refused because the shared retry budget was spent.",
    ["client"],
)
OLLAMA_REQUEST_DURATION = Histogram(
    "ragsite_ollama_request_duration_seconds",
    "Duration of HTTP requests to Ollama including retries, by endpoint and status "
    "(HTTP code, timeout or connection_error).",
    ["endpoint", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)

# -- queries and ingestion ----------------------------------------------------------------------

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


def _label(value: str) -> str:
    """Our own short vocabulary passes; anything else (a typo, free text) becomes 'other'."""
    return value if _LABEL_VALUE.fullmatch(value) else "other"


def record_query(*, cache: str, degraded: bool, seconds: float) -> None:
    """Count one answered question; ``cache`` is the answer's cache outcome (hit, miss, ...)."""
    labels = (_label(cache), "true" if degraded else "false")
    QUERIES.labels(*labels).inc()
    QUERY_DURATION.labels(*labels).observe(seconds)


def record_ingest(report: IngestReport) -> None:
    """Count the documents of one ingestion run by result, and the chunks it wrote."""
    files: dict[str, int] = defaultdict(int)
    for result in report.results:
        files[_label(result.status)] += 1
    for result, count in files.items():
        INGEST_FILES.labels(result).inc(count)
    if report.chunks:
        INGEST_CHUNKS.inc(report.chunks)


# -- observers ----------------------------------------------------------------------------------


def on_breaker_event(event: breaker_module.BreakerEvent) -> None:
    name = event.breaker
    if event.kind == breaker_module.TRANSITION:
        BREAKER_TRANSITIONS.labels(name, event.from_state, event.state).inc()
        BREAKER_LAST_CHANGE.labels(name).set(time.time())
    else:
        BREAKER_CALLS.labels(name, event.kind).inc()
    BREAKER_STATE.labels(name).set(STATE_VALUES.get(event.state, -1))
    # Outcome events come before the transition they cause, so the last one sets the new state.
    breaker = breaker_module.all_breakers().get(name)
    if breaker is not None:
        BREAKER_CONSECUTIVE_FAILURES.labels(name).set(breaker.consecutive_failures)


def on_ollama_request(endpoint: str, status: str, seconds: float) -> None:
    OLLAMA_REQUEST_DURATION.labels(endpoint, status).observe(seconds)
    # The request's retries were counted before it returned: publish them from this worker now.
    pool_counters.sync()


class PoolCounterSync:
    """Adds what a ``PoolStats`` counted since the last look to the Prometheus counters.

    PoolStats knows nothing of Prometheus; reading its deltas in the process that counted them
    keeps the exported counters exact under multiprocess mode, unlike a scrape-time read, which
    would see the scraping worker's numbers only.
    """

    def __init__(self, stats: PoolStats) -> None:
        self.stats = stats
        self._lock = threading.Lock()
        self._requests = 0
        self._budget_exhausted = 0
        self._retries: dict[str, int] = {}

    def sync(self) -> None:
        with self._lock:
            snapshot = self.stats.snapshot()
            if snapshot["total_requests"] > self._requests:
                POOL_REQUESTS.labels(CLIENT).inc(snapshot["total_requests"] - self._requests)
                self._requests = snapshot["total_requests"]
            if snapshot["budget_exhausted"] > self._budget_exhausted:
                POOL_BUDGET_EXHAUSTED.labels(CLIENT).inc(snapshot["budget_exhausted"] - self._budget_exhausted)
                self._budget_exhausted = snapshot["budget_exhausted"]
            for reason, count in snapshot["retries_by_reason"].items():
                seen = self._retries.get(reason, 0)
                if count > seen:
                    POOL_RETRIES.labels(CLIENT, _label(reason)).inc(count - seen)
                    self._retries[reason] = count


pool_counters = PoolCounterSync(process_stats)


# -- read at scrape time ------------------------------------------------------------------------


def cache_stats() -> dict[str, Any] | None:
    """The semantic cache's numbers, or None when there is no cache module or it cannot answer."""
    try:
        from resilience import cache
    except ImportError:
        return None
    try:
        # stats() answers zeros when the database is down; exported, those would read as counter
        # resets and the next scrape as a burst of hits. Ask the database first.
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return cache.stats()
    except Exception as exc:  # a scrape must still answer when the database does not
        logger.warning("semantic cache stats unavailable: %s", exc)
        return None


class ScrapeCollector:
    """Pool sizes and semantic cache numbers, read when Prometheus scrapes.

    The cache's counts are stored in the database, so every worker (and every replica) sees the
    same numbers: exporting them once per scrape is exact, and a sum over replicas is not (use
    ``max`` across instances).
    """

    def describe(self) -> Iterable[Metric]:
        # Names only: a registry asks at registration, in AppConfig.ready(), where no I/O belongs.
        return list(self._families(None, None))

    def collect(self) -> Iterable[Metric]:
        return list(self._families(runtime_config.current().pool, cache_stats()))

    def _families(self, pool: PoolConfig | None, cache: dict[str, Any] | None) -> Iterator[Metric]:
        size = GaugeMetricFamily(
            "ragsite_connection_pool_size", "Configured size of the HTTP connection pool.", labels=["client", "setting"]
        )
        if pool is not None:
            for setting in POOL_SIZE_SETTINGS:
                size.add_metric([CLIENT, setting], getattr(pool, setting))
        yield size
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


scrape_collector = ScrapeCollector()


# -- exposition ---------------------------------------------------------------------------------


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def refresh_breakers() -> None:
    """Bring this worker's breaker gauges up to date before a scrape.

    A breaker turns half-open lazily, when it is next looked at; looking here lets the state
    gauge move even when no call has come, and shows the client's breakers before their first call.
    """
    for name in KNOWN_BREAKERS:
        breaker_module.get_breaker(name)
    for name, breaker in breaker_module.all_breakers().items():
        BREAKER_STATE.labels(name).set(STATE_VALUES.get(breaker.state, -1))
        BREAKER_CONSECUTIVE_FAILURES.labels(name).set(breaker.consecutive_failures)


def scrape_registry() -> CollectorRegistry:
    """What ``/metrics`` serves: every worker's metrics merged, plus the scrape-time collector.

    django-prometheus's own view builds a registry with the multiprocess collector alone, which
    would leave the scrape-time metrics out.
    """
    pool_counters.sync()
    refresh_breakers()
    if not multiprocess_dir():
        return REGISTRY
    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    registry.register(scrape_collector)
    return registry


def pool_totals() -> dict[str, Any]:
    """The pool counters summed over every worker (this process's alone outside gunicorn)."""
    pool_counters.sync()
    if multiprocess_dir():
        families: Iterable[Metric] = MultiProcessCollector(None).collect()
    else:
        families = chain(POOL_REQUESTS.collect(), POOL_RETRIES.collect(), POOL_BUDGET_EXHAUSTED.collect())
    totals: dict[str, Any] = {"total_requests": 0, "retries_total": 0, "retries_by_reason": {}, "budget_exhausted": 0}
    by_reason: dict[str, int] = defaultdict(int)
    for family in families:
        for sample in family.samples:
            if sample.labels.get("client") != CLIENT:
                continue
            value = int(sample.value)
            if sample.name == "ragsite_connection_pool_requests_total":
                totals["total_requests"] += value
            elif sample.name == "ragsite_connection_pool_retry_budget_exhausted_total":
                totals["budget_exhausted"] += value
            elif sample.name == "ragsite_connection_pool_retries_total":
                totals["retries_total"] += value
                by_reason[sample.labels["reason"]] += value
    totals["retries_by_reason"] = dict(by_reason)
    return totals


# -- installation -------------------------------------------------------------------------------

_installed = False
_install_lock = threading.Lock()


def install() -> None:
    """Subscribe to the breakers and the client, once per process (``ResilienceConfig.ready``)."""
    global _installed
    with _install_lock:
        if _installed:
            return
        breaker_module.observers.append(on_breaker_event)
        client_module.request_observers.append(on_ollama_request)
        REGISTRY.register(scrape_collector)
        _installed = True
