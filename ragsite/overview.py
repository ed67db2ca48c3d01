"""The operations overview in the admin: breakers, cache, pool and the last hour of queries.

Charts are SVG drawn on the server: the page needs no JavaScript and nothing from a CDN.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.contrib import admin
from django.db import connection
from django.db.models import Count
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils import timezone

from rag import cache_counters, visibility
from rag.models import Job, JobStatus, QueryLog
from resilience import config, orders
from resilience.breaker import all_breakers
from resilience.metrics import pool_totals
from resilience.models import BreakerReport
from resilience.pool import process_stats

logger = logging.getLogger(__name__)

MINUTES = 60
CHART_WIDTH = 600
CHART_HEIGHT = 120
STATES = ("closed", "half_open", "open")


@dataclass
class Bar:
    # Formatted here: template number formatting is localised, SVG wants plain decimals.
    x: str
    y: str
    width: str
    height: str
    label: str


@dataclass
class Chart:
    """Geometry for a small chart over ``MINUTES`` one-minute slots (the template draws it)."""

    width: int = CHART_WIDTH
    height: int = CHART_HEIGHT
    top: float = 0.0  # the value of the top edge
    bars: list[Bar] = field(default_factory=list)
    lines: list[tuple[str, str]] = field(default_factory=list)  # (css class, "x,y x,y ...")
    dots: list[tuple[str, str, str, str]] = field(default_factory=list)  # (css class, x, y, label)


def _scale(values: list[float | None]) -> float:
    top = max((v for v in values if v is not None), default=0.0)
    return top * 1.1 if top > 0 else 1.0


def bar_chart(values: list[int], labels: list[str]) -> Chart:
    chart = Chart()
    chart.top = _scale(list(values))
    slot = chart.width / len(values)
    for i, (value, label) in enumerate(zip(values, labels, strict=True)):
        height = chart.height * value / chart.top
        x, y, width = i * slot + 1, chart.height - height, max(slot - 2, 1)
        chart.bars.append(Bar(f"{x:.1f}", f"{y:.1f}", f"{width:.1f}", f"{height:.1f}", label))
    return chart


def line_chart(series: dict[str, list[float | None]], labels: list[str]) -> Chart:
    """One polyline per series, broken where a slot has no value, and a dot (with a tooltip) per value."""
    chart = Chart()
    chart.top = _scale([v for values in series.values() for v in values])
    for css, values in series.items():
        slot = chart.width / len(values)
        segment: list[str] = []
        for i, value in enumerate([*values, None]):
            if value is None:
                if len(segment) > 1:
                    chart.lines.append((css, " ".join(segment)))
                segment = []
                continue
            x, y = f"{i * slot + slot / 2:.1f}", f"{chart.height - chart.height * value / chart.top:.1f}"
            segment.append(f"{x},{y}")
            chart.dots.append((css, x, y, f"{labels[i]}: {css} {value:.0f} ms"))
    return chart


def query_minutes(now: datetime) -> list[dict[str, Any]]:
    """Per minute of the last hour: queries, cache hits, degraded answers, p50 and p95 latency."""
    start = (now - timedelta(minutes=MINUTES - 1)).replace(second=0, microsecond=0)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT date_trunc('minute', created_at) AS minute, count(*), "
            "count(*) FILTER (WHERE cache IN ('exact', 'semantic')), count(*) FILTER (WHERE degraded), "
            "percentile_cont(0.5) WITHIN GROUP (ORDER BY latency_ms), "
            "percentile_cont(0.95) WITHIN GROUP (ORDER BY latency_ms) "
            f"FROM {QueryLog._meta.db_table} WHERE created_at >= %s GROUP BY 1",
            [start],
        )
        rows = {row[0]: row[1:] for row in cursor.fetchall()}
    minutes = []
    for i in range(MINUTES):
        minute = start + timedelta(minutes=i)
        count, hits, degraded, p50, p95 = rows.get(minute, (0, 0, 0, None, None))
        minutes.append({"minute": minute, "count": count, "hits": hits, "degraded": degraded, "p50": p50, "p95": p95})
    return minutes


def breaker_summary(now: datetime) -> list[dict[str, Any]]:
    """Per breaker: how many live processes report it in each state, and whether any is forced."""
    summary: dict[str, dict[str, Any]] = defaultdict(
        lambda: {"states": dict.fromkeys(STATES, 0), "forced": 0, "stale": 0, "failures": 0, "rejected": 0}
    )
    for report in BreakerReport.objects.all():
        item = summary[report.breaker]
        if report.is_stale(now):
            item["stale"] += 1
            continue
        item["states"][report.state] = item["states"].get(report.state, 0) + 1
        item["forced"] += report.forced
        item["failures"] += report.failure_count
        item["rejected"] += report.rejected_calls
    names = set(summary) | set(all_breakers())  # this process's show even before their first report
    return [{"name": name, **summary[name]} for name in sorted(names)]


def pool_use() -> dict[str, Any]:
    pool = config.current().pool
    try:
        totals = pool_totals()
    except Exception:  # the counters are a convenience; the page must render without them
        logger.warning("pool totals unavailable", exc_info=True)
        totals = process_stats.snapshot()
    return {"config": pool, **totals}


def cache_figures() -> dict[str, Any] | None:
    try:
        return cache_counters.stats()
    except Exception:
        logger.warning("semantic cache stats unavailable", exc_info=True)
        return None


def job_figures(now: datetime, caller: visibility.Caller) -> dict[str, Any]:
    """The queue's depth (waiting, running) and the jobs that failed in the last hour (listed: those
    of collections ``caller`` may read)."""
    counts = dict(
        Job.objects.filter(status__in=[JobStatus.QUEUED, JobStatus.RUNNING])
        .values_list("status")
        .annotate(n=Count("id"))
        .values_list("status", "n")
    )
    failed = Job.objects.filter(status=JobStatus.FAILED, finished_at__gte=now - timedelta(hours=1))
    return {
        "queued": counts.get(JobStatus.QUEUED, 0),
        "running": counts.get(JobStatus.RUNNING, 0),
        "failed_last_hour": failed.count(),
        "recent_failures": list((failed & visibility.jobs(caller)).order_by("-finished_at")[:5]),
    }


def overview(request: HttpRequest, site: admin.AdminSite) -> HttpResponse:
    orders.sync()  # report this process's breakers if due
    now = timezone.now()
    minutes = query_minutes(now)
    times = [f"{timezone.localtime(m['minute']):%H:%M}" for m in minutes]
    labels = [
        f"{t}: {m['count']} queries, {m['hits']} cache hits, {m['degraded']} degraded"
        for t, m in zip(times, minutes, strict=True)
    ]
    served = [m for m in minutes if m["count"]]
    total = sum(m["count"] for m in minutes)
    context = {
        **site.each_context(request),
        "title": "Overview",
        "now": now,
        "breakers": breaker_summary(now),
        "cache": cache_figures(),
        "pool": pool_use(),
        "jobs": job_figures(now, visibility.Caller.for_user(request.user)),
        "settings": config.current(),
        "volume": bar_chart([m["count"] for m in minutes], labels),
        "latency": line_chart({"p50": [m["p50"] for m in minutes], "p95": [m["p95"] for m in minutes]}, times),
        "queries_total": total,
        "queries_degraded": sum(m["degraded"] for m in minutes),
        "queries_hits": sum(m["hits"] for m in minutes),
        "latency_worst_p95": max((m["p95"] for m in served), default=None),
        "first_minute": minutes[0]["minute"],
    }
    return TemplateResponse(request, "admin/overview.html", context)
