"""The Prometheus metrics of the domain: questions answered, ingestion, the answer cache.

Queries and ingests are events, counted where they happen (under gunicorn in prometheus_client's
multiprocess files, summed at scrape time). The answer cache's numbers live in the database and
are already shared by every worker, so ``CacheCollector`` reads them when Prometheus scrapes:
written to per-worker files they would be counted once per worker.
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from collections.abc import Iterable, Iterator
from typing import Any

from django.db import connection
from prometheus_client import Counter, Histogram
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from rag import cache_counters
from rag.models import CacheCounter
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


# Jobs run in worker processes, on any machine: their counts go to the shared counters in the
# database (one row per task and outcome, and per duration bucket) and are read at scrape time.
JOB_BUCKETS = (0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600)


def _bucket_name(bound: float) -> str:
    return f"{bound:g}"


def record_job(*, task: str, outcome: str, seconds: float) -> None:
    """Count one job run by task and outcome (succeeded, failed, retried, aborted) and its duration."""
    task = label_value(task)
    counts = {
        f"job:{task}:{label_value(outcome)}": 1,
        f"job_seconds:{task}:count": 1,
        f"job_seconds:{task}:sum_ms": round(seconds * 1000),
    }
    for bound in JOB_BUCKETS:
        if seconds <= bound:
            counts[f"job_seconds:{task}:le_{_bucket_name(bound)}"] = 1
    try:
        cache_counters.increment(counts)
    except Exception as exc:  # a lost count must not fail the job
        logger.warning("job metrics not recorded: %s", exc)


def job_stats() -> dict[str, Any]:
    """Counts, durations and the queue by task, read from the database (raises when it cannot be read)."""
    runs: dict[tuple[str, str], int] = {}
    seconds: dict[str, dict[str, float]] = defaultdict(dict)
    for name, value in CacheCounter.objects.filter(name__startswith="job").values_list("name", "value"):
        kind, task, what = [*name.split(":", 2), "", ""][:3]
        if kind == "job":
            runs[(task, what)] = value
        elif kind == "job_seconds":
            seconds[task][what] = value
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT task_name, status, count(*) FROM procrastinate_jobs WHERE status IN ('todo', 'doing') GROUP BY 1, 2"
        )
        queue = [(task.rsplit(".", 1)[-1], status, n) for task, status, n in cursor.fetchall()]
    return {"runs": runs, "seconds": dict(seconds), "queue": queue}


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


class JobCollector:
    """The jobs' counts and durations (from every worker, via the database) and the queue's depth."""

    def describe(self) -> Iterable[Metric]:
        return list(self._families(None))

    def collect(self) -> Iterable[Metric]:
        try:
            stats = job_stats()
        except Exception as exc:  # a scrape must still answer when the database does not
            logger.warning("job metrics unavailable: %s", exc)
            stats = None
        return list(self._families(stats))

    def _families(self, stats: dict[str, Any] | None) -> Iterator[Metric]:
        runs = CounterMetricFamily("ragsite_jobs", "Job runs by task and outcome.", labels=["task", "outcome"])
        queued = GaugeMetricFamily(
            "ragsite_jobs_queued", "Jobs waiting in the queue (retries included).", labels=["task"]
        )
        running = GaugeMetricFamily("ragsite_jobs_running", "Jobs a worker is running.", labels=["task"])
        duration = HistogramMetricFamily(
            "ragsite_job_duration_seconds", "Time a job run took, by task.", labels=["task"]
        )
        if stats is not None:
            for (task, outcome), value in sorted(stats["runs"].items()):
                runs.add_metric([task, outcome], value)
            for task, status, n in sorted(stats["queue"]):
                (queued if status == "todo" else running).add_metric([task], n)
            for task, values in sorted(stats["seconds"].items()):
                buckets = [(_bucket_name(b), values.get(f"le_{_bucket_name(b)}", 0)) for b in JOB_BUCKETS]
                buckets.append(("+Inf", values.get("count", 0)))
                duration.add_metric([task], buckets, values.get("sum_ms", 0) / 1000)
        yield from (runs, queued, running, duration)


job_collector = JobCollector()


# THE LAST EVALUATION
# Stored runs of manage.py evaluate, read at scrape time like the cache's figures: the latest run
# of each golden set (operators keep a handful, so the label stays bounded).


_SET_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def last_runs() -> list[Any]:
    from rag.models import EvalRun

    latest = []
    for name in EvalRun.objects.order_by().values_list("golden_set", flat=True).distinct()[:20]:
        run = EvalRun.objects.filter(golden_set=name).order_by("-created_at").first()
        if run is not None:
            latest.append(run)
    return latest


class EvalCollector:
    """The last evaluation run's figures per golden set, as gauges."""

    def describe(self) -> Iterable[Metric]:
        return list(self._families([]))

    def collect(self) -> Iterable[Metric]:
        try:
            runs = last_runs()
        except Exception as exc:  # a scrape must still answer when the database does not
            logger.warning("evaluation figures unavailable: %s", exc)
            runs = []
        return list(self._families(runs))

    def _families(self, runs: list[Any]) -> Iterator[Metric]:
        hits = GaugeMetricFamily(
            "ragsite_eval_hit_ratio",
            "Share of answerable golden questions with an expected source in the top k.",
            labels=["set", "k"],
        )
        mrr = GaugeMetricFamily(
            "ragsite_eval_mrr", "Mean reciprocal rank of the first expected source.", labels=["set"]
        )
        ndcg = GaugeMetricFamily("ragsite_eval_ndcg", "nDCG of the first expected source.", labels=["set", "k"])
        declining = GaugeMetricFamily(
            "ragsite_eval_decline_ratio",
            "Declining of unanswerable questions: precision and recall.",
            labels=["set", "measure"],
        )
        latency = GaugeMetricFamily(
            "ragsite_eval_latency_seconds", "Answer latency over the golden set.", labels=["set", "quantile"]
        )
        when = GaugeMetricFamily("ragsite_eval_timestamp_seconds", "When the last run finished.", labels=["set"])
        for run in runs:
            s = run.summary
            name = run.golden_set if _SET_NAME.fullmatch(run.golden_set) else "other"
            for k in (1, 5):
                if s.get(f"hit@{k}") is not None:
                    hits.add_metric([name, str(k)], s[f"hit@{k}"])
            if s.get("mrr") is not None:
                mrr.add_metric([name], s["mrr"])
            if s.get("ndcg@10") is not None:
                ndcg.add_metric([name, "10"], s["ndcg@10"])
            for measure in ("precision", "recall"):
                if s.get(f"decline_{measure}") is not None:
                    declining.add_metric([name, measure], s[f"decline_{measure}"])
            for quantile, key in (("0.5", "p50"), ("0.95", "p95")):
                if (s.get("latency_ms") or {}).get(key) is not None:
                    latency.add_metric([name, quantile], s["latency_ms"][key] / 1000)
            when.add_metric([name], run.created_at.timestamp())
        yield from (hits, mrr, ndcg, declining, latency, when)


eval_collector = EvalCollector()
