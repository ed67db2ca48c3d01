"""The Prometheus metrics of the seam to Ollama: breakers, the pooled client, request durations.

Metrics of the domain (queries, ingestion, the answer cache) are in ``rag.metrics``; ``/metrics``
(``ragsite.metrics``) serves both. Two kinds of feed here, chosen so that ``/metrics`` is right when
gunicorn runs several workers:

- Events, counted where they happen: breaker outcomes and transitions (``resilience.breaker``
  observers) and Ollama request durations (``resilience.client`` request observers). Under
  gunicorn these values live in prometheus_client's multiprocess files and the scrape sums them.
- Pool counters: ``PoolStats`` counts in plain integers; after every Ollama request the worker
  that made it adds what changed since its last look to the Prometheus counters. Pool sizes are
  configuration, read at scrape time by ``PoolSizeCollector``.
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
from typing import Any

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector

from resilience import breaker as breaker_module
from resilience import client as client_module
from resilience import config as runtime_config
from resilience.config import PoolConfig
from resilience.pool import PoolStats, process_stats

logger = logging.getLogger("resilience.metrics")

CLIENT = "ollama"  # the only pooled client today; the label leaves room for another upstream
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


def label_value(value: str) -> str:
    """Our own short vocabulary passes; anything else (a typo, free text) becomes 'other'."""
    return value if _LABEL_VALUE.fullmatch(value) else "other"


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
                    POOL_RETRIES.labels(CLIENT, label_value(reason)).inc(count - seen)
                    self._retries[reason] = count


pool_counters = PoolCounterSync(process_stats)


# -- read at scrape time ------------------------------------------------------------------------


class PoolSizeCollector:
    """The pool sizes (configuration, the same in every worker), read when Prometheus scrapes."""

    def describe(self) -> Iterable[Metric]:
        # Names only: a registry asks at registration, in AppConfig.ready(), where no I/O belongs.
        return list(self._families(None))

    def collect(self) -> Iterable[Metric]:
        return list(self._families(runtime_config.current().pool))

    def _families(self, pool: PoolConfig | None) -> Iterator[Metric]:
        size = GaugeMetricFamily(
            "ragsite_connection_pool_size", "Configured size of the HTTP connection pool.", labels=["client", "setting"]
        )
        if pool is not None:
            for setting in POOL_SIZE_SETTINGS:
                size.add_metric([CLIENT, setting], getattr(pool, setting))
        yield size


pool_size_collector = PoolSizeCollector()


# -- exposition ---------------------------------------------------------------------------------


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def refresh_breakers() -> None:
    """Bring this worker's breaker gauges up to date before a scrape.

    A breaker turns half-open lazily, when it is next looked at; looking here lets the state
    gauge move even when no call has come, and shows the client's breakers before their first call.
    """
    for name in client_module.OPERATIONS:
        breaker_module.get_breaker(name)
    for name, breaker in breaker_module.all_breakers().items():
        BREAKER_STATE.labels(name).set(STATE_VALUES.get(breaker.state, -1))
        BREAKER_CONSECUTIVE_FAILURES.labels(name).set(breaker.consecutive_failures)


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
        REGISTRY.register(pool_size_collector)
        _installed = True
