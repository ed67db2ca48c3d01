"""What ``/metrics`` serves: the seam's metrics (resilience) and the domain's (rag), together."""

from __future__ import annotations

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector

from rag.metrics import cache_collector, eval_collector, job_collector
from resilience import metrics as resilience_metrics


def scrape_registry() -> CollectorRegistry:
    """Every worker's metrics merged, plus the collectors read at scrape time.

    django-prometheus's own view builds a registry with the multiprocess collector alone, which
    would leave the scrape-time metrics out.
    """
    resilience_metrics.pool_counters.sync()
    resilience_metrics.refresh_breakers()
    if not resilience_metrics.multiprocess_dir():
        return REGISTRY  # the scrape-time collectors are registered on it at start-up
    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    registry.register(resilience_metrics.pool_size_collector)
    registry.register(cache_collector)
    registry.register(job_collector)
    registry.register(eval_collector)
    return registry
